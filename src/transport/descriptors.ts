/**
 * Transports are descriptors: plain serialisable objects, because a socket cannot cross into a
 * worker thread. The connection worker turns a descriptor into a live adapter.
 */
import { RpcError } from '../errors.js';

export interface TcpDescriptor {
  kind: 'tcp';
  host: string;
  port: number;
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

export interface IsolateDescriptor {
  kind: 'isolate';
  /** URL of the plugin module: it exports `handler` (and optionally `onConnect(host)`). */
  module: string;
  /** Limits for the plugin's worker thread (heap sizes, stack), as for `new Worker`. */
  resourceLimits?: { maxOldGenerationSizeMb?: number; maxYoungGenerationSizeMb?: number; codeRangeSizeMb?: number; stackSizeMb?: number };
  /** How long `close()` waits for the plugin to stop before terminating its thread (default 2000 ms). */
  closeTimeoutMs: number;
}

export type TransportDescriptor = TcpDescriptor | UnixDescriptor | CustomDescriptor | IsolateDescriptor;

/** An address a server actually listens on (port 0 resolved). */
export type Address =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string }
  | { kind: 'custom'; name: string; address: unknown };

/** TCP: `tcp('127.0.0.1:1337')`, `tcp({ host, port })`; `[::1]:80` for IPv6. Port 0 picks a free port when serving. */
export function tcp(address: string | { host?: string; port: number }): TcpDescriptor {
  if (typeof address === 'object' && address !== null) {
    return { kind: 'tcp', host: address.host ?? '127.0.0.1', port: checkPort(address.port, JSON.stringify(address)) };
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
  }
}
