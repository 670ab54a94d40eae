/**
 * The default discovery backend: one JSON file per name (`<name>.json`), or per instance of a name
 * published by several (`<name>@<instance>.json`), in a private directory
 * ($XDG_RUNTIME_DIR/ogurpchik, else <tmp>/ogurpchik-<uid>, mode 0700). Writes are atomic
 * (write a temp file, then rename), readers watch the directory with a polling fallback, and
 * each record names its owner's pid and process start time, so a record left by a crashed owner
 * counts as absent and never blocks a new one. Host entries (a VM's vsock CID, for self-managed
 * vsock clients) live beside them in `hosts/<vm>.json`, `{"cid":3}`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RpcError } from '../errors.js';
import { checkVmName } from '../transport/descriptors.js';
import {
  asStoredRecord,
  checkCid,
  checkInstanceName,
  checkServiceName,
  heldBy,
  ownerAlive,
  ownerOf,
  ownRecord,
  parseCid,
  waitForRecord,
  type DiscoveryBackend,
  type InstanceOptions,
  type RecordsListener,
  type ServiceEntry,
  type StoredRecord,
  type Topology,
} from './types.js';

/** How often waitFor looks again when the watcher says nothing (watchers miss events on some filesystems). */
const kPollMs = 100;
/** How often a long-lived watch looks again: mainly to notice an owner that died without removing its record. */
const kWatchPollMs = 250;

export function defaultDiscoveryDir(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime) return path.join(runtime, 'ogurpchik');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return path.join(os.tmpdir(), `ogurpchik-${uid}`);
}

export class FileDiscovery implements DiscoveryBackend {
  /** The directory holding the records. */
  readonly dir: string;

  constructor(options: { dir?: string } = {}) {
    this.dir = options.dir ?? defaultDiscoveryDir();
  }

