/**
 * The public entry: `new Node()` is a builder; `start()` turns it into a running node whose
 * listeners and connections live in worker threads.
 */
import { RpcError, type RemoteStacks } from '../errors.js';
import { checkInteger, kMaxTimerMs, timeLimit } from '../limits.js';
import { checkIdle, idleWindows, type IdlePreset, type IdleTuning } from '../idle.js';
import { kMaxRingCapacity } from '../shm/layout.js';
import { msgpack, type CodecDescriptor, type DecodeLimits } from '../codec/index.js';
import { resolveDecodeLimits } from '../codec/budget.js';
import { parsePublicKey } from '../handshake/signed-process.js';
import { kDefaultHandshakeTimeoutMs, type HandshakeSpec } from '../handshake/spec.js';
import { kDefaultMaxFrameBytes } from '../protocol/framing.js';
import { FileDiscovery } from '../discovery/files.js';
import { resolveVsockVm, topologyFor, transportFromRecord, transportsFromRecords } from '../discovery/topology.js';
import { checkInstanceName, checkServiceName, lookupAll, newInstanceId, watchRecords, type DiscoveryBackend, type TransportKind } from '../discovery/types.js';
import { moduleHref, type Address, type TransportDescriptor } from '../transport/descriptors.js';
import { resolveTls, type TlsOptions, type TlsSettings } from '../transport/tls-options.js';
import { isNamedPipe } from '../transport/unix.js';
import type { CallOptions, Handler, PeerClient, StreamOptions } from '../types.js';
import { PoolLease, type PoolOptions } from './pool.js';
import { IsolateRunner } from './isolate-runner.js';
import { RemoteTask, type RemoteTaskOptions } from './remote-task.js';
import { SupervisedListener, type ListenerStats, type ServedAddress } from './listener.js';
import { ListenerGroup } from './listener-group.js';
import { Channel, reconnectOptions, type BalancePolicy, type ClientState, type ClientStateEvent, type EndpointInfo, type EndpointStats, type ReconnectOptions, type Resolver } from './channel.js';
import { createProxy } from '../service/proxy.js';
import type { ProxyOptions, ServiceProxy, UntypedApi } from '../service/types.js';

/** How long a connection attempt may take before it fails with UNAVAILABLE, unless the node says otherwise. */
const kDefaultConnectTimeoutMs = 10_000;
/** NodeOptions.ringBytes unless given: each main <-> worker ring's data area. */
export const kDefaultRingBytes = 1024 * 1024;
/** How long close() waits for a stuck connection worker before terminating it. */
const kDefaultCloseTimeoutMs = 5000;
/**
 * How long start() waits for a listener or connection to be ready (0: no limit, when
 * connectTimeoutMs is 0). A listener: connectTimeoutMs, for its handler module to load and its
 * address to be bound. A connection: the limits its worker enforces itself (connecting, then a
 * handshake) and a second more, so that their more precise errors come first; what this catches
 * is a plugin module that never finishes loading, or a worker thread stuck in another's loop.
 */
function readyTimeout(role: 'listen' | 'connect', transport: TransportDescriptor, connectTimeoutMs: number, handshakeTimeoutMs: number): number {
  if (connectTimeoutMs === 0) return 0;
  if (role === 'listen') return connectTimeoutMs;
  const connect = transport.kind === 'vsock' ? Math.max(transport.connectTimeoutMs, connectTimeoutMs) : connectTimeoutMs;
  return connect + handshakeTimeoutMs + 1000;
}

function checkPoolOptions(pool: PoolOptions): void {
  if (pool === null || typeof pool !== 'object') throw new RpcError('INVALID_ARGUMENT', `pool takes { threads?, tasksPerThread? }, got ${String(pool)}`);
  // Checked only: PoolLease fills in the defaults (one thread per core, 1024 per thread).
  checkInteger('pool.threads', pool.threads, { fallback: 1, min: 1, max: 1024 });
  checkInteger('pool.tasksPerThread', pool.tasksPerThread, { fallback: 1, min: 1, max: 65536 });
}

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

