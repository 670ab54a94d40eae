/**
 * The public entry: `new Node()` is a builder; `start()` turns it into a running node whose
 * listeners and connections live in worker threads.
 */
import { pathToFileURL } from 'node:url';
import { RpcError } from '../errors.js';
import { msgpack, type CodecDescriptor } from '../codec/index.js';
import { parsePublicKey } from '../handshake/signed-process.js';
import { kDefaultHandshakeTimeoutMs, type HandshakeSpec } from '../handshake/spec.js';
import { kDefaultMaxFrameBytes } from '../protocol/framing.js';
import { FileDiscovery } from '../discovery/files.js';
import { topologyFor, transportFromRecord } from '../discovery/topology.js';
import { checkServiceName, type DiscoveryBackend, type TransportKind } from '../discovery/types.js';
import type { Address, TransportDescriptor } from '../transport/descriptors.js';
import { resolveTls, type TlsOptions, type TlsSettings } from '../transport/tls-options.js';
import type { CallOptions, Handler, PeerClient } from '../types.js';
import { PoolLease, type PoolOptions } from './pool.js';
import { IsolateRunner } from './isolate-runner.js';
import { RemoteTask } from './remote-task.js';

export interface NodeOptions {
  /** Largest frame body accepted or sent, in bytes (default 64 MiB). A larger incoming frame closes that connection with FRAME_TOO_LARGE. */
  maxFrameBytes?: number;
  /** Size of each ring between the main thread and a connection worker (default 1 MiB; larger messages are chunked). */
  ringBytes?: number;
  /**
   * Opt-in: after the main thread or a connection worker drains its ring, busy-poll this many µs
   * for more before sleeping (default 0). Saves a thread wake-up per hop, so it cuts round trips,
   * but each waiting side burns a core for that long: only for machines with cores to spare.
   * The main thread's event loop does not run while it spins.
   */
  spinMicros?: number;
  /**
   * Keepalive: a connection that has received nothing for this many ms is pinged (by its worker,
   * so a busy main thread does not matter); if another interval passes without a word from the
   * peer, it is closed and its calls reject with CLOSED. Detects a silent dead peer, e.g. a
   * half-open TCP connection or a stopped process. Default 0: off. Both ends answer pings always.
   */
  keepAliveMs?: number;
  /** Time limit of each handshake step, in ms (default 5000); a peer slower than this is refused with HANDSHAKE_FAILED. */
  handshakeTimeoutMs?: number;
  /** Where publish() writes and waitFor() looks (default: the file backend in $XDG_RUNTIME_DIR/ogurpchik, else <tmp>/ogurpchik-<uid>). */
  discovery?: DiscoveryBackend;
  /** The process-wide worker pool's size; applied by the first node started in the process. */
  pool?: PoolOptions;
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
}

export interface AuthHmacOptions {
  /** As a client, also require the server to prove it knows the secret (default false; any server of ours can). */
  mutual?: boolean;
}

export interface ServeOptions {
  codec?: CodecDescriptor;
}

export interface ConnectOptions {
  codec?: CodecDescriptor;
  /** Serves requests and events the server sends back over this connection (main thread). */
  handler?: Handler;
}

/**
 * A handler: an object whose `onRequest`/`onEvent` run on this thread, or the URL (or absolute path)
 * of a module whose named export `handler` runs inside the connection worker, off this thread.
 */
export type HandlerInput = Handler | URL | string;

/** Calls the server this node connected to. */
export class Client<Req = unknown, Res = unknown, Ev = unknown> implements PeerClient<Req, Res, Ev> {
  readonly #task: RemoteTask;

  /** @internal */
  constructor(task: RemoteTask) {
    this.#task = task;
  }

  /** Sends a request; resolves with the response or rejects with an RpcError (TIMEOUT, CANCELLED, REMOTE, CLOSED, …). */
  call(request: Req, options?: CallOptions): Promise<Res> {
    return this.#task.clientSession.call(request, options);
  }

