/**
 * What a node is configured with: the option interfaces users pass to `new Node()` and its builder
 * methods, their defaults, and the checks that turn a bad one into INVALID_ARGUMENT up front.
 */
import { RpcError, type RemoteStacks } from '../errors.js';
import { checkInteger, kMaxTimerMs } from '../limits.js';
import { checkIdle, type IdlePreset, type IdleTuning } from '../idle.js';
import { kMaxRingCapacity } from '../shm/layout.js';
import type { CodecDescriptor, DecodeLimits } from '../codec/index.js';
import { resolveDecodeLimits } from '../codec/budget.js';
import { kDefaultHandshakeTimeoutMs } from '../handshake/spec.js';
import { kDefaultMaxFrameBytes } from '../protocol/framing.js';
import type { DiscoveryBackend, TransportKind } from '../discovery/types.js';
import type { TlsOptions } from '../transport/tls-options.js';
import type { Handler } from '../types.js';
import type { PoolOptions } from './pool.js';
import type { BalancePolicy } from './balance.js';
import { reconnectOptions, type ReconnectOptions } from './reconnect.js';

/** How long a connection attempt may take before it fails with UNAVAILABLE, unless the node says otherwise. */
const kDefaultConnectTimeoutMs = 10_000;
/** NodeOptions.ringBytes unless given: each main <-> worker ring's data area. */
export const kDefaultRingBytes = 1024 * 1024;
/** How long close() waits for a stuck connection worker before terminating it. */
const kDefaultCloseTimeoutMs = 5000;

/** Options of `new Node(options)`: limits, timeouts and policies shared by every listener and connection of the node. */
export interface NodeOptions {
  /**
   * Largest frame body accepted or sent, in bytes (default 64 MiB). A request, answer, event or
   * stream item of this node over it fails alone with FRAME_TOO_LARGE and is not sent; a larger
   * incoming frame closes that connection with FRAME_TOO_LARGE.
   */
  maxFrameBytes?: number;
  /**
   * What decoding one incoming payload may build (depth, lengths, counts, memory per byte); one
   * over a limit fails alone: FRAME_TOO_LARGE for a count or size, PROTOCOL for depth. Defaults:
   * maxDepth 100, maxExpansion 24, the rest bounded only by maxFrameBytes.
   */
  decodeLimits?: DecodeLimits;
  /** Size of each ring between the main thread and a connection worker (default 1 MiB; larger messages are chunked). */
  ringBytes?: number;
  /**
   * How the threads that carry this node's connections wait for traffic (default 'balanced'):
   * 'sleep' sleeps at once (least CPU), 'balanced' polls briefly while traffic flows (isolates,
   * a client's connection worker), 'latency' also polls the peer and every main <-> worker ring
   * (for cores to spare), 'spin' also busy-polls every ring (dedicated machines only). The
   * windows of each preset are kIdlePresets; see docs/PERFORMANCE.md.
   */
  idle?: IdlePreset;
  /** Advanced: windows in µs (0 to 1e6) that replace the preset's own: { spinMicros, pollMicros, peerPollMicros, clientPollMicros } (see IdleWindows). */
  idleTuning?: IdleTuning;
  /**
   * How long `close()` waits for a connection worker to close its listeners and connections before
   * it terminates that worker thread, in ms (default 5000). Only a worker whose event loop is stuck
   * (a worker-module handler in an endless loop, say) takes that long; every other task the
   * thread hosted ends with it (their calls reject with CLOSED, a listener among them starts
   * again). An isolate() plugin has its own `closeTimeoutMs`.
   */
  closeTimeoutMs?: number;
  /**
   * Keepalive: a connection that has received nothing for this many ms is pinged (by its worker,
   * so a busy main thread does not matter); if another interval passes without a word from the
   * peer, it is closed and its calls reject with CLOSED. Detects a silent dead peer, e.g. a
   * half-open TCP connection or a stopped process. Default 0: off. Both ends answer pings always.
   */
  keepAliveMs?: number;
  /** Time limit of each handshake step, in ms (default 5000); a peer slower than this is refused with HANDSHAKE_FAILED. */
  handshakeTimeoutMs?: number;
  /**
   * A connection attempt that has not connected within this many ms fails with UNAVAILABLE
   * (default 10000; 0: wait as long as the OS does, minutes for a silent TCP address). With
   * reconnect, that attempt counts as failed and the next one follows the backoff.
   */
  connectTimeoutMs?: number;
  /** Where publish() writes and waitFor() looks (default: the file backend in $XDG_RUNTIME_DIR/ogurpchik, else <tmp>/ogurpchik-<uid>). */
  discovery?: DiscoveryBackend;
  /** The process-wide worker pool's size; applied by the first node started in the process. */
  pool?: PoolOptions;
  /**
   * Which peers this node's errors (a handler's throw, a Close's reason) carry their stacks to,
   * absolute file paths and all: 'local' (default) over unix, shm and isolate, reachable only on
   * this machine and only as the socket's owner allows; 'always'; 'never'. Names, messages,
   * codes, data and causes always go.
   */
  remoteStacks?: RemoteStacks;
}

