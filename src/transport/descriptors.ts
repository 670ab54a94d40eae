/**
 * Transports are descriptors: plain serialisable objects, because a socket cannot cross into a
 * worker thread. The connection worker turns a descriptor into a live adapter.
 */
import { pathToFileURL } from 'node:url';
import { RpcError } from '../errors.js';
import { checkInteger, kMaxTimerMs } from '../limits.js';
import { loadNative } from '../native/addon.js';
import { resolveTls, type TlsOptions, type TlsSettings } from './tls-options.js';

export interface TcpDescriptor {
  kind: 'tcp';
  host: string;
  port: number;
  /** When set, the connection is a TLS session (validated settings; see `TlsOptions`). */
  tls?: TlsSettings;
}

export interface UnixDescriptor extends PeerUidOptions {
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

export interface ShmDescriptor extends ShmOptions {
  kind: 'shm';
  /** Service name: letters, digits, '.', '_' and '-'. */
  name: string;
  /** `ShmOptions.capacity` rounded up to a power of two. */
  capacity: number;
}

export interface IsolateDescriptor extends IsolateOptions {
  kind: 'isolate';
  /** URL of the plugin module: it exports `handler` (and optionally `onConnect(host)`). */
  module: string;
  /** `IsolateOptions.closeTimeoutMs`, its default filled in. */
  closeTimeoutMs: number;
}

export interface VsockDescriptor extends VsockOptions {
  kind: 'vsock';
  /** `VsockOptions.connectTimeoutMs`, its default filled in. */
  connectTimeoutMs: number;
}

export type TransportDescriptor = TcpDescriptor | UnixDescriptor | CustomDescriptor | ShmDescriptor | IsolateDescriptor | VsockDescriptor;

/** An address a server actually listens on (port 0 resolved). */
export type Address =
  | { kind: 'tcp'; host: string; port: number; tls?: true }
  | { kind: 'unix'; path: string }
  | { kind: 'shm'; name: string }
  | { kind: 'vsock'; cid: number; port: number }
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

function tcpAddress(address: Parameters<typeof tcp>[0]): TcpDescriptor {
  if (typeof address === 'object' && address !== null) {
    const shown = JSON.stringify({ host: address.host, port: address.port });
    if (address.host !== undefined && (typeof address.host !== 'string' || address.host.length === 0)) {
      throw new RpcError('INVALID_ARGUMENT', `tcp host must be a non-empty string, got ${shown}`);
    }
    return { kind: 'tcp', host: address.host ?? '127.0.0.1', port: checkPort(address.port, shown) };
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

/** Options of `unix()` and `shm()` that a client uses: whose server it accepts. */
export interface PeerUidOptions {
  /**
   * The uid the server must run as, as the kernel reports it for the connected socket
   * (SO_PEERCRED), or 'any'; default this process's uid. A client reaching a server that runs as
   * another uid closes the connection and fails with AUTH_FAILED. Serving ignores it.
   */
  peerUid?: number | 'any';
}

/**
 * A Unix domain socket path (0600 from its creation, removed on close), or on Windows a named
 * pipe path. A client accepts only a server running as `peerUid` (default: its own uid).
 */
export function unix(path: string, options: PeerUidOptions = {}): UnixDescriptor {
  if (typeof path !== 'string' || path.length === 0) throw new RpcError('INVALID_ARGUMENT', 'unix() takes a socket path');
  if (options === null || typeof options !== 'object') throw new RpcError('INVALID_ARGUMENT', 'unix() takes an options object as its second argument');
  const d: UnixDescriptor = { kind: 'unix', path };
  if (options.peerUid !== undefined) d.peerUid = checkPeerUid(options.peerUid);
  return d;
}

function checkPeerUid(peerUid: unknown): number | 'any' {
  if (peerUid === 'any' || (typeof peerUid === 'number' && Number.isInteger(peerUid) && peerUid >= 0 && peerUid < 0xffffffff)) return peerUid;
  throw new RpcError('INVALID_ARGUMENT', `peerUid must be a uid (an integer from 0 to 2^32-2) or 'any', got ${JSON.stringify(peerUid) ?? String(peerUid)}`);
}

/**
 * A transport of your own: `module` is a URL or absolute path of an ES module exporting `transport`
 * (a `TransportAdapter`); it is imported inside the connection worker and given `options`.
 */
export function custom(module: string | URL, options: unknown = {}, name = 'custom'): CustomDescriptor {
  return { kind: 'custom', module: moduleHref(module, 'custom() module'), options, name };
}

/**
 * The URL of a module given as a URL, a URL string or a file path (relative to the working
 * directory; a Windows drive path too), escaped as a file URL: a '#' or '%' in a path is a
 * character of the name, not a fragment or an escape.
 */
export function moduleHref(module: string | URL, what = 'a module'): string {
  if (module instanceof URL) return module.href;
  if (typeof module !== 'string' || module.length === 0) throw new RpcError('INVALID_ARGUMENT', `${what} must be a URL or a file path, got ${String(module)}`);
  return /^[a-z][a-z0-9+.-]*:/i.test(module) && !/^[a-z]:\\/i.test(module) ? module : pathToFileURL(module).href;
}

/** Options of `shm()`. */
export interface ShmOptions extends PeerUidOptions {
  /** Bytes of each ring's data area, from 1 to 2^30, rounded up to a power of two of at least 4096 (default 1 MiB); larger messages are chunked through it. */
  capacity?: number;
}

/**
 * Cross-process shared memory: a pair of rings in POSIX shared memory per connection, signalled
 * with a native futex; a Unix control socket beside them does the rendezvous and notices a dead
 * peer (0600 from its creation; a client accepts only a server running as `peerUid`, default its
 * own uid). Needs the native addon (built by `npm ci`); throws NATIVE_MISSING without it.
 */
export function shm(name: string, options: ShmOptions = {}): ShmDescriptor {
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,100}$/.test(name)) {
    throw new RpcError('INVALID_ARGUMENT', `shm name must be 1-100 letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`);
  }
  const wanted = options.capacity ?? 1024 * 1024;
  if (!Number.isInteger(wanted) || wanted < 1 || wanted > 2 ** 30) throw new RpcError('INVALID_ARGUMENT', `shm capacity must be from 1 to 2^30 bytes, got ${wanted}`);
  loadNative(); // NATIVE_MISSING here, with how to build it, rather than later in a worker
  let capacity = 4096;
  while (capacity < wanted) capacity *= 2;
  const d: ShmDescriptor = { kind: 'shm', name, capacity };
  if (options.peerUid !== undefined) d.peerUid = checkPeerUid(options.peerUid);
  return d;
}

/** VMADDR_CID_ANY: a server bound to it accepts on whatever CID this machine has. */
export const kVsockCidAny = 0xffffffff;
/** The default connect timeout of vsock(), as the kernel's own (2 s). */
const kVsockConnectTimeoutMs = 2000;

/** The address and options of `vsock()`. */
export interface VsockOptions {
  /** Connecting: the peer's CID. Serving: the local CID to bind (VMADDR_CID_ANY, 0xFFFFFFFF, when omitted). */
  cid?: number;
  /** Connecting, self-managed: the VM whose CID the node's discovery backend holds (its host entry), looked up by start(). */
  vm?: string;
  /** Port; 0 when serving lets the kernel pick one. */
  port: number;
  /** How long a connect may take before it fails (ms; default 2000, as the kernel's own). */
  connectTimeoutMs?: number;
}

/**
 * VSOCK, the host <-> VM socket family (Linux AF_VSOCK). Connect: `vsock({ cid, port })`, or
 * `vsock({ vm, port })` to take the CID from the discovery backend's host entry for that VM when
 * the node starts. Serve: `vsock({ port })` binds VMADDR_CID_ANY (port 0 picks one). Needs the
 * native addon (its relay thread owns the socket; Node cannot wrap one); throws NATIVE_MISSING
 * without it.
 */
export function vsock(address: VsockOptions): VsockDescriptor {
  if (typeof address !== 'object' || address === null) throw new RpcError('INVALID_ARGUMENT', 'vsock() takes { cid?, vm?, port, connectTimeoutMs? }');
  const { cid, vm, port } = address;
  const u32 = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
  if (cid !== undefined && !u32(cid)) throw new RpcError('INVALID_ARGUMENT', `vsock cid must be an integer from 0 to 2^32-1, got ${String(cid)}`);
  if (!u32(port)) throw new RpcError('INVALID_ARGUMENT', `vsock port must be an integer from 0 to 2^32-1, got ${String(port)}`);
  if (vm !== undefined && cid !== undefined) throw new RpcError('INVALID_ARGUMENT', 'vsock() takes a cid or a vm name, not both');
  if (vm !== undefined) checkVmName(vm);
  const connectTimeoutMs = address.connectTimeoutMs ?? kVsockConnectTimeoutMs;
  if (!(Number.isInteger(connectTimeoutMs) && connectTimeoutMs >= 1 && connectTimeoutMs <= 2 ** 31 - 1)) {
    throw new RpcError('INVALID_ARGUMENT', `vsock connectTimeoutMs must be a positive integer, got ${String(connectTimeoutMs)}`);
  }
  loadNative(); // NATIVE_MISSING here, with how to build it, rather than later in a worker
  const d: VsockDescriptor = { kind: 'vsock', port, connectTimeoutMs };
  if (cid !== undefined) d.cid = cid;
  if (vm !== undefined) d.vm = vm;
  return d;
}

/** A VM name as host entries key it (the registry's `Hosts\<vm>`): 1-255 characters, no backslash, quote or control character, no surrounding spaces. */
export function checkVmName(vm: string): string {
  if (typeof vm !== 'string' || vm.length === 0 || vm.length > 255 || /[\\"\u0000-\u001f]/.test(vm) || vm.trim() !== vm) {
    throw new RpcError('INVALID_ARGUMENT', `a VM name is 1-255 characters without backslashes, quotes, control characters or surrounding spaces, got ${JSON.stringify(vm)}`);
  }
  return vm;
}

/** Options of `isolate()`. */
export interface IsolateOptions {
  /** Limits for the plugin's worker thread (heap sizes, stack), as for `new Worker`. */
  resourceLimits?: { maxOldGenerationSizeMb?: number; maxYoungGenerationSizeMb?: number; codeRangeSizeMb?: number; stackSizeMb?: number };
  /** How long `close()` waits for the plugin to stop before terminating its thread (default 2000 ms). */
  closeTimeoutMs?: number;
}

/**
 * An in-process plugin isolated in its own worker thread: `connect(isolate(pluginUrl))` starts the
 * module in a new thread, and the node's client calls its `handler`; the plugin calls back through
 * `ctx.client` (or the client given to its `onConnect`). Traffic rides shared-memory rings; a
 * plugin that throws at load, exits, runs out of memory or spins forever never takes the host down.
 */
export function isolate(module: string | URL, options: IsolateOptions = {}): IsolateDescriptor {
  const closeTimeoutMs = checkInteger('isolate closeTimeoutMs', options.closeTimeoutMs, { fallback: 2000, min: 1, max: kMaxTimerMs });
  const d: IsolateDescriptor = { kind: 'isolate', module: moduleHref(module, 'isolate() module'), closeTimeoutMs };
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
    case 'vsock':
      if ('vm' in a && a.vm !== undefined) return `vsock:vm(${a.vm}):${a.port}`;
      return `vsock:${a.cid ?? kVsockCidAny}:${a.port}`;
  }
}
