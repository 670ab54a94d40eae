/**
 * Discovery through the Windows registry, driven by `reg.exe` (so the same code works on Windows
 * and from WSL, where the Windows `reg.exe` is on PATH through interop).
 *
 * Layout (all under HKCU, so no elevation is needed):
 *
 *   HKCU\Software\Ogurpchik\Services\<name>   value "Topology" (REG_SZ): the StoredRecord JSON,
 *       {"transport_kind":"tcp","codec_kind":"msgpack","map":{"0":"127.0.0.1:1337"},"owner":{...}}
 *       of an exclusive name; or one value "Topology@<instance>" per instance of a shared name
 *       ('@' never occurs in an instance id), so one `reg query <key>` reads every record of a name
 *   HKCU\Software\Ogurpchik\Hosts\<vm>        value "Cid" (REG_DWORD): the VM's vsock CID
 *
 * Named values rather than the key's default value: reg.exe prints the default value's name
 * localised ("(Default)", "(Standard)", "(По умолчанию)", ...), so a fixed name keeps the parse of
 * `reg query ... /s` independent of the Windows display language.
 *
 * Quoting. The runner receives the argv that reg.exe must end up seeing; nothing is pre-escaped
 * there. reg.exe splits its command line with the usual MSVCRT rules (`\"` is a literal quote,
 * backslashes are literal unless they precede a quote). On Windows, Node/libuv already builds
 * such a command line from an argv (it wraps in quotes and escapes embedded `"` as `\"`, doubling
 * backslashes before them), so the default runner passes argv unchanged. WSL interop does not
 * escape embedded quotes (it only wraps arguments containing spaces in quotes; microsoft/WSL#2411),
 * so off Windows the default runner applies `escapeForWslInterop` to each argument first. Records
 * are written as ASCII-only JSON (non-ASCII as \uXXXX), so reading them back does not depend on
 * the console code page reg.exe prints in.
 *
 * Liveness. A record names its owner's pid and host. Only a record whose host is this very host
 * (same machine *and* same pid namespace) is ever judged dead; anything else counts as alive. On
 * WSL the Linux hostname usually equals the Windows computer name, so the host written here is
 * qualified: `<hostname>` on Windows, `<hostname>/wsl:<distro>` on WSL, `<hostname>/linux`
 * otherwise (which is why types.ts's ownerAlive, keyed on the bare hostname, is not reused).
 */
import { execFile } from 'node:child_process';
import os from 'node:os';
import { RpcError } from '../errors.js';
import { processStartTime } from '../proc.js';
import { checkVmName } from '../transport/descriptors.js';
import {
  asStoredRecord,
  checkCid,
  checkInstanceName,
  checkServiceName,
  heldBy,
  ownerOf,
  ownRecord,
  parseCid,
  waitForRecord,
  type DiscoveryBackend,
  type InstanceOptions,
  type ServiceEntry,
  type StoredRecord,
  type Topology,
} from './types.js';

export interface RegRunResult {
  stdout: string;
  stderr: string;
  /** reg.exe's exit code: 0 on success, 1 on failure (including "key or value not found"). */
  code: number;
}

/** Runs reg.exe with the given argv (as reg.exe should see it) and reports what it printed. */
export type RegRunner = (args: string[]) => Promise<RegRunResult>;

export interface RegistryDiscoveryOptions {
  /** Replaces reg.exe (tests; other transports). Default: execFile of `exe`, windowsHide. */
  run?: RegRunner;
  /** The executable the default runner starts. Default 'reg.exe'. */
  exe?: string;
  /** How often waitFor queries again. Default 200 ms. */
  pollMs?: number;
  /** The key under which Services and Hosts live. Default 'HKCU\Software\Ogurpchik'. */
  root?: string;
  /** Whether the default runner escapes embedded quotes itself (WSL interop does not). Default: true off Windows. */
  escapeQuotes?: boolean;
}

/** The value holding a service's record; an instance's is `Topology@<instance>`. */
export const kTopologyValue = 'Topology';
/** A record's value name: `Topology` (exclusive) or `Topology@<instance>`; value names are case-insensitive. */
const kRecordValue = /^topology(?:@([A-Za-z0-9._-]{1,128}))?$/i;