/** What both ends of a connection choose alike: the base of ServeOptions and ConnectOptions. */
export interface WireOptions {
  /** How messages are encoded (default msgpack()); the peer must use the same codec. */
  codec?: CodecDescriptor;
}

/** Options of `serve()`: how its listeners encode and how much they take on. */
export interface ServeOptions extends WireOptions {
  /**
   * The most calls of one connection served at once (default: no limit). A call beyond it is
   * answered at once with BUSY, and its handler does not run; the connection and its other
   * calls carry on. A call counts until its handler has finished (a result stream: until it
   * ended), even if its caller cancelled it. One-way events do not count.
   */
  maxConcurrentCalls?: number;
  /**
   * The most clients each listener serves at once (default: no limit). One more is refused with
   * BUSY, like a one-to-one server's second client (`oneToOne()` is the limit 1); once one of
   * them has gone, the next is served.
   */
  maxConnections?: number;
  /**
   * Pool threads that accept and serve each address (default 1; tcp and unix only, and it needs
   * the native addon). The main thread binds the socket and each of that many listener tasks
   * serves a share of the clients: a worker-module handler keeps that many cores busy, and a
   * thread busy with one client leaves new ones to the others. maxConnections counts them all.
   * More than the pool's threads share them.
   */
  threads?: number;
}

/** Options of `connect()`: the client's codec, the handler of the server's callbacks, reconnect and balance. */
export interface ConnectOptions extends WireOptions {
  /** Serves requests and events the server sends back over this connection (main thread). */
  handler?: Handler;
  /**
   * Reconnect (opt-in): a lost or failed connection is tried again with backoff (`true` takes every
   * default); through waitFor(), each attempt re-resolves the name first and the client follows
   * instances that come and go. Without it a lost connection stays lost, and a waitFor() client
   * keeps the endpoints the name listed when it appeared.
   */
  reconnect?: ReconnectOptions | boolean;
  /** How calls are spread over several endpoints (default 'round-robin'). */
  balance?: BalancePolicy;
}

/** The options of `waitFor(name)`: those of `connect()`, and how to find and reach the name's records. */
export interface WaitForOptions extends ConnectOptions {
  /** Give up with UNAVAILABLE after this long (default: wait forever). */
  timeoutMs?: number;
  /** The transport kind this client speaks (default 'tls' when `tls` is given, else 'tcp'); a record of another kind is refused. */
  transport?: TransportKind;
  /** TLS settings (as for `tcp(address, { tls })`) to reach a service published as `tls`. */
  tls?: TlsOptions | true;
}

/** Options of `authHmac()`. */
export interface AuthHmacOptions {
  /** As a client, also require the server to prove it knows the secret (default false; any server of ours can). */
  mutual?: boolean;
}

/** Options of `publish()`. */
export interface PublishOptions {
  /**
   * One instance among several: other nodes (in this or other processes, on this or other hosts)
   * may publish the same name, each its own record, and clients see them all. Default false: the
   * name is this node's alone, and publishing it while another live owner holds it fails with BUSY.
   */
  shared?: boolean;
  /** With `shared`: this instance's id (letters, digits, '.', '_', '-'); default `<host>-<pid>-<n>`. */
  instance?: string;
}

/** Options of RunningNode#close. */
export interface CloseOptions {
  /**
   * Close gracefully, for at most this many ms (default 0: at once): stop listening, refuse new
   * calls with UNAVAILABLE while the ones being served finish and are answered, let the client's
   * calls in flight settle, then close.
   */
  graceMs?: number;
}

/**
 * A handler: an object whose `onRequest`/`onEvent` run on this thread, or the URL (or absolute path)
 * of a module whose named export `handler` runs inside the connection worker, off this thread.
 */
export type HandlerInput = Handler | URL | string;

