/**
 * One long-lived piscina task: a listener with its accepted connections, or one outgoing
 * connection. It answers the main thread's `TaskControl` over the control channel of the ring
 * pair its thread shares with the main thread (../bridge/worker-hub.ts), and moves envelope bodies
 * to and from the main thread through that pair. How it starts is in ./open.ts, its connection counts in
 * ./task-connections.ts, what it tells the main thread of its relayed connections in ./main-relay.ts.
 */
import { threadId } from 'node:worker_threads';
import { RpcError, fromWireError, messageOf, sendsStacks, toWireError, type WireError } from '../errors.js';
import { createCodec, type Codec } from '../codec/index.js';
import { clientHandshake } from '../handshake/client.js';
import { serverHandshake } from '../handshake/server.js';
import { kindOf } from '../protocol/envelope.js';
import { ControlKind, decodeControl, kHubWord, kThreadWord, type ReadyResult, type TaskControl, type TaskSpec } from '../bridge/control.js';
import { Session } from '../session/session.js';
import type { AdapterContext } from '../transport/adapters.js';
import { formatAddress, type Address } from '../transport/descriptors.js';
import type { ByteStream, StreamListener } from '../transport/types.js';
import { connectTo, listenOn, loadHandler, peerOf, peerPidOf } from './open.js';
import { TaskConnections } from './task-connections.js';
import { MainRelay } from './main-relay.js';
import type { Handler } from '../types.js';
import { deferred, type Deferred } from '../deferred.js';
import { AwakeWindow } from './awake.js';
import { Connection, type ConnectionHost } from './connection.js';
import { WorkerHub, type HubMember } from '../bridge/worker-hub.js';


export class ConnectionTask implements ConnectionHost, HubMember {
  readonly codec: Codec;
  readonly maxFrameBytes: number;
  readonly sendStacks: boolean;
  readonly readsWaitForWrites: boolean;
  readonly expectsNoHello: boolean;
  readonly #spec: TaskSpec;
  /** Its connections, open and in their handshake, and their counts. */
  readonly #conns: TaskConnections;
  /** The ring pair this thread shares with the main thread, which this task's connections ride. */
  readonly #hub: WorkerHub;
  readonly ringWindows: { spinMicros: number; pollMicros: number };
  readonly key: number;
  readonly control: TaskControl;
  /** After the peer's bytes, this worker's loop stays awake for the poll window (see ./awake.ts). */
  readonly #awake: AwakeWindow;
  #keepAliveTimer: ReturnType<typeof setInterval> | undefined;
  /** How its connections reach the main thread, when they are relayed there (its callers or handler run there); undefined otherwise. */
  readonly #relay: MainRelay | undefined;
  /** IdleWindows.clientPollMicros in ms for a client connection (connect), else 0. */
  readonly #clientPollMs: number;
  #handler: Handler | undefined;
  #listener: StreamListener | undefined;
  #closing = false;
  /** Set by drain(): accept nothing more. */
  #draining = false;
  /** The listener's close once it began (drain() or close()), which close() awaits. */
  #listenerClosed: Promise<void> | undefined;
  /** drain()'s promise, settled by closed() once the last connection has gone. */
  #drained: Deferred | undefined;
  #ready: Promise<ReadyResult>;
  readonly #done: Promise<void>;
  #finish!: () => void;