/** The value holding the exclusive record (no instance) or one instance's. */
export function recordValueName(instance?: string): string {
  return instance === undefined ? kTopologyValue : `${kTopologyValue}@${checkInstanceName(instance)}`;
}
/** The value holding a VM's vsock CID. */
export const kCidValue = 'Cid';

const kRootAbbreviations: Record<string, string> = {
  HKCU: 'HKEY_CURRENT_USER',
  HKLM: 'HKEY_LOCAL_MACHINE',
  HKCR: 'HKEY_CLASSES_ROOT',
  HKU: 'HKEY_USERS',
  HKCC: 'HKEY_CURRENT_CONFIG',
};

/** One value line of `reg query` output. */
export interface RegValue {
  name: string;
  type: string;
  data: string;
}

/** One key block of `reg query` output: its full path as printed, and its values in order. */
export interface RegKey {
  path: string;
  values: RegValue[];
}

/**
 * Parses `reg query` output: key headers (`HKEY_...`) each followed by value lines
 * (`    <name>    <REG_TYPE>    <data>`), blank lines in between, CRLF or LF endings. The data is
 * everything after the type's separator, kept verbatim (it may contain spaces and quotes).
 */
export function parseRegQuery(stdout: string): RegKey[] {
  const keys: RegKey[] = [];
  let current: RegKey | undefined;
  for (const raw of stdout.split(/\r?\n/)) {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') continue;
    if (/^HKEY_/i.test(line)) {
      current = { path: line.trimEnd(), values: [] };
      keys.push(current);
      continue;
    }
    const m = /^ {4}(.*?) {4}(REG_[A-Z0-9_]+)(?: {4}(.*))?$/.exec(line);
    if (m && current) current.values.push({ name: m[1]!, type: m[2]!, data: m[3] ?? '' });
    // anything else ("End of search: ..." and the like) is not data
  }
  return keys;
}

