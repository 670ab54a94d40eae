/**
 * The default discovery backend: one JSON file per name in a private directory
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
import { processStartTime } from '../shm/native.js';
import { checkVmName } from '../transport/descriptors.js';
import { asStoredRecord, checkCid, checkServiceName, parseCid, waitForRecord, type DiscoveryBackend, type ServiceEntry, type StoredRecord, type Topology } from './types.js';

/** How often waitFor looks again when the watcher says nothing (watchers miss events on some filesystems). */
const kPollMs = 100;

export function defaultDiscoveryDir(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  if (runtime) return path.join(runtime, 'ogurpchik');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return path.join(os.tmpdir(), `ogurpchik-${uid}`);
}

/** Whether the process that wrote `record` still runs (same pid and start time). */
export function ownerAlive(record: StoredRecord): boolean {
  const owner = record.owner;
  if (owner === undefined) return true; // a foreign writer that says nothing: trust it
  if (owner.host !== undefined && owner.host !== os.hostname()) return true; // not ours to judge
  const started = processStartTime(owner.pid);
  if (started === undefined) return false;
  return owner.start_time === undefined || owner.start_time === started;
}

export class FileDiscovery implements DiscoveryBackend {
  /** The directory holding the records. */
  readonly dir: string;

  constructor(options: { dir?: string } = {}) {
    this.dir = options.dir ?? defaultDiscoveryDir();
  }

  #file(name: string): string {
    return path.join(this.dir, `${checkServiceName(name)}.json`);
  }

  #ensureDir(): void {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const st = fs.statSync(this.dir);
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
      throw new RpcError('INVALID_ARGUMENT', `discovery directory ${this.dir} belongs to another user`);
    }
    if ((st.mode & 0o077) !== 0) fs.chmodSync(this.dir, 0o700);
  }

  async publish(name: string, topology: Topology): Promise<void> {
    const file = this.#file(name);
    this.#ensureDir();
    const existing = this.#read(file);
    if (existing && existing.owner?.pid !== process.pid && ownerAlive(existing)) {
      throw new RpcError('BUSY', `service ${name} is already published by pid ${existing.owner?.pid ?? '?'}`);
    }
    const record: StoredRecord = {
      transport_kind: topology.transport_kind,
      codec_kind: topology.codec_kind,
      map: topology.map,
      owner: { pid: process.pid, start_time: processStartTime(process.pid), host: os.hostname() },
    };
    const tmp = `${file}.${process.pid}.${Date.now()}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(record), { mode: 0o600 });
    fs.renameSync(tmp, file);
  }

  async unpublish(name: string): Promise<void> {
    const file = this.#file(name);
    const existing = this.#read(file);
    if (existing?.owner?.pid === process.pid) fs.rmSync(file, { force: true });
  }

  async lookup(name: string): Promise<StoredRecord | undefined> {
    const record = this.#read(this.#file(name));
    return record && ownerAlive(record) ? record : undefined;
  }

  waitFor(name: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<StoredRecord> {
    const file = this.#file(name);
    return waitForRecord(name, options, (found) => {
      const check = () => {
        const record = this.#read(file);
        if (record && ownerAlive(record)) found(record);
      };
      let watcher: fs.FSWatcher | undefined;
      try {
        this.#ensureDir();
        watcher = fs.watch(this.dir, check);
        watcher.on('error', () => {});
      } catch {
        // no watcher here: polling alone finds it
      }
      const poll = setInterval(check, kPollMs);
      check();
      return () => {
        watcher?.close();
        clearInterval(poll);
      };
    });
  }

  async list(): Promise<ServiceEntry[]> {
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      return [];
    }
    const out: ServiceEntry[] = [];
    for (const f of names.sort()) {
      if (!f.endsWith('.json')) continue;
      const record = this.#read(path.join(this.dir, f));
      if (record) out.push({ name: f.slice(0, -5), record, alive: ownerAlive(record) });
    }
    return out;
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
