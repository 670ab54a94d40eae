/**
 * Service discovery without a broker: a published name maps to a topology record, in the Rust
 * original's JSON shape, so a peer written against it reads ours:
 *
 *   {"transport_kind":"tcp","codec_kind":"msgpack","map":{"0":"127.0.0.1:41237"}}
 *
 * Backends store records; they know nothing of transports or calls.
 */
import os from 'node:os';
import { RpcError } from '../errors.js';
import { timeLimit } from '../limits.js';
import { processStartTime } from '../proc.js';

/** What a record's `transport_kind` says: `tls` is TCP inside TLS. */
export type TransportKind = 'tcp' | 'tls' | 'unix' | 'shm' | 'vsock';
export type CodecKindName = 'msgpack' | 'json' | 'view';

/** The record published under a name. `map` holds one address per serving endpoint ("0", "1", …). */
export interface Topology {
  transport_kind: TransportKind;
  codec_kind: CodecKindName;
  map: Record<string, string>;
}

/** A record as stored, with who owns it (so a crashed owner's record counts as absent). */
export interface StoredRecord extends Topology {
  owner?: { pid: number; start_time?: number; host?: string; node?: string };
}

export interface ServiceEntry {
  name: string;
  /** Set for one instance among several publishing `name` (see InstanceOptions). */
  instance?: string;
  record: StoredRecord;
  /** False when the owner is known to be gone. */
  alive: boolean;
}