  /** `<name>.json` for the exclusive record, `<name>@<instance>.json` for one instance's ('@' never occurs in a name). */
  #file(name: string, instance?: string): string {
    const base = checkServiceName(name) + (instance === undefined ? '' : `@${checkInstanceName(instance)}`);
    return path.join(this.dir, `${base}.json`);
  }

  #ensureDir(): void {
    let st: fs.Stats;
    try {
      fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      st = fs.statSync(this.dir);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EEXIST' || e.code === 'ENOTDIR') throw new RpcError('INVALID_ARGUMENT', `discovery directory ${this.dir} is not a directory (something else is at that path)`, { cause: err });
      throw new RpcError('UNAVAILABLE', `cannot create the discovery directory ${this.dir}: ${e.message}`, { cause: err });
    }
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
      throw new RpcError('INVALID_ARGUMENT', `discovery directory ${this.dir} belongs to another user`);
    }
    if ((st.mode & 0o077) !== 0) fs.chmodSync(this.dir, 0o700);
  }

  async publish(name: string, topology: Topology, options: InstanceOptions = {}): Promise<void> {
    const instance = options.instance;
    const file = this.#file(name, instance);
    this.#ensureDir();
    // An exclusive name and instances of it exclude each other; instances coexist.
    for (const entry of this.#entries(name)) {
      const ours = ownRecord(entry.record, options.owner);
      if (!entry.alive) {
        // A crashed owner's leftover: cleaned up by the next publisher of the name.
        if (entry.instance !== undefined) fs.rmSync(this.#file(name, entry.instance), { force: true });
        continue;
      }
      if (ours || (instance !== undefined && entry.instance !== undefined && entry.instance !== instance)) continue;
      const what = entry.instance === undefined ? 'exclusively' : `as instance ${entry.instance}`;
      throw new RpcError('BUSY', `service ${name} is already published ${what} by ${heldBy(entry.record.owner)}`);
    }
    const record: StoredRecord = {
      transport_kind: topology.transport_kind,
      codec_kind: topology.codec_kind,
      map: topology.map,
      owner: ownerOf(options.owner),
    };
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(record), { mode: 0o600 });
    fs.renameSync(tmp, file);
  }

  async unpublish(name: string, options: InstanceOptions = {}): Promise<void> {
    const file = this.#file(name, options.instance);
    const existing = this.#read(file);
    if (existing !== undefined && ownRecord(existing, options.owner)) fs.rmSync(file, { force: true });
  }

  async lookup(name: string): Promise<StoredRecord | undefined> {
    return this.#live(name)[0]?.record;
  }

  async lookupAll(name: string): Promise<ServiceEntry[]> {
    return this.#live(name);
  }

  waitFor(name: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<StoredRecord> {
    checkServiceName(name);
    return waitForRecord(name, options, (found) =>
      this.#follow(kPollMs, () => {
        const first = this.#live(name)[0];
        if (first) found(first.record);
      }),
    );
  }

  watch(name: string, listener: RecordsListener): () => void {
    checkServiceName(name);
    // Slower polling than waitFor's: a watch lives as long as a client, and only a dead owner needs it.
    return this.#follow(kWatchPollMs, () => listener(this.#live(name)));
  }

  async list(): Promise<ServiceEntry[]> {
    const out: ServiceEntry[] = [];
    for (const f of this.#files()) {
      const parsed = parseFileName(f);
      const record = parsed && this.#read(path.join(this.dir, f));
      if (parsed && record) out.push({ ...parsed, record, alive: ownerAlive(record) });
    }
    return out;
  }

  /** Runs `check` now, on every change in the directory, and every `pollMs` (a watcher misses a dead owner, and events on some filesystems). */
  #follow(pollMs: number, check: () => void): () => void {
    let watcher: fs.FSWatcher | undefined;
    try {
      this.#ensureDir();
      watcher = fs.watch(this.dir, () => check());
      watcher.on('error', () => {});
    } catch {
      // no watcher here: polling alone finds it
    }
    const poll = setInterval(check, pollMs);
    check();
    return () => {
      watcher?.close();
      clearInterval(poll);
    };
  }

  #files(): string[] {
    try {
      return fs.readdirSync(this.dir).filter((f) => f.endsWith('.json')).sort();
    } catch {
      return [];
    }
  }

  /** The records of `name`, exclusive first, then instances in id order; live or not. */
  #entries(name: string): ServiceEntry[] {
    const out: ServiceEntry[] = [];
    for (const f of this.#files()) {
      const parsed = parseFileName(f);
      if (parsed?.name !== name) continue;
      const record = this.#read(path.join(this.dir, f));
      if (record) out.push({ ...parsed, record, alive: ownerAlive(record) });
    }
    return out.sort((a, b) => (a.instance === undefined ? -1 : b.instance === undefined ? 1 : 0));
  }

  #live(name: string): ServiceEntry[] {
    checkServiceName(name);
    return this.#entries(name).filter((e) => e.alive);
  }

  #hostFile(vm: string): string {
    return path.join(this.dir, 'hosts', `${encodeURIComponent(checkVmName(vm))}.json`);
  }

  /** Records the vsock CID of VM `vm` (its host entry), for self-managed `vsock({ vm, port })` clients. */
  async registerHost(vm: string, cid: number): Promise<void> {
    checkCid(cid);
    const file = this.#hostFile(vm);
    this.#ensureDir();
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ cid }), { mode: 0o600 });
    fs.renameSync(tmp, file);
  }

  /** The vsock CID recorded for VM `vm`, or undefined when there is none (or it is unreadable). */
  async lookupHost(vm: string): Promise<number | undefined> {
    try {
      return parseCid((JSON.parse(fs.readFileSync(this.#hostFile(vm), 'utf8')) as { cid?: unknown }).cid);
    } catch (err) {
      if (RpcError.is(err)) throw err;
      return undefined;
    }
  }

  /** Removes VM `vm`'s host entry, if any. */
  async unregisterHost(vm: string): Promise<void> {
    fs.rmSync(this.#hostFile(vm), { force: true });
  }

  /** Reads and checks one record file; anything unreadable or malformed counts as absent. */
  #read(file: string): StoredRecord | undefined {
    try {
      return asStoredRecord(JSON.parse(fs.readFileSync(file, 'utf8')));
    } catch {
      return undefined;
    }
  }
}

/** `svc.json` → { name: 'svc' }, `svc@a-1.json` → { name: 'svc', instance: 'a-1' }; undefined for anything else. */
function parseFileName(file: string): { name: string; instance?: string } | undefined {
  const m = /^([A-Za-z0-9._-]{1,128})(?:@([A-Za-z0-9._-]{1,128}))?\.json$/.exec(file);
  if (!m || m[1].startsWith('.')) return undefined;
  return m[2] === undefined ? { name: m[1] } : { name: m[1], instance: m[2] };
}
