/**
 * The default discovery backend: one JSON file per name (`<name>.json`), or per instance of a name
 * published by several (`<name>@<instance>.json`), in a private directory
 * ($XDG_RUNTIME_DIR/ogurpchik, else <tmp>/ogurpchik-<uid>, mode 0700). Writes are atomic
 * (write a temp file, then rename), readers watch the directory with a polling fallback, and
 * each record names its owner's pid and process start time, so a record left by a crashed owner
 * counts as absent and never blocks a new one. Host entries (a VM's vsock CID, for self-managed
 * vsock clients) live beside them in `hosts/<vm>.json`, `{"cid":3}`.
 *
 * The directory is trusted only when no one but this user (or root) can write into it, and even
 * then nothing in it is taken on trust (src/discovery/safe-files.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { RpcError } from '../errors.js';
import { perUserTempDir } from '../private-dir.js';
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
import { ensureTrustedDir, trustedDir, trustedHostsDir, UntrustedFiles, writeAtomically } from './safe-files.js';

/** How often waitFor looks again when the watcher says nothing (watchers miss events on some filesystems). */
const kPollMs = 100;
/** How often a long-lived watch looks again: mainly to notice an owner that died without removing its record. */
const kWatchPollMs = 250;

/** $XDG_RUNTIME_DIR/ogurpchik, else the per-user temp directory. */
function defaultDiscoveryDir(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  return runtime ? path.join(runtime, 'ogurpchik') : perUserTempDir();
}

export class FileDiscovery implements DiscoveryBackend {
  /** The directory holding the records. */
  readonly dir: string;
  readonly #untrusted: UntrustedFiles;

  constructor(options: { dir?: string } = {}) {
    this.dir = options.dir ?? defaultDiscoveryDir();
    this.#untrusted = new UntrustedFiles(this.dir);
  }