export interface WaitForOptions {
  /** Give up with UNAVAILABLE after this long (default: wait forever). */
  timeoutMs?: number;
  /** The transport kind this client speaks (default 'tls' when `tls` is given, else 'tcp'); a record of another kind is refused. */
  transport?: TransportKind;
  /** TLS settings (as for `tcp(address, { tls })`) to reach a service published as `tls`. */
  tls?: TlsOptions | true;
  codec?: CodecDescriptor;
  /** Serves calls the server makes back over this connection. */
  handler?: Handler;
  /**
   * Reconnect (opt-in): a lost connection is tried again with backoff, re-resolving the name first,
   * and the client follows instances that come and go. Without it the client connects to what
   * the name lists when it appears, and a lost connection stays lost.
   */
  reconnect?: ReconnectOptions | boolean;
  /** How calls are spread over several endpoints (default 'round-robin'). */
  balance?: BalancePolicy;
}

export interface AuthHmacOptions {
  /** As a client, also require the server to prove it knows the secret (default false; any server of ours can). */
  mutual?: boolean;
}

export interface ServeOptions {
  codec?: CodecDescriptor;
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

export interface ConnectOptions {
  codec?: CodecDescriptor;
  /** Serves requests and events the server sends back over this connection (main thread). */
  handler?: Handler;
  /** Reconnect (opt-in): a lost or failed connection is tried again with backoff. `true` takes every default. */
  reconnect?: ReconnectOptions | boolean;
  /** How calls are spread over several endpoints (default 'round-robin'). */
  balance?: BalancePolicy;
}

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

/**
 * A handler: an object whose `onRequest`/`onEvent` run on this thread, or the URL (or absolute path)
 * of a module whose named export `handler` runs inside the connection worker, off this thread.
 */
export type HandlerInput = Handler | URL | string;

/**
 * Calls the server(s) this node connected to: one or more endpoints, each one connection, calls
 * spread over the ready ones. Every method goes through the channel's one "pick a ready session" path.
 */
export class Client<Req = unknown, Res = unknown, Ev = unknown> implements PeerClient<Req, Res, Ev> {
  readonly #channel: Channel;

  /** @internal */
  constructor(channel: Channel) {
    this.#channel = channel;
  }

  /**
   * Sends a request to a ready endpoint; resolves with the response or rejects with an RpcError
   * (TIMEOUT, CANCELLED, REMOTE, CLOSED, UNAVAILABLE while no connection is ready, …). An async
   * iterable request is sent as a stream of items.
   */
  call(request: Req | AsyncIterable<Req>, options?: CallOptions): Promise<Res> {
    // The plain call skips use()'s closure: one allocation fewer on the hottest path.
    const session = options === undefined ? this.#channel.readySession() : undefined;
    if (session !== undefined) return session.call(request);
    return this.#channel.use(options, (s, o) => s.call(request, o));
  }

  /**
   * Calls a handler that answers with an async iterable and yields its items, with flow control
   * (at most `window` unread). `break`, `return()`, `signal` or `timeoutMs` cancel it at the server.
   * The endpoint is picked like a call's; no endpoint ready makes the first `next()` reject.
   */
  stream<Item = Res>(request: Req | AsyncIterable<Req>, options?: StreamOptions): AsyncIterableIterator<Item> {
    return deferredIterator(this.#channel.use(options, async (session, o) => session.stream(request, o as StreamOptions | undefined)));
  }

  /** Sends a one-way event to a ready endpoint's `onEvent`; resolves once it is queued for writing, in order. */
  notify(event: Ev): Promise<void> {
    return this.#channel.use(undefined, (session) => session.notify(event));
  }

  /** A typed proxy of the service `Api` the server serves: `await api.echo('x')` calls its method `echo` (see `serveMethods`). */
  proxy<Api = UntypedApi>(options?: ProxyOptions): ServiceProxy<Api> {
    return createProxy<Api>(this, options);
  }

  /** Calls in flight, plus calls waiting for a connection. */
  get pending(): number {
    return this.#channel.pending;
  }

  /**
   * Why the client can take no more calls, once it cannot: closed, or, without reconnect, every
   * connection gone (e.g. code BUSY from a one-to-one server, CLOSED when the server went away).
   */
  get closedWith(): RpcError | undefined {
    return this.#channel.closedWith;
  }

  /** The client's connectivity: 'ready' when any endpoint is (see ClientState). */
  get state(): ClientState {
    return this.#channel.state;
  }

  /** Each endpoint's address, state and calls in flight, now. */
  get endpoints(): EndpointInfo[] {
    return this.#channel.endpoints;
  }

  /** `'state'`: `listener` hears every endpoint state change (see ClientStateEvent), synchronously; a throw becomes a process warning. */
  on(event: 'state', listener: (event: ClientStateEvent) => void): this {
    this.#channel.onState(checkStateListener(event, listener));
    return this;
  }

  /** Removes a `'state'` listener. */
  off(event: 'state', listener: (event: ClientStateEvent) => void): this {
    this.#channel.offState(checkStateListener(event, listener));
    return this;
  }
}

function checkStateListener(event: string, listener: unknown): (event: ClientStateEvent) => void {
  if (event !== 'state') throw new RpcError('INVALID_ARGUMENT', `a client emits only 'state' events, got ${JSON.stringify(event)}`);
  if (typeof listener !== 'function') throw new RpcError('INVALID_ARGUMENT', 'a state listener is a function');
  return listener as (event: ClientStateEvent) => void;
}

/** A started node. Close it (or `await using` it) to release its sockets and workers. */
export class RunningNode<Req = unknown, Res = unknown> {
  /** Addresses the node listens on, with port 0 resolved. */
  readonly addresses: Address[];
  readonly #client: Client<Req, Res> | undefined;
  readonly #channel: Channel | undefined;
  readonly #listeners: ServedAddress[];
  readonly #lease: PoolLease;
  readonly #unpublish: (() => Promise<void>) | undefined;
  #closing: Promise<void> | undefined;
  /** While a graceful close waits: ends the wait at once. */
  #cutGrace: (() => void) | undefined;