  constructor(spec: TaskSpec) {
    this.#spec = spec;
    Atomics.store(spec.thread, kThreadWord, threadId);
    this.codec = createCodec(spec.codec, spec.decodeLimits);
    this.maxFrameBytes = spec.maxFrameBytes;
    this.sendStacks = sendsStacks(spec.remoteStacks, spec.transport.kind);
    this.readsWaitForWrites = spec.role === 'listen';
    this.expectsNoHello = spec.role === 'connect' && spec.handshake.scheme === 'none';
    this.#done = new Promise((resolve) => (this.#finish = resolve));
    this.#conns = new TaskConnections(spec);
    // A stream over shm rings polls them itself (its reader has the same window).
    this.#awake = new AwakeWindow(spec.transport.kind === 'shm' ? 0 : spec.idle.peerPollMicros);
    const clientPollMicros = spec.role === 'connect' ? spec.idle.clientPollMicros : 0;
    this.#clientPollMs = clientPollMicros / 1000;
    this.ringWindows = {
      spinMicros: spec.idle.spinMicros,
      // A client's worker also looks on after the caller's messages: its calls come in bursts.
      pollMicros: Math.max(spec.idle.pollMicros, clientPollMicros),
    };
    this.key = spec.key;
    this.control = {
      ready: () => this.#ready,
      close: () => this.close(),
      drain: () => this.#drain(),
      stats: () => this.#conns.stats(),
      takeShm: (id) => this.#relay?.take(id),
    };
    this.#hub = WorkerHub.join(spec.hub, this);
    Atomics.store(spec.thread, kHubWord, this.#hub.id);
    Atomics.notify(spec.thread, kHubWord);
    // A connect task always relays (the caller is on the main thread); a listener when its handler is there.
    if (spec.role === 'connect' || spec.handler.kind === 'main') {
      const hub = this.#hub;
      this.#relay = new MainRelay({ hub, key: spec.key, transport: spec.transport, direct: spec.shmDirect === true });
      this.relay = (connId, body) => hub.relay(connId, body);
      this.relayFlushed = () => hub.toMain.flushed();
    }
    this.#ready = this.#open();
    if (spec.keepAliveMs > 0) {
      const interval = spec.keepAliveMs;
      this.#keepAliveTimer = setInterval(() => {
        const now = performance.now();
        for (const conn of this.#conns.open.values()) conn.keepAlive(now, interval);
      }, Math.max(1, Math.floor(interval / 2)));
    }
  }

  relay?: (connId: number, body: Uint8Array) => boolean;
  relayFlushed?: () => Promise<void>;

  /** Resolves when the task has closed: piscina then counts it finished. */
  get done(): Promise<void> {
    return this.#done;
  }

  markDirty(conn: Connection): void {
    this.#hub.markDirty(conn);
  }

  /** A record from the main thread for connection `id` of this task. */
  fromMain(id: number, bytes: Uint8Array, owned: boolean): void {
    const conn = this.#conns.open.get(id);
    if (conn === undefined) return;
    if (kindOf(bytes) === ControlKind.CloseConn) this.#closeFromMain(conn, bytes);
    else conn.send(bytes, owned);
  }