  /** `<name>.json` for the exclusive record, `<name>@<instance>.json` for one instance's ('@' never occurs in a name). */
  #file(name: string, instance?: string): string {
    const base = checkServiceName(name) + (instance === undefined ? '' : `@${checkInstanceName(instance)}`);
    return path.join(this.dir, `${base}.json`);
  }

  async publish(name: string, topology: Topology, options: InstanceOptions = {}): Promise<void> {
    const instance = options.instance;
    const file = this.#file(name, instance);
    await ensureTrustedDir(this.dir);
    // An exclusive name and instances of it exclude each other; instances coexist.
    for (const entry of await this.#entries(name)) {
      const ours = ownRecord(entry.record, options.owner);
      if (!entry.alive) {
        // A crashed owner's leftover: cleaned up by the next publisher of the name.
        if (entry.instance !== undefined) await fs.promises.rm(this.#file(name, entry.instance), { force: true }).catch(() => {});
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
    await writeAtomically(file, JSON.stringify(record));
  }

  async unpublish(name: string, options: InstanceOptions = {}): Promise<void> {
    const file = this.#file(name, options.instance);
    if (!(await trustedDir(this.dir))) return;
    const existing = await this.#read(file);
    if (existing !== undefined && ownRecord(existing, options.owner)) await fs.promises.rm(file, { force: true });
  }

  async lookup(name: string): Promise<StoredRecord | undefined> {
    return (await this.#live(name))[0]?.record;
  }

  async lookupAll(name: string): Promise<ServiceEntry[]> {
    return this.#live(name);
  }

  waitFor(name: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<StoredRecord> {
    checkServiceName(name);
    return waitForRecord(name, options, (found, fail) =>
      this.#follow(
        kPollMs,
        () => this.#live(name),
        (live) => {
          if (live[0]) found(live[0].record);
        },
        fail,
      ),
    );
  }

  watch(name: string, listener: RecordsListener, onError?: (err: RpcError) => void): () => void {
    checkServiceName(name);
    let failing = false;
    // Slower polling than waitFor's: a watch lives as long as a client, and only a dead owner needs it.
    return this.#follow(
      kWatchPollMs,
      () => this.#live(name),
      (live) => {
        failing = false;
        listener(live);
      },
      (err) => {
        // Told once per failure, not once per poll.
        if (!failing) onError?.(err);
        failing = true;
      },
    );
  }

  async list(): Promise<ServiceEntry[]> {
    const out: ServiceEntry[] = [];
    for (const f of await this.#files()) {
      const parsed = parseFileName(f);
      const record = parsed && (await this.#read(path.join(this.dir, f)));
      if (parsed && record) out.push({ ...parsed, record, alive: ownerAlive(record) });
    }
    return out;
  }

  /**
   * Runs `look` now, on every change in the directory, and every `pollMs` (a watcher misses a dead
   * owner, and events on some filesystems), one run at a time, and hands each result to `seen`
   * and each failure to `fail`, until the returned stop is called. Stop resolves once the I/O
   * already under way (creating the directory, a look) has ended; none starts after it.
   */
  #follow<T>(pollMs: number, look: () => Promise<T>, seen: (value: T) => void, fail: (err: RpcError) => void): () => Promise<void> {
    let stopped = false;
    let running = false;
    let again = false;
    let watcher: fs.FSWatcher | undefined;
    let poll: ReturnType<typeof setInterval> | undefined;
    let looking: Promise<unknown> = Promise.resolve();
    const run = () => {
      if (stopped) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      looking = look()
        .then(
          (value) => !stopped && seen(value),
          (err) => !stopped && fail(asRpcError(err, `reading the discovery directory ${this.dir} failed`)),
        )
        .finally(() => {
          running = false;
          if (again) {
            again = false;
            run();
          }
        });
    };
    // A mkdir cannot be cancelled: stop waits for it rather than let it land after the caller moved on.
    const starting = ensureTrustedDir(this.dir).then(
      () => {
        if (stopped) return;
        try {
          watcher = fs.watch(this.dir, run);
          watcher.on('error', () => {});
        } catch {
          // no watcher here: polling alone finds it
        }
        poll = setInterval(run, pollMs);
        run();
      },
      (err) => !stopped && fail(asRpcError(err, `cannot use the discovery directory ${this.dir}`)),
    );
    return async () => {
      stopped = true;
      watcher?.close();
      if (poll) clearInterval(poll);
      await Promise.allSettled([starting, looking]);
    };
  }

  /** The names of the regular files in the directory that may hold records, sorted; anything else there is skipped (and warned about once). */
  async #files(): Promise<string[]> {
    if (!(await trustedDir(this.dir))) return [];
    let dirents: fs.Dirent[];
    try {
      dirents = await fs.promises.readdir(this.dir, { withFileTypes: true });
    } catch {
      return [];
    }
    const out: string[] = [];
    for (const d of dirents) {
      if (!d.name.endsWith('.json')) continue;
      if (d.isFile()) out.push(d.name);
      else this.#untrusted.skip(d.name, d.isSymbolicLink() ? 'is a symbolic link' : 'is not a regular file');
    }
    return out.sort();
  }

  /** The records of `name`, exclusive first, then instances in id order; live or not. */
  async #entries(name: string): Promise<ServiceEntry[]> {
    const out: ServiceEntry[] = [];
    for (const f of await this.#files()) {
      const parsed = parseFileName(f);
      if (parsed?.name !== name) continue;
      const record = await this.#read(path.join(this.dir, f));
      if (record) out.push({ ...parsed, record, alive: ownerAlive(record) });
    }
    return out.sort((a, b) => (a.instance === undefined ? -1 : b.instance === undefined ? 1 : 0));
  }

  async #live(name: string): Promise<ServiceEntry[]> {
    checkServiceName(name);
    return (await this.#entries(name)).filter((e) => e.alive);
  }

  #hostFile(vm: string): string {
    return path.join(this.dir, 'hosts', `${encodeURIComponent(checkVmName(vm))}.json`);
  }

  /** Records the vsock CID of VM `vm` (its host entry), for self-managed `vsock({ vm, port })` clients. */
  async registerHost(vm: string, cid: number): Promise<void> {
    checkCid(cid);
    const file = this.#hostFile(vm);
    await ensureTrustedDir(this.dir);
    await fs.promises.mkdir(path.dirname(file), { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw new RpcError('UNAVAILABLE', `cannot create ${path.dirname(file)}: ${err.message}`, { cause: err });
    });
    await trustedHostsDir(path.dirname(file));
    await writeAtomically(file, JSON.stringify({ cid }));
  }

  /** The vsock CID recorded for VM `vm`, or undefined when there is none (or it is unreadable). */
  async lookupHost(vm: string): Promise<number | undefined> {
    const file = this.#hostFile(vm);
    if (!(await trustedDir(this.dir)) || !(await trustedHostsDir(path.dirname(file)))) return undefined;
    const text = await this.#untrusted.readText(file);
    try {
      return text === undefined ? undefined : parseCid((JSON.parse(text) as { cid?: unknown } | null)?.cid);
    } catch {
      return undefined;
    }
  }

  /** Removes VM `vm`'s host entry, if any. */
  async unregisterHost(vm: string): Promise<void> {
    const file = this.#hostFile(vm);
    await fs.promises.rm(file, { force: true }).catch((err: Error) => {
      throw new RpcError('UNAVAILABLE', `cannot remove ${file}: ${err.message}`, { cause: err });
    });
  }

  /** Reads and checks one record file; anything unreadable, malformed or not a file counts as absent. */
  async #read(file: string): Promise<StoredRecord | undefined> {
    const text = await this.#untrusted.readText(file);
    if (text === undefined) return undefined;
    try {
      return asStoredRecord(JSON.parse(text));
    } catch {
      return undefined;
    }
  }
}

function asRpcError(err: unknown, what: string): RpcError {
  return RpcError.is(err) ? err : new RpcError('UNAVAILABLE', `${what}: ${(err as Error)?.message ?? err}`, { cause: err });
}

/** `svc.json` → { name: 'svc' }, `svc@a-1.json` → { name: 'svc', instance: 'a-1' }; undefined for anything else. */
function parseFileName(file: string): { name: string; instance?: string } | undefined {
  const m = /^([A-Za-z0-9._-]{1,128})(?:@([A-Za-z0-9._-]{1,128}))?\.json$/.exec(file);
  if (!m || m[1].startsWith('.')) return undefined;
  return m[2] === undefined ? { name: m[1] } : { name: m[1], instance: m[2] };
}
