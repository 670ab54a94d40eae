/**
 * Transports are descriptors: plain serialisable objects, because a socket cannot cross into a
 * worker thread. The connection worker turns a descriptor into a live adapter.
 */
import { RpcError } from '../errors.js';
import { loadNative } from '../shm/native.js';
import { resolveTls, type TlsOptions, type TlsSettings } from './tls-options.js';

export interface TcpDescriptor {
  kind: 'tcp';
  host: string;
  port: number;
  /** When set, the connection is a TLS session (validated settings; see `TlsOptions`). */
  tls?: TlsSettings;
}

export interface UnixDescriptor {
  kind: 'unix';
  /** A filesystem path, or a Windows named pipe path (`\\.\pipe\name`). */
  path: string;
}

export interface CustomDescriptor {
  kind: 'custom';
  /** URL (file: or data:) of a module whose named export `transport` implements `TransportAdapter`. */
  module: string;
  /** Passed to the adapter's `connect`/`listen`; must be structured-cloneable. */
  options: unknown;
  /** A name for `PeerInfo.transport` and error messages. */
  name: string;
}

export interface ShmDescriptor {
  kind: 'shm';
  /** Service name: letters, digits, '.', '_' and '-'. */
  name: string;
  /** Bytes of each ring's data area (a power of two; larger messages are chunked through it). */
  capacity: number;
}

export interface IsolateDescriptor {
  kind: 'isolate';
  /** URL of the plugin module: it exports `handler` (and optionally `onConnect(host)`). */
  module: string;
  /** Limits for the plugin's worker thread (heap sizes, stack), as for `new Worker`. */
  resourceLimits?: { maxOldGenerationSizeMb?: number; maxYoungGenerationSizeMb?: number; codeRangeSizeMb?: number; stackSizeMb?: number };
  /** How long `close()` waits for the plugin to stop before terminating its thread (default 2000 ms). */
  closeTimeoutMs: number;
}

export type TransportDescriptor = TcpDescriptor | UnixDescriptor | CustomDescriptor | ShmDescriptor | IsolateDescriptor;

/** An address a server actually listens on (port 0 resolved). */
export type Address =
  | { kind: 'tcp'; host: string; port: number; tls?: true }
  | { kind: 'unix'; path: string }
  | { kind: 'shm'; name: string }
  | { kind: 'custom'; name: string; address: unknown };

/** Options of `tcp()`. */
export interface TcpOptions {
  /** Run the connection inside TLS (node:tls): certificates, CA, mutual TLS. `true` is `{}`: a client trusting Node's root CAs. */
  tls?: TlsOptions | true;
}

/**
 * TCP: `tcp('127.0.0.1:1337')`, `tcp({ host, port })`; `[::1]:80` for IPv6. Port 0 picks a free port
 * when serving. `{ tls }` wraps it in TLS; its certificates and files are checked here (INVALID_ARGUMENT).
 */
export function tcp(address: string | { host?: string; port: number }, options: TcpOptions = {}): TcpDescriptor {
  const d = tcpAddress(address);
  if (options === null || typeof options !== 'object') throw new RpcError('INVALID_ARGUMENT', 'tcp() takes an options object as its second argument');
  if (options.tls !== undefined) d.tls = resolveTls(options.tls);
  return d;
}

function tcpAddress(address: string | { host?: string; port: number }): TcpDescriptor {
  if (typeof address === 'object' && address !== null) {
    return { kind: 'tcp', host: address.host ?? '127.0.0.1', port: checkPort(address.port, JSON.stringify({ host: address.host, port: address.port })) };
  }
  if (typeof address !== 'string') throw new RpcError('INVALID_ARGUMENT', 'tcp() takes "host:port" or { host, port }');
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(address);
  if (!m) throw new RpcError('INVALID_ARGUMENT', `tcp address must look like "host:port", got ${JSON.stringify(address)}`);
  return { kind: 'tcp', host: m[1] ?? (m[2] || '127.0.0.1'), port: checkPort(Number(m[3]), address) };
}

function checkPort(port: number, shown: string): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RpcError('INVALID_ARGUMENT', `bad tcp port in ${shown}`);
  return port;
}

/** A Unix domain socket path (created 0600, removed on close), or on Windows a named pipe path. */
export function unix(path: string): UnixDescriptor {
  if (typeof path !== 'string' || path.length === 0) throw new RpcError('INVALID_ARGUMENT', 'unix() takes a socket path');
  return { kind: 'unix', path };
}

/**
 * A transport of your own: `module` is a URL or absolute path of an ES module exporting `transport`
 * (a `TransportAdapter`); it is imported inside the connection worker and given `options`.
 */
export function custom(module: string | URL, options: unknown = {}, name = 'custom'): CustomDescriptor {
  const href = module instanceof URL ? module.href : /^[a-z]+:/i.test(module) ? module : new URL(`file://${module}`).href;
  return { kind: 'custom', module: href, options, name };
}

/**
 * Cross-process shared memory: a pair of rings in POSIX shared memory per connection, signalled
 * with a native futex; a Unix control socket beside them does the rendezvous and notices a dead
 * peer. Needs the native addon (built by `npm ci`); throws NATIVE_MISSING without it.
 */
export function shm(name: string, options: { capacity?: number } = {}): ShmDescriptor {
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,100}$/.test(name)) {
    throw new RpcError('INVALID_ARGUMENT', `shm name must be 1-100 letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`);
  }
  const wanted = options.capacity ?? 1024 * 1024;
  if (!Number.isInteger(wanted) || wanted < 1 || wanted > 2 ** 30) throw new RpcError('INVALID_ARGUMENT', `shm capacity must be from 1 to 2^30 bytes, got ${wanted}`);
  loadNative(); // NATIVE_MISSING here, with how to build it, rather than later in a worker
  let capacity = 4096;
  while (capacity < wanted) capacity *= 2;
  return { kind: 'shm', name, capacity };
}

/**
 * An in-process plugin isolated in its own worker thread: `connect(isolate(pluginUrl))` starts the
 * module in a new thread, and the node's client calls its `handler`; the plugin calls back through
 * `ctx.client` (or the client given to its `onConnect`). Traffic rides shared-memory rings; a
 * plugin that throws at load, exits, runs out of memory or spins forever never takes the host down.
 */
export function isolate(
  module: string | URL,
  options: { resourceLimits?: IsolateDescriptor['resourceLimits']; closeTimeoutMs?: number } = {},
): IsolateDescriptor {
  const href = module instanceof URL ? module.href : /^[a-z]+:/i.test(module) ? module : new URL(`file://${module}`).href;
  const d: IsolateDescriptor = { kind: 'isolate', module: href, closeTimeoutMs: options.closeTimeoutMs ?? 2000 };
  if (options.resourceLimits) d.resourceLimits = options.resourceLimits;
  return d;
}

/** How an address reads in messages and discovery records. */
export function formatAddress(a: Address | TransportDescriptor): string {
  switch (a.kind) {
    case 'tcp':
      return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
    case 'unix':
      return a.path;
    case 'custom':
      return 'address' in a ? `${a.name}:${JSON.stringify(a.address)}` : `${a.name}:${a.module}`;
    case 'isolate':
      return `isolate:${a.module}`;
    case 'shm':
      return `shm:${a.name}`;
  }
}