/** NodeOptions checked, with their defaults filled in; pool and discovery stay as given. */
export interface ResolvedNodeOptions extends Required<Omit<NodeOptions, 'pool' | 'discovery' | 'idleTuning'>>, Pick<NodeOptions, 'pool' | 'discovery'> {
  /** NodeOptions.idleTuning, checked: the windows depend on the transport too (idleWindows). */
  idleTuning: IdleTuning;
}

/** Checks every NodeOptions field (INVALID_ARGUMENT) and fills in the defaults. */
export function resolveNodeOptions(options: NodeOptions): ResolvedNodeOptions {
  const maxFrameBytes = checkInteger('maxFrameBytes', options.maxFrameBytes, { fallback: kDefaultMaxFrameBytes, min: 16, max: 0xffffffff });
  const ringBytes = checkInteger('ringBytes', options.ringBytes, { fallback: kDefaultRingBytes, min: 1, max: kMaxRingCapacity });
  const { idle, tuning } = checkIdle(options.idle, options.idleTuning);
  const handshakeTimeoutMs = checkInteger('handshakeTimeoutMs', options.handshakeTimeoutMs, { fallback: kDefaultHandshakeTimeoutMs, min: 1, max: kMaxTimerMs });
  const keepAliveMs = checkInteger('keepAliveMs', options.keepAliveMs, { fallback: 0, min: 0, max: kMaxTimerMs });
  const connectTimeoutMs = checkInteger('connectTimeoutMs', options.connectTimeoutMs, { fallback: kDefaultConnectTimeoutMs, min: 0, max: kMaxTimerMs });
  const closeTimeoutMs = checkInteger('closeTimeoutMs', options.closeTimeoutMs, { fallback: kDefaultCloseTimeoutMs, min: 1, max: kMaxTimerMs });
  if (options.pool !== undefined) checkPoolOptions(options.pool);
  const remoteStacks = options.remoteStacks ?? 'local';
  if (remoteStacks !== 'local' && remoteStacks !== 'always' && remoteStacks !== 'never') {
    throw new RpcError('INVALID_ARGUMENT', `remoteStacks must be 'local', 'always' or 'never', got ${String(remoteStacks)}`);
  }
  const decodeLimits = resolveDecodeLimits(options.decodeLimits);
  return { maxFrameBytes, decodeLimits, ringBytes, idle, idleTuning: tuning, handshakeTimeoutMs, keepAliveMs, connectTimeoutMs, closeTimeoutMs, remoteStacks, pool: options.pool, discovery: options.discovery };
}

function checkPoolOptions(pool: PoolOptions): void {
  if (pool === null || typeof pool !== 'object') throw new RpcError('INVALID_ARGUMENT', `pool takes { threads?, tasksPerThread? }, got ${String(pool)}`);
  // Checked only: PoolLease fills in the defaults (one thread per core, 1024 per thread).
  checkInteger('pool.threads', pool.threads, { fallback: 1, min: 1, max: 1024 });
  checkInteger('pool.tasksPerThread', pool.tasksPerThread, { fallback: 1, min: 1, max: 65536 });
}

/** Checks ServeOptions' limits (INVALID_ARGUMENT); returns `threads`, default 1. */
export function checkServeOptions(options: ServeOptions): number {
  for (const what of ['maxConcurrentCalls', 'maxConnections'] as const) {
    const max = options[what];
    if (max !== undefined && max !== Infinity) checkInteger(what, max, { fallback: 0, min: 1, max: 2 ** 31 - 1 });
  }
  return checkInteger('threads', options.threads, { fallback: 1, min: 1, max: 1024 });
}

/** Checks what connect() and waitFor() share of a client's options (INVALID_ARGUMENT). */
export function checkClientOptions(options: ConnectOptions): void {
  reconnectOptions(options.reconnect);
  if (options.balance !== undefined && options.balance !== 'round-robin' && options.balance !== 'least-in-flight') {
    throw new RpcError('INVALID_ARGUMENT', `balance must be 'round-robin' or 'least-in-flight', got ${JSON.stringify(options.balance)}`);
  }
}

export function checkHandler(handler: HandlerInput): void {
  if (handler instanceof URL || typeof handler === 'string') return;
  if (handler === null || typeof handler !== 'object' || (typeof handler.onRequest !== 'function' && typeof handler.onEvent !== 'function')) {
    throw new RpcError('INVALID_ARGUMENT', 'a handler is an object with onRequest() and/or onEvent(), or the URL of a module exporting `handler`');
  }
}