/** How a record is published under its name. */
export interface InstanceOptions {
  /**
   * Publish one instance among several: the record is stored beside any other instances' records
   * under the same name, and readers see them all. Without it the name is exclusive: publishing a
   * name another live owner holds fails with BUSY.
   */
  instance?: string;
  /**
   * Who publishes, within this process: a token of the publishing node, stored in the record. A
   * live record under the name with another token is refused with BUSY even when this process
   * wrote it, and unpublish removes only a record with this token. Without it, any record of this
   * process counts as the caller's.
   */
  owner?: string;
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

/** The owner this process writes into its records: pid, start time, host, and the publishing node's token if given. */
export function ownerOf(owner: string | undefined, host: string = os.hostname()): NonNullable<StoredRecord['owner']> {
  const o: NonNullable<StoredRecord['owner']> = { pid: process.pid, host };
  const started = processStartTime(process.pid);
  if (started !== undefined) o.start_time = started;
  if (owner !== undefined) o.node = owner;
  return o;
}

/** Who holds a record, for a BUSY message: another node of this process, or the process that wrote it. */
export function heldBy(owner: StoredRecord['owner'], host: string = os.hostname()): string {
  if (owner === undefined) return 'an owner the record does not name';
  if (owner.pid === process.pid && (owner.host === undefined || owner.host === host)) return 'another node of this process';
  return `pid ${owner.pid} on ${owner.host ?? '?'}`;
}

/** Whether two owner tokens of this process may be the same node: equal, or either not given. */
export function sameOwner(a: string | undefined, b: string | undefined): boolean {
  return a === undefined || b === undefined || a === b;
}

/** Whether `record` is the caller's: written by this process (on `host`) and, when both name one, by the same owner token. */
export function ownRecord(record: StoredRecord, owner: string | undefined, host: string = os.hostname()): boolean {
  const o = record.owner;
  if (o === undefined || o.pid !== process.pid || (o.host !== undefined && o.host !== host)) return false;
  return sameOwner(o.node, owner);
}

/** Told the full set of live records under a name, every time it may have changed (and once at the start). */
export type RecordsListener = (entries: ServiceEntry[]) => void;

/**
 * One small interface between the builder and every backend. `lookupAll` and `watch` are optional:
 * without them, the functions of the same name below fall back to `lookup` and polling.
 */
export interface DiscoveryBackend {
  /** Writes (or replaces) the record, or with `instance` one instance's record; resolves once a reader can see it. */
  publish(name: string, record: Topology, options?: InstanceOptions): Promise<void>;
  /** Removes the record (or the given instance's) if this process still owns it. */
  unpublish(name: string, options?: InstanceOptions): Promise<void>;
  /** The live record under `name` (the exclusive one, else any live instance's), or undefined. */
  lookup(name: string): Promise<StoredRecord | undefined>;
  /** Every live record under `name`: the exclusive one and every live instance's. */
  lookupAll?(name: string): Promise<ServiceEntry[]>;
  /** Calls `listener` with every live record under `name` now and whenever that may change, until the returned function is called; `onError` on a failure to watch. */
  watch?(name: string, listener: RecordsListener, onError: (err: RpcError) => void): () => void;
  /** Resolves with a live record once one exists; rejects UNAVAILABLE after `timeoutMs` or CANCELLED on abort. */
  waitFor(name: string, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<StoredRecord>;
  /** Every record the backend knows, live or not. */
  list(): Promise<ServiceEntry[]>;
  /**
   * The vsock CID recorded for VM `vm` (its host entry), or undefined when there is none; what a
   * self-managed `vsock({ vm, port })` client connects to. Optional: a backend without host
   * entries leaves it out, and such a client fails start() with INVALID_ARGUMENT.
   */
  lookupHost?(vm: string): Promise<number | undefined>;
}

/** Checks a vsock CID given to a host entry. */
export function checkCid(cid: number): number {
  if (!Number.isInteger(cid) || cid < 0 || cid >= 0xffffffff) throw new RpcError('INVALID_ARGUMENT', `a vsock CID is an integer from 0 to 2^32-2, got ${cid}`);
  return cid;
}

/** A host entry's stored CID, or undefined when it is not one. */
export function parseCid(value: unknown): number | undefined {
  const cid = typeof value === 'string' && /^\d{1,10}$/.test(value.trim()) ? Number(value) : value;
  return typeof cid === 'number' && Number.isInteger(cid) && cid >= 0 && cid < 0xffffffff ? cid : undefined;
}

const kNamePattern = /^[A-Za-z0-9._-]{1,128}$/;

/** How often watchRecords polls a backend that cannot watch. */
const kWatchPollMs = 500;

export function checkServiceName(name: string): string {
  if (typeof name !== 'string' || !kNamePattern.test(name) || name.startsWith('.')) {
    throw new RpcError('INVALID_ARGUMENT', `a service name is 1-128 letters, digits, '.', '_' or '-' (not starting with '.'), got ${JSON.stringify(name)}`);
  }
  return name;
}

/** Instance ids follow the service-name rules, so they fit a file name, an etcd key and a registry key. */
export function checkInstanceName(instance: string): string {
  if (typeof instance !== 'string' || !kNamePattern.test(instance) || instance.startsWith('.')) {
    throw new RpcError('INVALID_ARGUMENT', `an instance id is 1-128 letters, digits, '.', '_' or '-' (not starting with '.'), got ${JSON.stringify(instance)}`);
  }
  return instance;
}

let instanceSeq = 0;

/** A fresh instance id, unique across hosts and processes and among the nodes of this process: `<host>-<pid>-<n>`. */
export function newInstanceId(): string {
  const host = os.hostname().replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '').slice(0, 80) || 'host';
  return `${host}-${process.pid}-${++instanceSeq}`;
}

/** Every live record under `name`, through the backend's lookupAll, else its lookup. */
export async function lookupAll(backend: DiscoveryBackend, name: string): Promise<ServiceEntry[]> {
  if (backend.lookupAll) return backend.lookupAll(name);
  const record = await backend.lookup(name);
  return record ? [{ name, record, alive: true }] : [];
}

/**
 * Follows the live records under `name`: the backend's own watch when it has one, else polling
 * `lookupAll`. The listener hears the first set at once and then only changes. Returns the stop.
 */
export function watchRecords(backend: DiscoveryBackend, name: string, listener: RecordsListener, onError: (err: RpcError) => void): () => void {
  let last: string | undefined;
  const changed = (entries: ServiceEntry[]) => {
    const key = JSON.stringify(entries.map((e) => [e.instance ?? '', e.record.transport_kind, e.record.codec_kind, e.record.map]).sort());
    if (key === last) return;
    last = key;
    listener(entries);
  };
  if (backend.watch) return backend.watch(name, changed, onError);
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const poll = () => {
    lookupAll(backend, name).then(
      (entries) => !stopped && changed(entries),
      (err) => !stopped && onError(RpcError.is(err) ? err : new RpcError('UNAVAILABLE', `looking up ${name} failed: ${(err as Error)?.message ?? err}`, { cause: err })),
    ).finally(() => {
      if (!stopped) timer = setTimeout(poll, kWatchPollMs);
    });
  };
  poll();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
  };
}

