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
 * then nothing in it is taken on trust: a record is read only from a regular file of bounded size,
 * opened without following a symbolic link and without blocking, so a FIFO, a device, a symlink to
 * somewhere else or a huge file there counts as absent instead of hanging or misleading a reader.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { RpcError } from '../errors.js';
import { perUserTempDir, untrustedDir } from '../private-dir.js';
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
/** The largest record or host entry read: a record is a few hundred bytes, so a bigger file is not one. */
export const kMaxRecordBytes = 64 * 1024;

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, holding a libuv thread
// for good; O_NOFOLLOW: a symlink at a record's path fails (ELOOP) instead of being read.
const kReadFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK;
// O_EXCL never opens what is already there (a planted symlink included), so the temp file is ours.
const kWriteFlags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;

export function defaultDiscoveryDir(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  return runtime ? path.join(runtime, 'ogurpchik') : perUserTempDir();
}

export class FileDiscovery implements DiscoveryBackend {
  /** The directory holding the records. */
  readonly dir: string;
  /** What was skipped in the directory and warned about once: `<file>: <why>`. */
  readonly #warned = new Set<string>();

  constructor(options: { dir?: string } = {}) {
    this.dir = options.dir ?? defaultDiscoveryDir();
  }

  /** `<name>.json` for the exclusive record, `<name>@<instance>.json` for one instance's ('@' never occurs in a name). */
  #file(name: string, instance?: string): string {
    const base = checkServiceName(name) + (instance === undefined ? '' : `@${checkInstanceName(instance)}`);
    return path.join(this.dir, `${base}.json`);
  }

  /** Creates the directory (0700) when missing, and checks it may be trusted. */
  async #ensureDir(): Promise<void> {
    try {
      await fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EEXIST' || e.code === 'ENOTDIR') throw notADirectory(this.dir, err);
      throw new RpcError('UNAVAILABLE', `cannot create the discovery directory ${this.dir}: ${e.message}`, { cause: err });
    }
    await this.#trustedDir();
  }

  /** Whether the directory exists; throws when it is not one or is not to be trusted. */
  async #trustedDir(): Promise<boolean> {
    let st: fs.Stats;
    try {
      st = await fs.promises.stat(this.dir);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') return false;
      if (e.code === 'ENOTDIR') throw notADirectory(this.dir, err);
      throw new RpcError('UNAVAILABLE', `cannot read the discovery directory ${this.dir}: ${e.message}`, { cause: err });
    }
    if (!st.isDirectory()) throw notADirectory(this.dir);
    checkTrusted('discovery directory', this.dir, st);
    return true;
  }

  async publish(name: string, topology: Topology, options: InstanceOptions = {}): Promise<void> {
    const instance = options.instance;
    const file = this.#file(name, instance);
    await this.#ensureDir();
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
    if (!(await this.#trustedDir())) return;
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
   * and each failure to `fail`, until the returned stop is called.
   */
  #follow<T>(pollMs: number, look: () => Promise<T>, seen: (value: T) => void, fail: (err: RpcError) => void): () => void {
    let stopped = false;
    let running = false;
    let again = false;
    let watcher: fs.FSWatcher | undefined;
    let poll: ReturnType<typeof setInterval> | undefined;
    const run = () => {
      if (stopped) return;
      if (running) {
        again = true;
        return;
      }
      running = true;
      look()
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
    this.#ensureDir().then(
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
    return () => {
      stopped = true;
      watcher?.close();
      if (poll) clearInterval(poll);
    };
  }

  /** The names of the regular files in the directory that may hold records, sorted; anything else there is skipped (and warned about once). */
  async #files(): Promise<string[]> {
    if (!(await this.#trustedDir())) return [];
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
      else this.#skip(d.name, d.isSymbolicLink() ? 'is a symbolic link' : 'is not a regular file');
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

  /** Checks the `hosts` subdirectory as the directory itself, and that it is no symlink (O_NOFOLLOW guards only a path's last part). */
  async #trustedHostsDir(file: string): Promise<boolean> {
    const dir = path.dirname(file);
    let st: fs.Stats;
    try {
      st = await fs.promises.lstat(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new RpcError('UNAVAILABLE', `cannot read the host entries directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    if (!st.isDirectory()) throw notADirectory(dir);
    checkTrusted('host entries directory', dir, st);
    return true;
  }

  /** Records the vsock CID of VM `vm` (its host entry), for self-managed `vsock({ vm, port })` clients. */
  async registerHost(vm: string, cid: number): Promise<void> {
    checkCid(cid);
    const file = this.#hostFile(vm);
    await this.#ensureDir();
    await fs.promises.mkdir(path.dirname(file), { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw new RpcError('UNAVAILABLE', `cannot create ${path.dirname(file)}: ${err.message}`, { cause: err });
    });
    await this.#trustedHostsDir(file);
    await writeAtomically(file, JSON.stringify({ cid }));
  }

  /** The vsock CID recorded for VM `vm`, or undefined when there is none (or it is unreadable). */
  async lookupHost(vm: string): Promise<number | undefined> {
    const file = this.#hostFile(vm);
    if (!(await this.#trustedDir()) || !(await this.#trustedHostsDir(file))) return undefined;
    const text = await this.#readText(file);
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
    const text = await this.#readText(file);
    if (text === undefined) return undefined;
    try {
      return asStoredRecord(JSON.parse(text));
    } catch {
      return undefined;
    }
  }

  /**
   * The text of `file` if it is a regular file (not a symlink) of this user or root, with one
   * link, of at most kMaxRecordBytes; else undefined, with a warning once for what should not be there. Never blocks:
   * a FIFO opens at once (O_NONBLOCK) and is turned away by its fstat.
   */
  async #readText(file: string): Promise<string | undefined> {
    let fh: fs.promises.FileHandle;
    try {
      fh = await fs.promises.open(file, kReadFlags);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOOP' || code === 'EMLINK') this.#skip(file, 'is a symbolic link');
      else if (code !== 'ENOENT') this.#skip(file, `cannot be opened (${code})`);
      return undefined;
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) return this.#skip(file, 'is not a regular file');
      const uid = process.getuid?.();
      if (uid !== undefined && st.uid !== uid && st.uid !== 0) return this.#skip(file, `is owned by uid ${st.uid}, not by uid ${uid} or root`);
      // A record is renamed into place, so it has one name; another is a file living elsewhere too.
      if (st.nlink !== 1) return this.#skip(file, `has ${st.nlink} hard links`);
      if (st.size > kMaxRecordBytes) return this.#skip(file, `is larger than ${kMaxRecordBytes} bytes`);
      // One byte more than fstat said: a file that grew meanwhile is being written, not a record.
      const buf = Buffer.allocUnsafe(st.size + 1);
      let n = 0;
      while (n < buf.length) {
        const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      return n > st.size ? undefined : buf.toString('utf8', 0, n);
    } catch {
      return undefined;
    } finally {
      await fh.close().catch(() => {});
    }
  }

  /** Warns once per file and reason about something skipped in the directory; returns undefined (absent). */
  #skip(file: string, why: string): undefined {
    const name = path.isAbsolute(file) ? path.relative(this.dir, file) : file;
    const key = `${name}: ${why}`;
    if (this.#warned.has(key)) return undefined;
    // Bounded: a directory filling with junk must not grow this set without end.
    if (this.#warned.size >= 1024) return undefined;
    this.#warned.add(key);
    process.emitWarning(`ogurpchik: discovery skips ${path.join(this.dir, name)}: it ${why}`, { code: 'OGURPCHIK_DISCOVERY_SKIPPED' });
    return undefined;
  }
}

/** Refuses a directory another user could write into: it must belong to this user or root and not be group- or world-writable (as ssh's StrictModes asks). */
function checkTrusted(what: string, dir: string, st: fs.Stats): void {
  if (untrustedDir(st) === undefined) return;
  const uid = process.getuid!();
  const found = `owner uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}`;
  const required = `it must be owned by uid ${uid}${uid === 0 ? '' : ' or root'} and not writable by group or others (chmod go-w; the default directory is created 0700)`;
  throw new RpcError('INVALID_ARGUMENT', `${what} ${dir} is not safe (${found}): ${required}`);
}

function notADirectory(dir: string, cause?: unknown): RpcError {
  return new RpcError('INVALID_ARGUMENT', `discovery directory ${dir} is not a directory (something else is at that path)`, cause === undefined ? undefined : { cause });
}

function asRpcError(err: unknown, what: string): RpcError {
  return RpcError.is(err) ? err : new RpcError('UNAVAILABLE', `${what}: ${(err as Error)?.message ?? err}`, { cause: err });
}

/** Writes `file` as a whole: a fresh temp file (O_EXCL, 0600) beside it, then a rename, which replaces whatever non-directory was at `file` rather than writing through it. */
async function writeAtomically(file: string, text: string): Promise<void> {
  let tmp = '';
  let fh: fs.promises.FileHandle | undefined;
  for (let attempt = 0; fh === undefined; attempt++) {
    tmp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      fh = await fs.promises.open(tmp, kWriteFlags, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && attempt < 3) continue;
      throw new RpcError('UNAVAILABLE', `cannot write ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  try {
    try {
      await fh.writeFile(text);
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true }).catch(() => {});
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'EISDIR' || e.code === 'ENOTEMPTY' || e.code === 'EEXIST' ? 'a directory is in the way' : e.message;
    throw new RpcError('UNAVAILABLE', `cannot write ${file}: ${why}`, { cause: err });
  }
}

/** `svc.json` → { name: 'svc' }, `svc@a-1.json` → { name: 'svc', instance: 'a-1' }; undefined for anything else. */
function parseFileName(file: string): { name: string; instance?: string } | undefined {
  const m = /^([A-Za-z0-9._-]{1,128})(?:@([A-Za-z0-9._-]{1,128}))?\.json$/.exec(file);
  if (!m || m[1].startsWith('.')) return undefined;
  return m[2] === undefined ? { name: m[1] } : { name: m[1], instance: m[2] };
}