  /** @internal */
  constructor(listeners: ServedAddress[], channel: Channel | undefined, lease: PoolLease, unpublish?: () => Promise<void>) {
    this.#listeners = listeners;
    this.#channel = channel;
    this.#client = channel && new Client<Req, Res>(channel);
    this.#lease = lease;
    this.#unpublish = unpublish;
    this.addresses = listeners.flatMap((l) => (l.address ? [l.address] : []));
  }

  /** The client of the `connect()` transport. Throws when the node only serves. */
  get client(): Client<Req, Res> {
    if (this.#client === undefined) throw new RpcError('INVALID_ARGUMENT', 'this node has no client: call .connect() before .start()');
    return this.#client;
  }

  /**
   * Removes its discovery record, closes connections (pending calls reject with CLOSED), stops
   * listening, removes socket files. With `graceMs`, a graceful close first: it stops listening,
   * every served connection refuses new calls with UNAVAILABLE (not run, so safe to send again
   * elsewhere) and closes once it has answered the calls it serves, and the node's own client's
   * calls in flight may settle; after `graceMs` whatever is left is closed as without it. A
   * close() without `graceMs` during a graceful one cuts it short. Idempotent.
   */
  close(options: CloseOptions = {}): Promise<void> {
    let graceMs: number;
    try {
      graceMs = checkInteger('close() graceMs', options?.graceMs, { fallback: 0, min: 0, max: kMaxTimerMs });
    } catch (err) {
      return Promise.reject(err);
    }
    if (graceMs === 0) this.#cutGrace?.();
    this.#closing ??= (async () => {
      // The record goes first: nobody should find a server that is closing.
      await this.#unpublish?.().catch(() => {});
      if (graceMs > 0) await this.#drain(graceMs);
      // Connections first, so a node serving and calling itself closes its client before its server.
      await this.#channel?.close();
      for (const listener of [...this.#listeners].reverse()) await listener.close();
      await this.#lease.release();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * What the node carries now, read from its connection workers: per listener (in serve() order)
   * the connections open, those taken in and the frames since its worker task started, and its
   * restarts; per client endpoint its state, calls in flight and its connection's frames.
   * Rejects with CLOSED once close() has begun.
   */
  async stats(): Promise<NodeStats> {
    if (this.#closing !== undefined) throw new RpcError('CLOSED', 'the node was closed');
    const [listeners, endpoints] = await Promise.all([Promise.all(this.#listeners.map((l) => l.stats())), this.#channel?.stats() ?? []]);
    return { listeners, endpoints };
  }

  /** The graceful part of close(): until every listener's connections and the client's calls are done, or `graceMs` passed. */
  async #drain(graceMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const over = new Promise<void>((resolve) => {
      this.#cutGrace = resolve;
      timer = setTimeout(resolve, graceMs);
    });
    const drained = Promise.all([this.#channel?.drain(), ...this.#listeners.map((l) => l.drain())]);
    await Promise.race([drained.catch(() => {}), over]);
    clearTimeout(timer);
    this.#cutGrace = undefined;
  }
}

/** What RunningNode#stats reports. */
export interface NodeStats {
  /** One per serve(), in that order. */
  listeners: ListenerStats[];
  /** The client's endpoints (none without connect()). */
  endpoints: EndpointStats[];
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

interface ServeSpec {
  transport: TransportDescriptor;
  handler: HandlerInput;
  options: ServeOptions;
}

interface ConnectSpec {
  transports: TransportDescriptor[];
  options: ConnectOptions;
}

export class Node<Req = unknown, Res = unknown> {
  readonly #options: Required<Omit<NodeOptions, 'pool' | 'discovery' | 'idleTuning'>> & Pick<NodeOptions, 'pool' | 'discovery'>;
  /** NodeOptions.idleTuning, checked: the windows depend on the transport too (idleWindows). */
  readonly #idleTuning: IdleTuning;
  readonly #serve: ServeSpec[] = [];
  #connect: ConnectSpec | undefined;
  #publish: { name: string; instance: string | undefined } | undefined;
  #waitFor: { name: string; options: WaitForOptions; transport: TransportKind; tls: TlsSettings | undefined } | undefined;
  #oneToOne = false;
  #handshake: HandshakeSpec = { scheme: 'none' };
  /** Whether a handshake method was called: the default 'none' is not a choice, an explicit authDisabled() is. */
  #handshakeChosen = false;

  constructor(options: NodeOptions = {}) {
    const maxFrameBytes = checkInteger('maxFrameBytes', options.maxFrameBytes, { fallback: kDefaultMaxFrameBytes, min: 16, max: 0xffffffff });
    const ringBytes = checkInteger('ringBytes', options.ringBytes, { fallback: kDefaultRingBytes, min: 1, max: kMaxRingCapacity });
    const { idle, tuning } = checkIdle(options.idle, options.idleTuning);
    this.#idleTuning = tuning;
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
    this.#options = { maxFrameBytes, decodeLimits, ringBytes, idle, handshakeTimeoutMs, keepAliveMs, connectTimeoutMs, closeTimeoutMs, remoteStacks, pool: options.pool, discovery: options.discovery };
  }

  /** Listens on `transport`, or on each of several (`serve([tcp(a), unix(b)], handler)`), and answers with `handler`. */
  serve(transport: TransportDescriptor | TransportDescriptor[], handler: HandlerInput, options: ServeOptions = {}): this {
    if (this.#serve.length > 0) throw new RpcError('INVALID_ARGUMENT', 'serve() was already called on this node: give it an array of transports');
    const transports = asTransportList(transport, 'serve');
    if (transports.some((t) => t?.kind === 'isolate')) throw new RpcError('INVALID_ARGUMENT', 'an isolate() plugin can only be connected to: connect(isolate(url))');
    if (transports.some((t) => t?.kind === 'vsock' && t.vm !== undefined)) {
      throw new RpcError('INVALID_ARGUMENT', 'vsock({ vm }) names a peer to connect to; serve vsock({ port }) or vsock({ cid, port })');
    }
    if (transports.some((t) => t?.kind === 'tcp' && t.tls !== undefined && t.tls.cert === undefined)) {
      throw new RpcError('INVALID_ARGUMENT', 'a TLS server needs its certificate: tcp(address, { tls: { cert, key } }) (or certFile, keyFile)');
    }
    checkHandler(handler);
    for (const what of ['maxConcurrentCalls', 'maxConnections'] as const) {
      const max = options[what];
      if (max !== undefined && max !== Infinity) checkInteger(what, max, { fallback: 0, min: 1, max: 2 ** 31 - 1 });
    }
    const threads = checkInteger('threads', options.threads, { fallback: 1, min: 1, max: 1024 });
    if (threads > 1 && transports.some((t) => !(t?.kind === 'tcp' || (t?.kind === 'unix' && !isNamedPipe(t.path))))) {
      throw new RpcError('INVALID_ARGUMENT', 'serve(..., { threads }) shares tcp and Unix-socket listeners only');
    }
    for (const t of transports) this.#serve.push({ transport: t, handler, options });
    return this;
  }

  /**
   * Connects to `transport`, or to each of several endpoints of one service (calls are spread over
   * the ready ones); the running node's `client` calls it. `reconnect` makes lost connections come back.
   */
  connect<Q = Req, S = Res>(transport: TransportDescriptor | TransportDescriptor[], options: ConnectOptions = {}): Node<Q, S> {
    if (this.#connect || this.#waitFor) throw new RpcError('INVALID_ARGUMENT', 'a node connects once: connect() or waitFor()');
    const transports = asTransportList(transport, 'connect');
    if (transports.length > 1 && transports.some((t) => t?.kind === 'isolate')) throw new RpcError('INVALID_ARGUMENT', 'an isolate() plugin is connected to alone');
    if (options.handler !== undefined && (typeof options.handler !== 'object' || options.handler === null)) {
      throw new RpcError('INVALID_ARGUMENT', 'connect({ handler }) takes a handler object');
    }
    checkClientOptions(options);
    if (transports.some((t) => t?.kind === 'vsock' && t.cid === undefined && t.vm === undefined)) {
      throw new RpcError('INVALID_ARGUMENT', 'connecting over vsock needs the peer: vsock({ cid, port }) or vsock({ vm, port })');
    }
    this.#connect = { transports, options };
    return this as unknown as Node<Q, S>;
  }

  /**
   * Once listening, publishes the served addresses under `name` (the original's topology record,
   * one map entry per address), so `waitFor(name)` elsewhere finds them; closing the node removes
   * the record. `{ shared: true }`: one instance among several publishing the name.
   */
  publish(name: string, options: PublishOptions = {}): this {
    checkServiceName(name);
    if (options.instance !== undefined) checkInstanceName(options.instance);
    const instance = options.shared === true || options.instance !== undefined ? (options.instance ?? newInstanceId()) : undefined;
    this.#publish = { name, instance };
    return this;
  }

  /**
   * Instead of `connect(transport)`: waits until `name` is published, then connects to every address
   * its live records list (several instances, several endpoints each). A record of another transport
   * or codec kind is refused (INVALID_ARGUMENT); `timeoutMs` gives UNAVAILABLE. A node may publish
   * itself and wait for another at once.
   */
  waitFor<Q = Req, S = Res>(name: string, options: WaitForOptions = {}): Node<Q, S> {
    if (this.#connect || this.#waitFor) throw new RpcError('INVALID_ARGUMENT', 'a node connects once: connect() or waitFor()');
    checkClientOptions(options);
    timeLimit('waitFor timeoutMs', options.timeoutMs);
    const transport = options.transport ?? (options.tls !== undefined ? 'tls' : 'tcp');
    if (options.tls !== undefined && transport !== 'tls') {
      throw new RpcError('INVALID_ARGUMENT', `waitFor({ tls }) reaches services published as tls, not ${transport}`);
    }
    // Checked now (INVALID_ARGUMENT), not once the record turns up.
    const tls = transport === 'tls' ? resolveTls(options.tls ?? true) : undefined;
    this.#waitFor = { name: checkServiceName(name), options, transport, tls };
    return this as unknown as Node<Q, S>;
  }

  /** Serve one client at a time: a second gets BUSY while the first is connected. */
  oneToOne(): this {
    this.#oneToOne = true;
    return this;
  }

  /** Serve any number of clients at once (the default). */
  oneToMany(): this {
    this.#oneToOne = false;
    return this;
  }

  /** No handshake (the default): frames start with the first byte. Both ends must agree. */
  authDisabled(): this {
    return this.#setHandshake({ scheme: 'none' });
  }

  /** Run the v1 handshake with no credentials (checks the protocol version only), as server and as client. */
  handshakeVersionOnly(): this {
    return this.#setHandshake({ scheme: 'version', timeoutMs: this.#options.handshakeTimeoutMs });
  }

  /**
   * A node runs one scheme: a second call, authDisabled() included, would silently replace the
   * first (and could drop authentication).
   */
  #setHandshake(spec: HandshakeSpec): this {
    if (this.#handshakeChosen) {
      throw new RpcError('INVALID_ARGUMENT', `a node runs one handshake scheme: ${this.#handshake.scheme} is already set, so ${spec.scheme} cannot be (use another Node for another scheme)`);
    }
    this.#handshakeChosen = true;
    this.#handshake = spec;
    return this;
  }

  /**
   * Authenticate with a shared secret (HMAC-SHA256 over a fresh nonce per connection), as server and
   * as client. `{ mutual: true }`: as a client, also require the server to prove it knows the secret.
   */
  authHmac(secret: string | Uint8Array, options: AuthHmacOptions = {}): this {
    const bytes = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret instanceof Uint8Array ? Uint8Array.from(secret) : undefined;
    if (bytes === undefined || bytes.length === 0) throw new RpcError('INVALID_ARGUMENT', 'authHmac() takes a non-empty string or Uint8Array secret');
    return this.#setHandshake({ scheme: 'hmac', timeoutMs: this.#options.handshakeTimeoutMs, secret: bytes, mutual: options.mutual === true });
  }

  /**
   * Authenticate clients by the program they run (Linux): the server reads the client process's
   * image (its pid from the OS, over shm or loopback TCP) and checks the Ed25519 signature in
   * `<image>.sig` against `publicKey` (32 raw bytes or base64), which a node that serves must give.
   * As a client this node offers the scheme, and needs no key.
   */
  authSignedProcess(publicKey?: string | Uint8Array): this {
    const spec: HandshakeSpec = { scheme: 'signed-process', timeoutMs: this.#options.handshakeTimeoutMs };
    if (publicKey !== undefined) spec.publicKey = parsePublicKey(publicKey);
    return this.#setHandshake(spec);
  }

  /** Starts listening and connecting; resolves once both are done, rejects (having cleaned up) otherwise. */
  async start(): Promise<RunningNode<Req, Res>> {
    if (this.#serve.length === 0 && !this.#connect && !this.#waitFor) throw new RpcError('INVALID_ARGUMENT', 'nothing to start: call .serve() and/or .connect() first');
    if (this.#publish && this.#serve.length === 0) throw new RpcError('INVALID_ARGUMENT', 'publish() needs serve(): there is nothing to publish');
    if (this.#serve.length > 0 && this.#handshake.scheme === 'signed-process' && this.#handshake.publicKey === undefined) {
      throw new RpcError('INVALID_ARGUMENT', "serving with authSignedProcess() needs the public key clients' images are signed with: authSignedProcess(publicKey)");
    }
    const discovery = this.#options.discovery ?? new FileDiscovery();
    let unpublish: (() => Promise<void>) | undefined;
    const lease = new PoolLease(this.#options.pool);
    const listeners: ServedAddress[] = [];
    let channel: Channel | undefined;
    const { maxFrameBytes, decodeLimits, ringBytes, idle, keepAliveMs, connectTimeoutMs, handshakeTimeoutMs, closeTimeoutMs, remoteStacks } = this.#options;
    const base = { oneToOne: this.#oneToOne, handshake: this.#handshake, handshakeTimeoutMs, maxFrameBytes, decodeLimits, ringBytes, keepAliveMs, connectTimeoutMs, closeTimeoutMs, remoteStacks };
    try {
      for (const { transport, handler, options } of this.#serve) {
        const listening: RemoteTaskOptions = {
          ...base,
          idle: idleWindows(transport.kind, idle, this.#idleTuning),
          role: 'listen',
          transport,
          readyTimeoutMs: readyTimeout('listen', transport, connectTimeoutMs, handshakeTimeoutMs),
          codec: options.codec ?? msgpack(),
          maxConcurrentCalls: options.maxConcurrentCalls ?? Infinity,
          maxConnections: options.maxConnections ?? Infinity,
          handler: typeof handler === 'object' && !(handler instanceof URL) ? handler : moduleHref(handler),
        };
        const threads = options.threads ?? 1;
        listeners.push(threads > 1 ? await ListenerGroup.start(lease, listening, threads) : await SupervisedListener.start(lease, listening));
      }
      if (this.#publish) {
        const { name, instance } = this.#publish;
        const topology = topologyFor(listeners.flatMap((l) => (l.address ? [l.address] : [])), this.#serve[0].options.codec ?? msgpack());
        // This node's own token: another node of this process publishing the name is refused, and
        // closing this one removes only the record it wrote.
        const owner = newInstanceId();
        await discovery.publish(name, topology, { instance, owner });
        unpublish = () => discovery.unpublish(name, { instance, owner });
      }
      let connect = this.#connect;
      let resolver: Resolver | undefined;
      if (this.#waitFor) {
        const { name, options, transport, tls } = this.#waitFor;
        const codec = options.codec ?? msgpack();
        const expected = { transport, codec, tls };
        const record = await discovery.waitFor(name, { timeoutMs: options.timeoutMs });
        // The record found decides a kind mismatch, as it always did; then every live instance's endpoints count.
        const first = transportFromRecord(name, record, expected);
        const resolve = async () => transportsFromRecords(name, (await lookupAll(discovery, name)).map((e) => e.record), expected);
        const transports = await resolve().catch(() => []);
        connect = { transports: transports.length > 0 ? transports : [first], options: { codec, handler: options.handler, reconnect: options.reconnect, balance: options.balance } };
        resolver = {
          resolve,
          watch: (onChange, onError) =>
            watchRecords(
              discovery,
              name,
              (entries) => {
                try {
                  onChange(transportsFromRecords(name, entries.map((e) => e.record), expected));
                } catch (err) {
                  onError(err as RpcError);
                }
              },
              onError,
            ),
        };
      }
      if (connect) {
        const { transports, options } = connect;
        const open = async (wanted: TransportDescriptor) => {
          // A self-managed vsock client takes its VM's CID from the backend's host entry, at each attempt.
          const transport = await resolveVsockVm(wanted, discovery);
          const runner = transport.kind === 'isolate' ? new IsolateRunner() : lease;
          const closeTimeoutMs = transport.kind === 'isolate' ? transport.closeTimeoutMs : base.closeTimeoutMs;
          // An in-process isolate plugin is code this process loaded itself: there is nothing to authenticate.
          const handshake: HandshakeSpec = transport.kind === 'isolate' ? { scheme: 'none' } : base.handshake;
          const readyTimeoutMs = readyTimeout('connect', transport, connectTimeoutMs, handshakeTimeoutMs);
          return RemoteTask.start(runner, { ...base, idle: idleWindows(transport.kind, idle, this.#idleTuning), handshake, role: 'connect', transport, codec: options.codec ?? msgpack(), handler: options.handler, closeTimeoutMs, readyTimeoutMs });
        };
        channel = new Channel(transports, { open, reconnect: reconnectOptions(options.reconnect), balance: options.balance ?? 'round-robin', resolver });
        await channel.start();
      }
      return new RunningNode<Req, Res>(listeners, channel, lease, unpublish);
    } catch (err) {
      await unpublish?.().catch(() => {});
      await channel?.close().catch(() => {});
      for (const listener of listeners.reverse()) await listener.close().catch(() => {});
      await lease.release();
      throw err;
    }
  }
}

function asTransportList(transport: TransportDescriptor | TransportDescriptor[], method: string): TransportDescriptor[] {
  const list = Array.isArray(transport) ? transport : [transport];
  if (list.length === 0) throw new RpcError('INVALID_ARGUMENT', `${method}() takes a transport or a non-empty array of them`);
  for (const t of list) {
    if (t === null || typeof t !== 'object' || typeof (t as { kind?: unknown }).kind !== 'string') {
      throw new RpcError('INVALID_ARGUMENT', `${method}() takes transports made by tcp(), unix(), shm(), custom() or isolate()`);
    }
  }
  return list;
}

function checkClientOptions(options: { reconnect?: ReconnectOptions | boolean; balance?: BalancePolicy }): void {
  reconnectOptions(options.reconnect);
  if (options.balance !== undefined && options.balance !== 'round-robin' && options.balance !== 'least-in-flight') {
    throw new RpcError('INVALID_ARGUMENT', `balance must be 'round-robin' or 'least-in-flight', got ${JSON.stringify(options.balance)}`);
  }
}

/** An iterator over one that is still being obtained (the stream of a call that waits for an endpoint). */
function deferredIterator<T>(pending: Promise<AsyncIterableIterator<T>>): AsyncIterableIterator<T> {
  pending.catch(() => {}); // reported by next(), not as an unhandled rejection
  return {
    next: () => pending.then((it) => it.next()),
    return: (value?: unknown) =>
      pending.then(
        (it) => it.return!(value),
        () => ({ value: value as T, done: true as const }),
      ),
    throw: (err?: unknown) => pending.then((it) => it.throw!(err)),
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

function checkHandler(handler: HandlerInput): void {
  if (handler instanceof URL || typeof handler === 'string') return;
  if (handler === null || typeof handler !== 'object' || (typeof handler.onRequest !== 'function' && typeof handler.onEvent !== 'function')) {
    throw new RpcError('INVALID_ARGUMENT', 'a handler is an object with onRequest() and/or onEvent(), or the URL of a module exporting `handler`');
  }
}