/** Checks an untrusted parsed record; returns it typed, or undefined when it is not one. */
export function asStoredRecord(value: unknown): StoredRecord | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const v = value as Record<string, unknown>;
  if (v.transport_kind !== 'tcp' && v.transport_kind !== 'tls' && v.transport_kind !== 'unix' && v.transport_kind !== 'shm' && v.transport_kind !== 'vsock') return undefined;
  if (v.codec_kind !== 'msgpack' && v.codec_kind !== 'json' && v.codec_kind !== 'view') return undefined;
  if (v.map === null || typeof v.map !== 'object' || Array.isArray(v.map)) return undefined;
  const map: Record<string, string> = {};
  for (const [k, a] of Object.entries(v.map as Record<string, unknown>)) {
    if (typeof a !== 'string') return undefined;
    map[k] = a;
  }
  if (Object.keys(map).length === 0) return undefined;
  const record: StoredRecord = { transport_kind: v.transport_kind, codec_kind: v.codec_kind, map };
  const o = v.owner as Record<string, unknown> | undefined;
  if (o && typeof o === 'object' && Number.isInteger(o.pid)) {
    record.owner = { pid: o.pid as number };
    if (typeof o.start_time === 'number') record.owner.start_time = o.start_time;
    if (typeof o.host === 'string') record.owner.host = o.host;
    if (typeof o.node === 'string') record.owner.node = o.node;
  }
  return record;
}

/**
 * The waiting part every backend's waitFor shares: settles once, with the record `watch` reports,
 * UNAVAILABLE after `timeoutMs`, CANCELLED on abort, or the error `watch` reports. `watch` starts
 * whatever the backend watches with (a file watcher, polling, an etcd watch) and returns its cleanup;
 * a cleanup that returns a promise is awaited before the wait settles, so a settled wait does no more I/O.
 */
export function waitForRecord(
  name: string,
  options: { timeoutMs?: number; signal?: AbortSignal },
  watch: (found: (record: StoredRecord) => void, fail: (err: Error) => void) => () => void | Promise<void>,
): Promise<StoredRecord> {
  return new Promise((resolve, reject) => {
    let done = false;
    let stop: (() => void | Promise<void>) | undefined;
    let settle: (() => void) | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stopThenSettle = () => void Promise.resolve(stop!()).then(settle, settle);
    const finish = (err: Error | undefined, record?: StoredRecord) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      settle = () => (err ? reject(err) : resolve(record!));
      // Without a cleanup yet, `watch` found the record synchronously: stopped once it returns, below.
      if (stop) stopThenSettle();
    };
    const cancelled = () => new RpcError('CANCELLED', `waiting for ${name} was cancelled`);
    const onAbort = () => finish(cancelled());
    if (options.signal?.aborted) return reject(cancelled());
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const timeoutMs = timeLimit('timeoutMs', options.timeoutMs);
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => finish(new RpcError('UNAVAILABLE', `service ${name} did not appear within ${timeoutMs} ms`)), timeoutMs);
    }
    stop = watch(
      (record) => finish(undefined, record),
      (err) => finish(err),
    );
    if (done) stopThenSettle();
  });
}
