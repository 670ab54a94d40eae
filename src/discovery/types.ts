/**
 * Service discovery without a broker: a published name maps to a topology record, in the Rust
 * original's JSON shape, so a peer written against it reads ours:
 *
 *   {"transport_kind":"tcp","codec_kind":"msgpack","map":{"0":"127.0.0.1:41237"}}
 *
 * Backends store records; they know nothing of transports or calls.
 */
import { RpcError } from '../errors.js';

/** What a record's `transport_kind` says: `tls` is TCP inside TLS. */
export type TransportKind = 'tcp' | 'tls' | 'unix' | 'shm';
export type CodecKindName = 'msgpack' | 'json';

/** The record published under a name. `map` holds one address per serving endpoint ("0", "1", …). */
export interface Topology {
  transport_kind: TransportKind;
  codec_kind: CodecKindName;
  map: Record<string, string>;
}

/** A record as stored, with who owns it (so a crashed owner's record counts as absent). */
export interface StoredRecord extends Topology {
  owner?: { pid: number; start_time?: number; host?: string };
}

export interface ServiceEntry {
  name: string;
  record: StoredRecord;
  /** False when the owner is known to be gone. */
  alive: boolean;
}

/** One small interface between the builder and every backend. */
export interface DiscoveryBackend {
  /** Writes (or replaces) the record; resolves once a reader can see it. */
  publish(name: string, record: Topology): Promise<void>;
  /** Removes the record if this process still owns it. */
  unpublish(name: string): Promise<void>;
  /** The live record under `name`, or undefined (absent, unreadable, or its owner is gone). */
  lookup(name: string): Promise<StoredRecord | undefined>;
  /** Resolves with the live record once it exists; rejects UNAVAILABLE after `timeoutMs` or CANCELLED on abort. */
  waitFor(name: string, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<StoredRecord>;
  /** Every record the backend knows, live or not. */
  list(): Promise<ServiceEntry[]>;
}

const kNamePattern = /^[A-Za-z0-9._-]{1,128}$/;

export function checkServiceName(name: string): string {
  if (typeof name !== 'string' || !kNamePattern.test(name) || name.startsWith('.')) {
    throw new RpcError('INVALID_ARGUMENT', `a service name is 1-128 letters, digits, '.', '_' or '-' (not starting with '.'), got ${JSON.stringify(name)}`);
  }
  return name;
}

/** Checks an untrusted parsed record; returns it typed, or undefined when it is not one. */
export function asStoredRecord(value: unknown): StoredRecord | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const v = value as Record<string, unknown>;
  if (v.transport_kind !== 'tcp' && v.transport_kind !== 'tls' && v.transport_kind !== 'unix' && v.transport_kind !== 'shm') return undefined;
  if (v.codec_kind !== 'msgpack' && v.codec_kind !== 'json') return undefined;
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
  }
  return record;
}

/**
 * The waiting part every backend's waitFor shares: settles once, with the record `watch` reports,
 * UNAVAILABLE after `timeoutMs`, CANCELLED on abort, or the error `watch` reports. `watch` starts
 * whatever the backend watches with (a file watcher, polling, an etcd watch) and returns its cleanup.
 */
export function waitForRecord(
  name: string,
  options: { timeoutMs?: number; signal?: AbortSignal },
  watch: (found: (record: StoredRecord) => void, fail: (err: Error) => void) => () => void,
): Promise<StoredRecord> {
  return new Promise((resolve, reject) => {
    let done = false;
    let stop: (() => void) | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (err: Error | undefined, record?: StoredRecord) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      stop?.();
      if (err) reject(err);
      else resolve(record!);
    };
    const onAbort = () => finish(new RpcError('CANCELLED', `waiting for ${name} was cancelled`));
    if (options.signal?.aborted) return onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.timeoutMs !== undefined) {
      timer = setTimeout(() => finish(new RpcError('UNAVAILABLE', `service ${name} did not appear within ${options.timeoutMs} ms`)), options.timeoutMs);
    }
    const cleanup = watch(
      (record) => finish(undefined, record),
      (err) => finish(err),
    );
    // `watch` may have found the record synchronously, before there was a cleanup to call.
    if (done) cleanup();
    else stop = cleanup;
  });
}