/** Escapes one argument for a command line built by WSL interop, which wraps arguments containing spaces in quotes but leaves embedded quotes alone. */
export function escapeForWslInterop(arg: string): string {
  let out = arg.replace(/(\\*)"/g, (_m, bs: string) => `${bs}${bs}\\"`);
  if (/[ \t]/.test(out)) out = out.replace(/(\\+)$/, (bs) => bs + bs); // WSL will add the closing quote
  return out;
}

/** JSON with every non-ASCII character escaped, so it survives reg.exe's code-page output unchanged. */
function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** This host as registry records name it: qualified on Linux, since WSL shares the Windows computer name. */
export function registryHostId(): string {
  const host = os.hostname();
  if (process.platform === 'win32') return host;
  const distro = process.env.WSL_DISTRO_NAME;
  return distro ? `${host}/wsl:${distro}` : `${host}/linux`;
}

/** Whether a registry record's owner may still run: false only when it is ours to judge and gone. */
export function registryOwnerAlive(record: StoredRecord): boolean {
  const owner = record.owner;
  if (owner === undefined || owner.host !== registryHostId()) return true;
  if (process.platform === 'win32') {
    try {
      process.kill(owner.pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code !== 'ESRCH';
    }
  }
  const started = processStartTime(owner.pid);
  if (started === undefined) return false;
  return owner.start_time === undefined || owner.start_time === started;
}

/** The default runner: reg.exe through execFile, no shell, no window. */
export function execFileRunner(exe = 'reg.exe', escapeQuotes = process.platform !== 'win32'): RegRunner {
  return (args) =>
    new Promise((resolve, reject) => {
      const argv = escapeQuotes ? args.map(escapeForWslInterop) : args;
      execFile(exe, argv, { windowsHide: true, encoding: 'utf8', maxBuffer: 16 << 20, timeout: 30_000 }, (err, stdout, stderr) => {
        const code = (err as { code?: unknown } | null)?.code;
        if (err && typeof code !== 'number') {
          reject(new RpcError('UNAVAILABLE', `cannot run ${exe}: ${err.message}`, { cause: err }));
          return;
        }
        resolve({ stdout, stderr, code: err ? (code as number) : 0 });
      });
    });
}

export class RegistryDiscovery implements DiscoveryBackend {
  /** `<root>\Services`, as passed to reg.exe. */
  readonly servicesKey: string;
  /** `<root>\Hosts`, as passed to reg.exe. */
  readonly hostsKey: string;
  readonly #run: RegRunner;
  readonly #pollMs: number;

  constructor(options: RegistryDiscoveryOptions = {}) {
    const root = (options.root ?? 'HKCU\\Software\\Ogurpchik').replace(/\\+$/, '');
    this.servicesKey = `${root}\\Services`;
    this.hostsKey = `${root}\\Hosts`;
    this.#run = options.run ?? execFileRunner(options.exe ?? 'reg.exe', options.escapeQuotes);
    this.#pollMs = options.pollMs ?? 200;
  }

  #key(name: string): string {
    return `${this.servicesKey}\\${checkServiceName(name)}`;
  }

  async #mustRun(args: string[]): Promise<RegRunResult> {
    const result = await this.#run(args);
    if (result.code !== 0) {
      const why = (result.stderr || result.stdout).trim() || `exit code ${result.code}`;
      throw new RpcError('UNAVAILABLE', `reg.exe ${args[0]} ${args[1]} failed: ${why}`);
    }
    return result;
  }

  /** Reads one value of one key; undefined when the key or value is missing (reg.exe exits 1). */
  async #queryValue(key: string, value: string): Promise<RegValue | undefined> {
    const result = await this.#run(['query', key, '/v', value]);
    if (result.code !== 0) return undefined;
    for (const k of parseRegQuery(result.stdout)) {
      const v = k.values.find((x) => x.name.toLowerCase() === value.toLowerCase());
      if (v) return v;
    }
    return undefined;
  }

  /** Every well-formed record under `name`, live or not: the exclusive one first, then instances in id order. */
  async #entries(name: string): Promise<ServiceEntry[]> {
    const key = this.#key(name);
    const result = await this.#run(['query', key]);
    if (result.code !== 0) return []; // no such key
    const path = expandRoot(key).toLowerCase();
    const block = parseRegQuery(result.stdout).find((k) => k.path.toLowerCase() === path);
    return block === undefined ? [] : entriesOf(name, block.values);
  }

  /**
   * Writes the record of `name`, or with `options.instance` that instance's record beside the
   * others. An exclusive name and instances of it exclude each other; instances coexist. A record
   * whose owner is gone does not count, and a gone instance's record is removed on the way.
   */
  async publish(name: string, topology: Topology, options: InstanceOptions = {}): Promise<void> {
    const key = this.#key(name);
    const instance = options.instance;
    const value = recordValueName(instance);
    const host = registryHostId();
    for (const entry of await this.#entries(name)) {
      if (!entry.alive) {
        // A crashed owner's leftover: cleaned up by the next publisher of the name (the exclusive one is written over).
        if (entry.instance !== undefined) await this.#run(['delete', key, '/v', recordValueName(entry.instance), '/f']);
        continue;
      }
      if (ownRecord(entry.record, options.owner, host) || (instance !== undefined && entry.instance !== undefined && entry.instance !== instance)) continue;
      const what = entry.instance === undefined ? 'exclusively' : `as instance ${entry.instance}`;
      throw new RpcError('BUSY', `service ${name} is already published ${what} by ${heldBy(entry.record.owner, host)}`);
    }
    const record: StoredRecord = { transport_kind: topology.transport_kind, codec_kind: topology.codec_kind, map: topology.map, owner: ownerOf(options.owner, host) };
    await this.#mustRun(['add', key, '/v', value, '/t', 'REG_SZ', '/d', asciiJson(record), '/f']);
  }

  /**
   * Removes the record (or `options.instance`'s) if this process, and this node when the record
   * names one, wrote it. Only that value goes: the name's key stays, since another publisher may
   * be writing into it at the same moment.
   */
  async unpublish(name: string, options: InstanceOptions = {}): Promise<void> {
    const key = this.#key(name);
    const value = recordValueName(options.instance);
    const existing = parseRecord(await this.#queryValue(key, value));
    const host = registryHostId();
    // Only the caller's own record: not one another node or process wrote over the name since.
    if (existing === undefined || existing.owner?.host !== host || !ownRecord(existing, options.owner, host)) return;
    const result = await this.#run(['delete', key, '/v', value, '/f']);
    if (result.code !== 0 && parseRecord(await this.#queryValue(key, value)) !== undefined) {
      throw new RpcError('UNAVAILABLE', `reg.exe delete ${key} /v ${value} failed: ${(result.stderr || result.stdout).trim()}`);
    }
  }

  /** The live exclusive record of `name`, else a live instance's; undefined when there is none. */
  async lookup(name: string): Promise<StoredRecord | undefined> {
    return (await this.lookupAll(name))[0]?.record;
  }

  /** Every live record under `name`: the exclusive one and every live instance's. */
  async lookupAll(name: string): Promise<ServiceEntry[]> {
    return (await this.#entries(name)).filter((e) => e.alive);
  }

  waitFor(name: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<StoredRecord> {
    checkServiceName(name);
    return waitForRecord(name, options, (found, fail) => {
      let stopped = false;
      let poll: ReturnType<typeof setTimeout> | undefined;
      const check = () => {
        poll = undefined;
        this.lookup(name).then(
          (record) => {
            if (stopped) return;
            if (record) found(record);
            else poll = setTimeout(check, this.#pollMs);
          },
          fail,
        );
      };
      check();
      return () => {
        stopped = true;
        if (poll) clearTimeout(poll);
      };
    });
  }

  async list(): Promise<ServiceEntry[]> {
    const result = await this.#run(['query', this.servicesKey, '/s']);
    if (result.code !== 0) return []; // no Services key yet
    const prefix = `${expandRoot(this.servicesKey)}\\`.toLowerCase();
    const out: ServiceEntry[] = [];
    for (const key of parseRegQuery(result.stdout)) {
      if (!key.path.toLowerCase().startsWith(prefix)) continue;
      const name = key.path.slice(prefix.length);
      if (name.includes('\\')) continue; // deeper subkeys are not ours
      out.push(...entriesOf(name, key.values));
    }
    // By name; within a name, as entriesOf ordered them (a stable sort).
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Records the vsock CID of VM `vm` (REG_DWORD), for the self-managed vsock client. */
  async registerHost(vm: string, cid: number): Promise<void> {
    // The same check as the other backends: VMADDR_CID_ANY (0xFFFFFFFF) is nobody's address.
    checkCid(cid);
    await this.#mustRun(['add', `${this.hostsKey}\\${checkVmName(vm)}`, '/v', kCidValue, '/t', 'REG_DWORD', '/d', String(cid), '/f']);
  }

  /** The vsock CID recorded for VM `vm`, or undefined when there is none. */
  async lookupHost(vm: string): Promise<number | undefined> {
    const value = await this.#queryValue(`${this.hostsKey}\\${checkVmName(vm)}`, kCidValue);
    if (value === undefined || (value.type !== 'REG_DWORD' && value.type !== 'REG_QWORD')) return undefined;
    const text = value.data.trim();
    return parseCid(/^0x[0-9a-f]{1,8}$/i.test(text) ? parseInt(text.slice(2), 16) : text);
  }

  /** Removes VM `vm`'s CID record, if any. */
  async unregisterHost(vm: string): Promise<void> {
    await this.#run(['delete', `${this.hostsKey}\\${checkVmName(vm)}`, '/f']);
  }
}

/** `HKCU\x` → `HKEY_CURRENT_USER\x`, as reg.exe prints key paths. */
function expandRoot(key: string): string {
  const i = key.indexOf('\\');
  const head = i < 0 ? key : key.slice(0, i);
  const full = kRootAbbreviations[head.toUpperCase()];
  return full ? full + (i < 0 ? '' : key.slice(i)) : key;
}

/** The well-formed records among one key's values, live or not: the exclusive one first, then instances in id order. */
function entriesOf(name: string, values: RegValue[]): ServiceEntry[] {
  const out: ServiceEntry[] = [];
  for (const v of values) {
    const m = kRecordValue.exec(v.name);
    if (m === null) continue; // not a record ("(Default)", anything else)
    const record = parseRecord(v);
    if (record === undefined) continue;
    const alive = registryOwnerAlive(record);
    out.push(m[1] === undefined ? { name, record, alive } : { name, instance: m[1], record, alive });
  }
  return out.sort((a, b) => (a.instance === undefined ? -1 : b.instance === undefined ? 1 : a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0));
}

function parseRecord(value: RegValue | undefined): StoredRecord | undefined {
  if (value === undefined || (value.type !== 'REG_SZ' && value.type !== 'REG_EXPAND_SZ')) return undefined;
  try {
    return asStoredRecord(JSON.parse(value.data));
  } catch {
    return undefined;
  }
}
