/**
 * The public entry: `new Node()` is a builder; `start()` turns it into a running node whose
 * listeners and connections live in worker threads.
 */
import { RpcError } from '../errors.js';
import { timeLimit } from '../limits.js';
import { idleWindows } from '../idle.js';
import { msgpack, type CodecDescriptor } from '../codec/index.js';
import { parsePublicKey } from '../handshake/signed-process.js';
import type { HandshakeSpec } from '../handshake/spec.js';
import { FileDiscovery } from '../discovery/files.js';
import { waitForEndpoints, type NameResolver } from '../discovery/resolver.js';
import { resolveVsockVm, topologyFor } from '../discovery/topology.js';
import { checkInstanceName, checkServiceName, newInstanceId, type DiscoveryBackend, type TransportKind } from '../discovery/types.js';
import { moduleHref, type TransportDescriptor } from '../transport/descriptors.js';
import { resolveTls, type TlsSettings } from '../transport/tls-options.js';
import { isNamedPipe } from '../transport/unix.js';
import { PoolLease } from './pool.js';
import { IsolateRunner } from './isolate-runner.js';
import { RemoteTask, type RemoteTaskOptions } from './remote-task.js';
import type { TaskConfig } from '../bridge/control.js';
import { SupervisedListener, type ServedAddress } from './listener.js';
import { ListenerGroup } from './listener-group.js';
import { Channel } from './channel.js';
import { reconnectOptions } from './reconnect.js';
import { RunningNode } from './running-node.js';
import { checkClientOptions, checkHandler, checkServeOptions, resolveNodeOptions, type AuthHmacOptions, type ConnectOptions, type HandlerInput, type NodeOptions, type PublishOptions, type ResolvedNodeOptions, type ServeOptions, type WaitForOptions } from './options.js';

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

interface ServeSpec {
  transport: TransportDescriptor;
  handler: HandlerInput;
  options: ServeOptions;
}

interface ConnectSpec {
  transports: TransportDescriptor[];
  options: ConnectOptions;
}

/** Describes a node (what it serves, what it connects to, how it authenticates); `start()` runs it. */
export class Node<Req = unknown, Res = unknown> {
  readonly #options: ResolvedNodeOptions;
  readonly #serve: ServeSpec[] = [];
  #connect: ConnectSpec | undefined;
  #publish: { name: string; instance: string | undefined } | undefined;
  #waitFor: { name: string; options: WaitForOptions; transport: TransportKind; tls: TlsSettings | undefined } | undefined;
  #oneToOne = false;
  #handshake: HandshakeSpec = { scheme: 'none' };
  /** Whether a handshake method was called: the default 'none' is not a choice, an explicit authDisabled() is. */
  #handshakeChosen = false;

  constructor(options: NodeOptions = {}) {
    this.#options = resolveNodeOptions(options);
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
    const threads = checkServeOptions(options);
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
    try {
      for (const spec of this.#serve) listeners.push(await this.#listen(lease, spec));
      if (this.#publish) unpublish = await this.#publishOn(discovery, listeners);
      channel = await this.#channel(lease, discovery);
      await channel?.start();
      return new RunningNode<Req, Res>(listeners, channel, lease, unpublish);
    } catch (err) {
      await unpublish?.().catch(() => {});
      await channel?.close().catch(() => {});
      for (const listener of listeners.reverse()) await listener.close().catch(() => {});
      await lease.release();
      throw err;
    }
  }

  /** The configuration of one task of this node, listener or connection, on `transport`. */
  #taskConfig(role: 'listen' | 'connect', transport: TransportDescriptor, codec: CodecDescriptor | undefined): TaskConfig {
    const { maxFrameBytes, decodeLimits, keepAliveMs, connectTimeoutMs, handshakeTimeoutMs, remoteStacks, idle, idleTuning } = this.#options;
    return {
      role,
      transport,
      codec: codec ?? msgpack(),
      handshake: this.#handshake,
      handshakeTimeoutMs,
      maxFrameBytes,
      decodeLimits,
      remoteStacks,
      idle: idleWindows(transport.kind, idle, idleTuning),
      keepAliveMs,
      connectTimeoutMs,
    };
  }

  /** Starts the listener task(s) of one served address. */
  async #listen(lease: PoolLease, { transport, handler, options }: ServeSpec): Promise<ServedAddress> {
    const { ringBytes, closeTimeoutMs, connectTimeoutMs, handshakeTimeoutMs } = this.#options;
    const listening: RemoteTaskOptions = {
      config: {
        ...this.#taskConfig('listen', transport, options.codec),
        maxConcurrentCalls: options.maxConcurrentCalls ?? Infinity,
        maxConnections: this.#oneToOne ? 'one-to-one' : (options.maxConnections ?? Infinity),
      },
      handler: typeof handler === 'object' && !(handler instanceof URL) ? handler : moduleHref(handler),
      ringBytes,
      closeTimeoutMs,
      readyTimeoutMs: readyTimeout('listen', transport, connectTimeoutMs, handshakeTimeoutMs),
    };
    const threads = options.threads ?? 1;
    return threads > 1 ? ListenerGroup.start(lease, listening, threads) : SupervisedListener.start(lease, listening);
  }

  /** Publishes the served addresses under the publish() name; resolves to the removal of that record. */
  async #publishOn(discovery: DiscoveryBackend, listeners: ServedAddress[]): Promise<() => Promise<void>> {
    const { name, instance } = this.#publish!;
    const topology = topologyFor(listeners.flatMap((l) => (l.address ? [l.address] : [])), this.#serve[0].options.codec ?? msgpack());
    // This node's own token: another node of this process publishing the name is refused, and
    // closing this one removes only the record it wrote.
    const owner = newInstanceId();
    await discovery.publish(name, topology, { instance, owner });
    return () => discovery.unpublish(name, { instance, owner });
  }

  /**
   * The client's channel, not yet started: to the connect() transports, or to the endpoints the
   * waitFor() name lists once it is published. None when the node only serves.
   */
  async #channel(lease: PoolLease, discovery: DiscoveryBackend): Promise<Channel | undefined> {
    let connect = this.#connect;
    let resolver: NameResolver | undefined;
    if (this.#waitFor) {
      const { name, options, transport, tls } = this.#waitFor;
      const codec = options.codec ?? msgpack();
      const found = await waitForEndpoints(discovery, name, { transport, codec, tls }, { timeoutMs: options.timeoutMs });
      connect = { transports: found.transports, options: { ...options, codec } };
      resolver = found.resolver;
    }
    if (!connect) return undefined;
    const { transports, options } = connect;
    const { ringBytes, connectTimeoutMs, handshakeTimeoutMs } = this.#options;
    const open = async (wanted: TransportDescriptor) => {
      // A self-managed vsock client takes its VM's CID from the backend's host entry, at each attempt.
      const transport = await resolveVsockVm(wanted, discovery);
      const isolate = transport.kind === 'isolate';
      const config = this.#taskConfig('connect', transport, options.codec);
      // An in-process isolate plugin is code this process loaded itself: there is nothing to authenticate.
      if (isolate) config.handshake = { scheme: 'none' };
      return RemoteTask.start(isolate ? new IsolateRunner() : lease, {
        config,
        handler: options.handler,
        ringBytes,
        closeTimeoutMs: isolate ? transport.closeTimeoutMs : this.#options.closeTimeoutMs,
        readyTimeoutMs: readyTimeout('connect', transport, connectTimeoutMs, handshakeTimeoutMs),
      });
    };
    return new Channel(transports, { open, reconnect: reconnectOptions(options.reconnect), balance: options.balance ?? 'round-robin', resolver });
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