  closed(conn: Connection, reason: RpcError): void {
    this.#hub.forget(conn);
    // Never opened (refused, or its handshake failed): nobody else knew of it, nobody is told.
    if (!this.#conns.release(conn)) return;
    this.#conns.retire(conn);
    this.#relay?.closed(conn, reason);
    this.#settleDrain();
    if (this.#spec.role === 'connect' || (this.#closing && this.#conns.open.size === 0)) void this.close();
  }

  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      this.#awake.stop();
      // Not awaited yet: a net server's close() completes only once its connections are gone.
      const listenerClosed = this.#stopListening();
      const reason = new RpcError('CLOSED', 'the node was closed');
      for (const conn of this.#conns.handshaking) conn.close(reason, false);
      for (const conn of this.#conns.open.values()) conn.close(reason, true);
      await Promise.race([
        new Promise<void>((resolve) => {
          const check = () => (this.#conns.open.size === 0 ? resolve() : setTimeout(check, 5));
          check();
        }),
        new Promise<void>((resolve) => setTimeout(resolve, 3000).unref()),
      ]);
      await listenerClosed;
      if (this.#keepAliveTimer !== undefined) clearInterval(this.#keepAliveTimer);
      // After the records of its connections' closes: the last task to leave closes the pair.
      this.#hub.leave(this);
      setImmediate(() => this.#finish());
    }
    return this.#done;
  }

  #drain(): Promise<void> {
    if (!this.#draining && !this.#closing) {
      this.#draining = true;
      this.#drained = deferred();
      void this.#stopListening();
      for (const conn of this.#conns.handshaking) conn.close(new RpcError('UNAVAILABLE', 'the server is closing'), false);
      const reason = new RpcError('CLOSED', 'the server closed');
      for (const conn of this.#conns.open.values()) conn.drain(reason);
      this.#settleDrain();
    }
    return this.#drained?.promise ?? this.#done;
  }

  /** Stops accepting, once: closes the listener (if any) and keeps the promise of its close. */
  #stopListening(): Promise<void> | undefined {
    const listener = this.#listener;
    this.#listener = undefined;
    if (listener !== undefined) this.#listenerClosed = listener.close().catch(() => {});
    return this.#listenerClosed;
  }

  /** ControlKind.CloseConn from the main thread: the connection's session there has sent all it will; close it and tell the peer why. */
  #closeFromMain(conn: Connection, bytes: Uint8Array): void {
    conn.close(fromWireError(decodeControl(bytes) as WireError), true);
  }

  /** drain() is done once no connection is left, open or in its handshake. */
  #settleDrain(): void {
    if (this.#conns.none) this.#drained?.resolve();
  }

  heard(): void {
    this.#awake.heard();
    // A client's worker hands the server's answers to the caller, whose next calls usually follow
    // within tens of µs: look for them rather than sleep and be woken (see clientPollMicros).
    if (this.#clientPollMs > 0) this.#hub.expectWithin(this.#clientPollMs);
  }

  #adapterContext(): AdapterContext {
    const spec = this.#spec;
    return { handshakeTimeoutMs: spec.handshakeTimeoutMs, idle: spec.idle, listenFd: spec.shared?.listenFd };
  }

  async #open(): Promise<ReadyResult> {
    try {
      const spec = this.#spec;
      if (spec.handler.kind === 'module') this.#handler = await loadHandler(spec.handler.url);
      // The main thread gave up waiting (start timed out) while a module loaded: go no further.
      this.#throwIfClosing();
      if (spec.role === 'listen') {
        const listener = await listenOn(spec.transport, this.#adapterContext(), (stream) => this.#accept(stream));
        if (this.#closing) await listener.close().catch(() => {});
        this.#throwIfClosing();
        this.#listener = listener;
        return { ok: true, address: listener.address as Address };
      }
      const stream = await connectTo(spec.transport, this.#adapterContext(), spec.connectTimeoutMs);
      if (this.#closing) stream.destroy();
      this.#throwIfClosing();
      const conn = this.#newConnection(stream);
      const handshake = spec.handshake;
      if (this.#relay?.direct) {
        this.#conns.handshaking.add(conn);
        const result = await conn.handshake((channel) => (handshake.scheme === 'none' ? Promise.resolve(undefined) : clientHandshake(channel, handshake))).finally(() => this.#conns.handshaking.delete(conn));
        if (result !== undefined) conn.peer.auth = result.auth;
        const shm = await this.#relay!.handOver(conn, stream);
        this.#register(conn);
        return { ok: true, connectionId: conn.id, shm };
      }
      if (handshake.scheme !== 'none') {
        // Rejects (the connection already closed) with HANDSHAKE_FAILED, AUTH_FAILED or BUSY: start() rejects with it.
        this.#conns.handshaking.add(conn);
        const result = await conn.handshake((channel) => clientHandshake(channel, handshake)).finally(() => this.#conns.handshaking.delete(conn));
        conn.peer.auth = result.auth;
        this.#register(conn);
        conn.open();
      } else {
        this.#register(conn);
        const failed = this.#start(conn, stream);
        if (failed !== undefined) throw failed;
      }
      return { ok: true, connectionId: conn.id };
    } catch (err) {
      // Anything else that broke the set-up (a custom stream whose start() throws, say) is this
      // connection failing to come up, not a remote handler's error.
      const reason = RpcError.is(err) ? err : this.#setUpFailed(err);
      // The main thread answers a failed start with close(); closing here would race the reply.
      return { ok: false, error: toWireError(reason) };
    }
  }

  #throwIfClosing(): void {
    if (this.#closing) throw new RpcError('CLOSED', 'the task was closed before it was ready');
  }

  #accept(stream: ByteStream): void {
    if (this.#closing || this.#draining) {
      stream.destroy();
      return;
    }
    const conn = this.#newConnection(stream);
    const handshake = this.#spec.handshake;
    if (handshake.scheme === 'none' && this.#relay?.direct) {
      const busy = this.#conns.admit(conn);
      if (busy) {
        conn.start();
        conn.close(busy, true);
        return;
      }
      void conn.handshake(() => Promise.resolve()).then(
        () => this.#goDirect(conn, stream),
        () => {
          this.#conns.release(conn);
          this.#settleDrain();
        },
      );
      return;
    }
    if (handshake.scheme === 'none') {
      const busy = this.#conns.admit(conn);
      if (busy) {
        conn.start();
        conn.close(busy, true);
        return;
      }
      this.#register(conn);
      this.#start(conn, stream);
      return;
    }
    this.#conns.handshaking.add(conn);
    conn
      .handshake((channel) =>
        serverHandshake(channel, {
          spec: handshake,
          admit: () => {
            // Taken in the same turn as the Ack, so two clients cannot both get the one-to-one slot.
            return this.#conns.admit(conn);
          },
          peerPid: () => peerPidOf(stream, this.#spec.transport, this.#listener?.address as Address | undefined),
        }),
      )
      .then(
        (result) => {
          this.#conns.handshaking.delete(conn);
          conn.peer.auth = result.auth;
          if (result.pid !== undefined) conn.peer.pid = result.pid;
          if (this.#relay?.direct) {
            this.#goDirect(conn, stream);
            return;
          }
          this.#register(conn);
          conn.open();
        },
        () => {
          // The connection has closed itself; nothing else is affected. (It may have been admitted
          // just before closing, but the main thread was never told of it.)
          this.#conns.handshaking.delete(conn);
          this.#conns.release(conn);
          this.#settleDrain();
        },
      );
  }

  /** An accepted connection goes live on the direct path: its rings wait for the main thread's takeShm, which its ConnOpen prompts. */
  #goDirect(conn: Connection, stream: ByteStream): void {
    this.#relay!.handOver(conn, stream).then(
      (rings) => {
        // Closed meanwhile (the node closing, the peer gone): TaskConnections.release took it out already.
        if (!this.#conns.open.has(conn.id)) return;
        this.#relay!.keep(conn.id, rings);
        this.#register(conn);
      },
      () => {
        // The stream closed while handing over: the connection has closed itself.
      },
    );
  }

  /** UNAVAILABLE for what broke a connection's set-up other than an RpcError of its own. */
  #setUpFailed(err: unknown): RpcError {
    return new RpcError('UNAVAILABLE', `${formatAddress(this.#spec.transport)} could not be set up: ${messageOf(err)}`, { cause: err });
  }

  /**
   * Starts a registered connection's stream. One whose start() throws (a custom adapter's bug) is
   * closed at once, and the reason returned: no close event will ever come from it, and waiting
   * for one held the task's close for seconds.
   */
  #start(conn: Connection, stream: ByteStream): RpcError | undefined {
    try {
      conn.start();
      return undefined;
    } catch (err) {
      const reason = this.#setUpFailed(err);
      conn.fail(reason);
      try {
        stream.destroy(reason);
      } catch {
        // broken already
      }
      this.closed(conn, reason);
      return reason;
    }
  }

  #newConnection(stream: ByteStream): Connection {
    const id = this.#hub.open(this);
    return new Connection(id, stream, peerOf(stream, this.#spec.transport, id), this);
  }

  /** Makes a connection live: known to the main thread (relayed) or served by a session here. */
  #register(conn: Connection): void {
    this.#conns.live(conn);
    if (this.#relay !== undefined) this.#relay.opened(conn);
    else {
      conn.attach(
        new Session({
          codec: this.codec,
          peer: conn.peer,
          handler: this.#handler,
          send: (head, payload) => {
            conn.send2(head, payload);
            // A stream's next item or an event waits while the peer reads slower than we write.
            return conn.writable ? undefined : conn.whenWritable();
          },
          maxFrameBytes: this.maxFrameBytes,
          maxConcurrentCalls: this.#spec.maxConcurrentCalls ?? Infinity,
          sendStacks: this.sendStacks,
        }),
      );
    }
  }

  writableChanged(conn: Connection, writable: boolean): void {
    if (this.#conns.open.has(conn.id)) this.#relay?.writableChanged(conn, writable);
  }
}