  /** Sends a one-way event to the server's `onEvent`; resolves once it is queued for writing, in order. */
  notify(event: Ev): Promise<void> {
    return this.#task.clientSession.notify(event);
  }

  /** Calls in flight. */
  get pending(): number {
    return this.#task.clientSession.pendingCount;
  }

  /** Why the connection closed, once it has (e.g. code BUSY from a one-to-one server, CLOSED when the server went away). */
  get closedWith(): RpcError | undefined {
    return this.#task.clientSession.closedWith;
  }
}

/** A started node. Close it (or `await using` it) to release its sockets and workers. */
export class RunningNode<Req = unknown, Res = unknown> {
  /** Addresses the node listens on, with port 0 resolved. */
  readonly addresses: Address[];
  readonly #client: Client<Req, Res> | undefined;
  readonly #tasks: RemoteTask[];
  readonly #lease: PoolLease;
  readonly #unpublish: (() => Promise<void>) | undefined;
  #closing: Promise<void> | undefined;

  /** @internal */
  constructor(tasks: RemoteTask[], client: Client<Req, Res> | undefined, lease: PoolLease, unpublish?: () => Promise<void>) {
    this.#tasks = tasks;
    this.#client = client;
    this.#lease = lease;
    this.#unpublish = unpublish;
    this.addresses = tasks.flatMap((t) => (t.address ? [t.address] : []));
  }

  /** The client of the `connect()` transport. Throws when the node only serves. */
  get client(): Client<Req, Res> {
    if (this.#client === undefined) throw new RpcError('INVALID_ARGUMENT', 'this node has no client: call .connect() before .start()');
    return this.#client;
  }

  /** Removes its discovery record, closes connections (pending calls reject with CLOSED), stops listening, removes socket files. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      // The record goes first: nobody should find a server that is closing.
      await this.#unpublish?.().catch(() => {});
      // Connections first, so a node serving and calling itself closes its client before its server.
      for (const task of [...this.#tasks].reverse()) await task.close();
      await this.#lease.release();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

interface ServeSpec {
  transport: TransportDescriptor;
  handler: HandlerInput;
  options: ServeOptions;
}

interface ConnectSpec {
  transport: TransportDescriptor;
  options: ConnectOptions;
}

export class Node<Req = unknown, Res = unknown> {
  readonly #options: Required<Omit<NodeOptions, 'pool' | 'discovery'>> & Pick<NodeOptions, 'pool' | 'discovery'>;
  #serve: ServeSpec | undefined;
  #connect: ConnectSpec | undefined;
  #publish: string | undefined;
  #waitFor: { name: string; options: WaitForOptions; transport: TransportKind; tls: TlsSettings | undefined } | undefined;
  #oneToOne = false;
  #handshake: HandshakeSpec = { scheme: 'none' };

  constructor(options: NodeOptions = {}) {
    const maxFrameBytes = options.maxFrameBytes ?? kDefaultMaxFrameBytes;
    const ringBytes = options.ringBytes ?? 1024 * 1024;
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 16 || maxFrameBytes > 0xffffffff) {
      throw new RpcError('INVALID_ARGUMENT', `maxFrameBytes must be an integer from 16 to 2^32-1, got ${maxFrameBytes}`);
    }
    const spinMicros = options.spinMicros ?? 0;
    if (!(spinMicros >= 0 && spinMicros <= 1_000_000)) throw new RpcError('INVALID_ARGUMENT', `spinMicros must be from 0 to 1e6, got ${spinMicros}`);
    const handshakeTimeoutMs = options.handshakeTimeoutMs ?? kDefaultHandshakeTimeoutMs;
    if (!(Number.isInteger(handshakeTimeoutMs) && handshakeTimeoutMs >= 1 && handshakeTimeoutMs <= 2 ** 31 - 1)) {
      throw new RpcError('INVALID_ARGUMENT', `handshakeTimeoutMs must be a positive integer, got ${handshakeTimeoutMs}`);
    }
    const keepAliveMs = options.keepAliveMs ?? 0;
    if (!(Number.isInteger(keepAliveMs) && keepAliveMs >= 0 && keepAliveMs <= 2 ** 31 - 1)) {
      throw new RpcError('INVALID_ARGUMENT', `keepAliveMs must be a non-negative integer, got ${keepAliveMs}`);
    }
    this.#options = { maxFrameBytes, ringBytes, spinMicros, handshakeTimeoutMs, keepAliveMs, pool: options.pool, discovery: options.discovery };
  }

  /** Listens on `transport` and answers with `handler`. */
  serve(transport: TransportDescriptor, handler: HandlerInput, options: ServeOptions = {}): this {
    if (this.#serve) throw new RpcError('INVALID_ARGUMENT', 'serve() was already called on this node');
    if (transport?.kind === 'isolate') throw new RpcError('INVALID_ARGUMENT', 'an isolate() plugin can only be connected to: connect(isolate(url))');
    if (transport?.kind === 'tcp' && transport.tls !== undefined && transport.tls.cert === undefined) {
      throw new RpcError('INVALID_ARGUMENT', 'a TLS server needs its certificate: tcp(address, { tls: { cert, key } }) (or certFile, keyFile)');
    }
    checkHandler(handler);
    this.#serve = { transport, handler, options };
    return this;
  }

  /** Connects to `transport`; the running node's `client` calls it. */
  connect<Q = Req, S = Res>(transport: TransportDescriptor, options: ConnectOptions = {}): Node<Q, S> {
    if (this.#connect || this.#waitFor) throw new RpcError('INVALID_ARGUMENT', 'a node connects once: connect() or waitFor()');
    if (options.handler !== undefined && (typeof options.handler !== 'object' || options.handler === null)) {
      throw new RpcError('INVALID_ARGUMENT', 'connect({ handler }) takes a handler object');
    }
    this.#connect = { transport, options };
    return this as unknown as Node<Q, S>;
  }

  /**
   * Once listening, publishes the served address under `name` (the original's topology record),
   * so `waitFor(name)` elsewhere finds it; closing the node removes the record.
   */
  publish(name: string): this {
    this.#publish = checkServiceName(name);
    return this;
  }

  /**
   * Instead of `connect(transport)`: waits until `name` is published, then connects to the address
   * in its record. A record of another transport or codec kind is refused (INVALID_ARGUMENT);
   * `timeoutMs` gives UNAVAILABLE. A node may publish itself and wait for another at once.
   */
  waitFor<Q = Req, S = Res>(name: string, options: WaitForOptions = {}): Node<Q, S> {
    if (this.#connect || this.#waitFor) throw new RpcError('INVALID_ARGUMENT', 'a node connects once: connect() or waitFor()');
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
    this.#handshake = { scheme: 'none' };
    return this;
  }

  /** Run the v1 handshake with no credentials (checks the protocol version only), as server and as client. */
  handshakeVersionOnly(): this {
    this.#handshake = { scheme: 'version', timeoutMs: this.#options.handshakeTimeoutMs };
    return this;
  }

  /**
   * Authenticate with a shared secret (HMAC-SHA256 over a fresh nonce per connection), as server and
   * as client. `{ mutual: true }`: as a client, also require the server to prove it knows the secret.
   */
  authHmac(secret: string | Uint8Array, options: AuthHmacOptions = {}): this {
    const bytes = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret instanceof Uint8Array ? Uint8Array.from(secret) : undefined;
    if (bytes === undefined || bytes.length === 0) throw new RpcError('INVALID_ARGUMENT', 'authHmac() takes a non-empty string or Uint8Array secret');
    this.#handshake = { scheme: 'hmac', timeoutMs: this.#options.handshakeTimeoutMs, secret: bytes, mutual: options.mutual === true };
    return this;
  }

  /**
   * Authenticate clients by the program they run (Linux): the server reads the client process's
   * image (its pid from the OS, over shm or loopback TCP) and checks the Ed25519 signature in
   * `<image>.sig` against `publicKey` (32 raw bytes or base64). As a client this node offers the scheme.
   */
  authSignedProcess(publicKey: string | Uint8Array): this {
    this.#handshake = { scheme: 'signed-process', timeoutMs: this.#options.handshakeTimeoutMs, publicKey: parsePublicKey(publicKey) };
    return this;
  }

  /** Starts listening and connecting; resolves once both are done, rejects (having cleaned up) otherwise. */
  async start(): Promise<RunningNode<Req, Res>> {
    if (!this.#serve && !this.#connect && !this.#waitFor) throw new RpcError('INVALID_ARGUMENT', 'nothing to start: call .serve() and/or .connect() first');
    if (this.#publish && !this.#serve) throw new RpcError('INVALID_ARGUMENT', 'publish() needs serve(): there is nothing to publish');
    const discovery = this.#options.discovery ?? new FileDiscovery();
    let unpublish: (() => Promise<void>) | undefined;
    const lease = new PoolLease(this.#options.pool);
    const tasks: RemoteTask[] = [];
    const { maxFrameBytes, ringBytes, spinMicros, keepAliveMs, handshakeTimeoutMs } = this.#options;
    const base = { oneToOne: this.#oneToOne, handshake: this.#handshake, handshakeTimeoutMs, maxFrameBytes, ringBytes, spinMicros, keepAliveMs };
    try {
      if (this.#serve) {
        const { transport, handler, options } = this.#serve;
        tasks.push(
          await RemoteTask.start(lease, {
            ...base,
            role: 'listen',
            transport,
            codec: options.codec ?? msgpack(),
            handler: typeof handler === 'object' && !(handler instanceof URL) ? handler : moduleHref(handler),
          }),
        );
        if (this.#publish) {
          const name = this.#publish;
          await discovery.publish(name, topologyFor(tasks[0].address ? [tasks[0].address] : [], options.codec ?? msgpack()));
          unpublish = () => discovery.unpublish(name);
        }
      }
      let client: Client<Req, Res> | undefined;
      let connect = this.#connect;
      if (this.#waitFor) {
        const { name, options, transport, tls } = this.#waitFor;
        const codec = options.codec ?? msgpack();
        const record = await discovery.waitFor(name, { timeoutMs: options.timeoutMs });
        connect = { transport: transportFromRecord(name, record, { transport, codec, tls }), options: { codec, handler: options.handler } };
      }
      if (connect) {
        const { transport, options } = connect;
        const runner = transport.kind === 'isolate' ? new IsolateRunner() : lease;
        const closeTimeoutMs = transport.kind === 'isolate' ? transport.closeTimeoutMs : undefined;
        // An in-process isolate plugin is code this process loaded itself: there is nothing to authenticate.
        const handshake: HandshakeSpec = transport.kind === 'isolate' ? { scheme: 'none' } : base.handshake;
        const task = await RemoteTask.start(runner, { ...base, handshake, role: 'connect', transport, codec: options.codec ?? msgpack(), handler: options.handler, closeTimeoutMs });
        tasks.push(task);
        client = new Client(task);
      }
      return new RunningNode<Req, Res>(tasks, client, lease, unpublish);
    } catch (err) {
      await unpublish?.().catch(() => {});
      for (const task of tasks.reverse()) await task.close().catch(() => {});
      await lease.release();
      throw err;
    }
  }
}

function checkHandler(handler: HandlerInput): void {
  if (handler instanceof URL || typeof handler === 'string') return;
  if (handler === null || typeof handler !== 'object' || (typeof handler.onRequest !== 'function' && typeof handler.onEvent !== 'function')) {
    throw new RpcError('INVALID_ARGUMENT', 'a handler is an object with onRequest() and/or onEvent(), or the URL of a module exporting `handler`');
  }
}

function moduleHref(handler: URL | string): string {
  if (handler instanceof URL) return handler.href;
  return /^[a-z][a-z0-9+.-]*:/i.test(handler) && !/^[a-z]:\\/i.test(handler) ? handler : pathToFileURL(handler).href;
}
