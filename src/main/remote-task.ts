/**
 * The main thread's side of one connection task: the ring pair it shares with the other tasks of
 * its worker thread (../bridge/main-hub.ts), whose control channel carries its TaskControl calls,
 * and the call sessions of its relayed connections (./relayed-sessions.ts). Every session settles
 * when the task ends, however it ends.
 */
import { RpcError, fromWireError, sendsStacks } from '../errors.js';
import { sharedCodec } from '../codec/index.js';
import { kHubWord, kThreadWord, type HandlerSpec, type ReadyResult, type TaskConfig, type TaskSpec, type TaskStats } from '../bridge/control.js';
import type { Session } from '../session/session.js';
import { formatAddress, type Address } from '../transport/descriptors.js';
import type { Handler, PeerInfo } from '../types.js';
import { logger } from '../observe.js';
import { nativeAvailable } from '../native/addon.js';
import { discardOffer, hubById, offerHub, registerTask, unregisterTask, type HubTask, type MainHub } from '../bridge/main-hub.js';
import { RelayedSessions } from './relayed-sessions.js';
import { atomicsSignal } from '../shm/ring.js';

const log = logger('connection');

/** Runs a task spec somewhere (the shared pool, or a plugin's own thread) until it ends. */
export interface TaskRunner {
  run(spec: TaskSpec): Promise<void>;
  /**
   * Ends the task by force, when it does not close within its timeout: terminates the thread it
   * runs in (`threadId`, as the task stored it; undefined if it never started), and with it every
   * other task of that thread.
   */
  kill?(threadId: number | undefined): void;
}

/** What the main thread starts a task with: its TaskConfig, which travels to the worker whole, and what stays here. */
export interface RemoteTaskOptions {
  config: TaskConfig;
  /** A main-thread handler object, a module URL run in the worker, or none. */
  handler: Handler | string | undefined;
  /** Size of each ring of the pair offered to the task's thread (NodeOptions.ringBytes). */
  ringBytes: number;
  /** How long close() waits for the task to stop before the runner kills its thread. */
  closeTimeoutMs: number;
  /**
   * How long start() waits for the task to be ready (0: no limit). Its worker enforces the
   * connect and handshake timeouts itself; this bounds what it cannot: a handler or plugin module
   * that never finishes loading, or a worker thread stuck in someone's endless loop.
   */
  readyTimeoutMs: number;
}

export class RemoteTask implements HubTask {
  /** The bound address (listeners). */
  address: Address | undefined;
  /** The sessions of its connections relayed to this thread. */
  readonly #relayed: RelayedSessions;
  /** A connect task's session. */
  #client: Session | undefined;
  /** This task's number among the process's tasks (TaskSpec.key). */
  readonly #key: number;
  /** The ring pair offered in the spec; the worker may have joined another. */
  readonly #offerId: number;
  /** The ring pair the task's worker joined, once known (#bindHub). */
  #hub: MainHub | undefined;
  readonly ringWindows: { spinMicros: number; pollMicros: number };
  readonly #ended: Promise<void>;
  #endReason: RpcError | undefined;
  readonly #runner: TaskRunner;
  readonly #closeTimeoutMs: number;
  /** Whether this task's connections take shm's direct path. */
  readonly #direct: boolean;
  /** Where the task stores the threadId of its worker and the id of its ring pair as it starts (0 until then). */
  readonly #thread = new Int32Array(new SharedArrayBuffer(8));

  private constructor(runner: TaskRunner, options: RemoteTaskOptions) {
    const { config } = options;
    this.#runner = runner;
    this.#closeTimeoutMs = options.closeTimeoutMs;
    // An isolate's messages ride rings only, chunked at any size: no frame limit applies there.
    const maxFrameBytes = config.transport.kind === 'isolate' ? Infinity : config.maxFrameBytes;
    const sendStacks = sendsStacks(config.remoteStacks, config.transport.kind);
    const codec = sharedCodec(config.codec, config.decodeLimits);
    const handler: HandlerSpec =
      typeof options.handler === 'string' ? { kind: 'module', url: options.handler } : options.handler ? { kind: 'main' } : { kind: 'none' };
    this.ringWindows = { spinMicros: config.idle.spinMicros, pollMicros: config.idle.pollMicros };
    // The main thread reads and writes an shm connection's rings itself when it calls or serves
    // (a module handler serves in the worker, which reads them already).
    this.#direct = config.transport.kind === 'shm' && (config.role === 'connect' || handler.kind === 'main') && nativeAvailable();
    this.#relayed = new RelayedSessions({
      codec,
      handler: typeof options.handler === 'object' ? options.handler : undefined,
      maxFrameBytes,
      maxConcurrentCalls: config.maxConcurrentCalls ?? Infinity,
      sendStacks,
      direct: this.#direct
        ? {
            role: config.role,
            codec,
            maxFrameBytes,
            sendStacks,
            idle: config.idle,
            keepAliveMs: config.keepAliveMs,
            expectsNoHello: config.role === 'connect' && config.handshake.scheme === 'none',
          }
        : undefined,
      hub: () => this.#hub,
      takeShm: (connId) => this.#ask((control, key) => control.takeShm(key, connId)),
    });
    this.#key = registerTask(this);
    const offer = offerHub(options.ringBytes);
    this.#offerId = offer.id;
    const spec: TaskSpec = {
      ...config,
      handler,
      key: this.#key,
      hub: offer,
      thread: this.#thread,
      ...(this.#direct ? { shmDirect: true } : {}),
    };
    // Its ring id comes with ConnOpen or ready(), whichever this thread hears first.
    if (config.role === 'connect') this.#client = this.#relayed.openClient();
    this.#ended = runner.run(spec).then(
      () => this.#end(new RpcError('CLOSED', 'the connection was closed'), false),
      // A task that ran and then failed: its thread died (or was terminated), and its ring pair with it.
      (err: Error) => this.#end(RpcError.is(err) ? err : new RpcError('CLOSED', `the connection worker exited: ${err?.message ?? err}`, { cause: err }), true),
    );
  }

  /** Starts a task and waits until it listens or is connected; rejects with the task's error. */
  static async start(runner: TaskRunner, options: RemoteTaskOptions): Promise<RemoteTask> {
    const task = new RemoteTask(runner, options);
    // If the worker dies before answering, comlink's promise would never settle: race it with the task's end.
    const ended = task.#ended.then(() => {
      throw task.#endReason ?? new RpcError('CLOSED', 'the connection task ended before it was ready');
    });
    const ms = options.readyTimeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<'late'>((resolve) => {
      if (ms > 0) timer = setTimeout(() => resolve('late'), ms);
    });
    const ready = await Promise.race([task.#ready(), ended, late]).finally(() => clearTimeout(timer));
    if (ready !== 'late') {
      const hub = task.#bindHub();
      // Its connection's id, if no ConnOpen said it yet: routed before the pair is read, so that
      // records already waiting in it (an isolate sends no ConnOpen) find their session.
      if (hub !== undefined && ready.ok && ready.connectionId !== undefined) task.#bindClient(hub, ready.connectionId);
      if (ready.ok && ready.shm !== undefined) task.#relayed.attach(task.#client!, ready.shm);
      hub?.adopt();
      if (hub === undefined && ready.ok) {
        await task.close();
        throw task.#endReason ?? new RpcError('CLOSED', 'the connection task ended before it was ready');
      }
    }
    if (ready === 'late') {
      await task.close();
      const { role, transport } = options.config;
      const what = role === 'listen' ? `listening on ${formatAddress(transport)}` : `connecting to ${formatAddress(transport)}`;
      throw new RpcError('UNAVAILABLE', `${what}: not ready within ${ms} ms (connectTimeoutMs); its handler or plugin module is still loading, or its worker thread is busy or stuck`);
    }
    if (!ready.ok) {
      await task.close();
      // A task that ended before it was asked (a connection refused at once): why it ended is the answer.
      throw (ready.ended === true ? task.#endReason : undefined) ?? fromWireError(ready.error);
    }
    task.address = ready.address;
    return task;
  }

  /** The session of a connect task's single connection; it keeps why it closed once it has. Connect tasks only. */
  get clientSession(): Session {
    return this.#client!;
  }

  /** Resolves when the task has ended. */
  get ended(): Promise<void> {
    return this.#ended;
  }

  /** Why the task ended (once it has): CLOSED after close(), else what ended it (its worker died, say). */
  get endReason(): RpcError | undefined {
    return this.#endReason;
  }

  /** The id of the ring pair its connections ride (shared with the other tasks of its worker thread); undefined until known and once ended. */
  get ringPair(): number | undefined {
    return this.#endReason === undefined && !this.#direct ? this.#hub?.id : undefined;
  }

  /** Whether this task's connections take shm's direct path: this thread reads and writes their rings. */
  get direct(): boolean {
    return this.#direct;
  }

  /** What the task has carried since it started; undefined once it has ended (or ends meanwhile). */
  async stats(): Promise<TaskStats | undefined> {
    if (this.#endReason !== undefined) return undefined;
    const stats = await this.#ask((control, key) => control.stats(key));
    // A direct connection's frames pass this thread only.
    if (stats === undefined || !this.#direct) return stats;
    const { framesIn, framesOut } = this.#relayed.linkFrames;
    return { ...stats, framesIn: stats.framesIn + framesIn, framesOut: stats.framesOut + framesOut };
  }

  async close(): Promise<void> {
    if (this.#endReason === undefined) {
      // A task whose thread is stuck (a handler in an endless loop) never answers close(): the
      // runner kills that thread after the timeout, so close() always ends.
      const runner = this.#runner;
      const timer = runner.kill ? setTimeout(() => runner.kill!(Atomics.load(this.#thread, kThreadWord) || undefined), this.#closeTimeoutMs) : undefined;
      try {
        // Direct connections: our Close and the rings' close records go in before the worker
        // closes the control sockets, which each peer takes for the end of everything.
        const linksEnded = this.#relayed.endLinks(new RpcError('CLOSED', 'the node was closed'));
        if (linksEnded !== undefined) await linksEnded;
        await this.#ask((control, key) => control.close(key));
        await this.#ended;
      } finally {
        if (timer !== undefined) clearTimeout(timer);
      }
    }
    await this.#ended;
  }

  /** The worker's answer to ready(), asked on the control channel of the pair the task joined. */
  async #ready(): Promise<ReadyResult> {
    const hub = await this.#joined();
    const control = hub?.control;
    if (control === undefined) throw this.#endReason ?? new RpcError('CLOSED', 'the connection task ended before it was ready');
    return control.ready(this.#key);
  }

  /**
   * The ring pair the task's worker joined, once it has: the task's first act stores its id and
   * notifies. Undefined if the task ends first (#end notifies too), or the pair has closed.
   */
  async #joined(): Promise<MainHub | undefined> {
    for (;;) {
      const hub = this.#bindHub();
      if (hub !== undefined || this.#endReason !== undefined || Atomics.load(this.#thread, kHubWord) !== 0) return hub;
      await atomicsSignal.wait(this.#thread, kHubWord, 0, Infinity);
    }
  }

  /**
   * Asks the task's worker something over the control channel of the pair it joined, once it has:
   * the answer, or undefined if the task ends first (a dead thread answers nothing), the pair has
   * closed, or the call failed.
   */
  async #ask<T>(call: (control: NonNullable<MainHub['control']>, key: number) => Promise<T>): Promise<T | undefined> {
    const control = (await this.#joined())?.control;
    if (control === undefined) return undefined;
    return Promise.race([call(control, this.#key).catch(() => undefined), this.#ended.then(() => undefined)]);
  }

  /**
   * The ring pair the task's worker joined, once the worker has stored its id; the offer goes if
   * it was not the one. Undefined before the task ran, or when the pair has closed already.
   */
  #bindHub(): MainHub | undefined {
    if (this.#hub === undefined) {
      const id = Atomics.load(this.#thread, kHubWord);
      if (id === 0) return undefined;
      if (id !== this.#offerId) discardOffer(this.#offerId);
      this.#hub = hubById(id);
      this.#hub?.join(this);
    }
    return this.#hub;
  }

  /** A connect task's connection has ring id `connId` (ready() said so before its ConnOpen came). */
  #bindClient(hub: MainHub, connId: number): void {
    if (this.#relayed.bindClient(connId)) hub.route(connId, this);
  }

  opened(hub: MainHub, connId: number, peer: PeerInfo): void {
    if (this.#bindHub() === hub) this.#relayed.opened(connId, peer);
  }

  record(connId: number, bytes: Uint8Array): void {
    this.#relayed.record(connId, bytes);
  }

  /**
   * A listener's graceful close: the worker stops accepting, and every connection stops taking
   * calls and closes once it has answered those it serves (see Session#drain). Resolves once every
   * connection has closed (or the task ended); close() ends everything at any time.
   */
  async drain(): Promise<void> {
    if (this.#endReason !== undefined || this.#relayed.draining) return;
    this.#relayed.drain();
    await this.#ask((control, key) => control.drain(key));
  }

  #end(ended: RpcError, threadDied: boolean): void {
    const hub = this.#bindHub();
    if (hub === undefined) discardOffer(this.#offerId);
    // What the worker wrote before its task ended (why a connection closed, the last replies) can
    // still be in the ring, the task's end having overtaken it: deliver it first, or a client
    // refused for a reason (HANDSHAKE_FAILED, say) would learn only "the connection was closed".
    hub?.adopt();
    hub?.drain();
    // Every task of that thread ends too (each told by its own runner); none can use the pair now.
    if (threadDied) hub?.dead();
    hub?.leave(this);
    unregisterTask(this.#key);
    // A connect task ends with its one connection: that connection's reason is the task's.
    const reason = this.#client?.closedWith ?? ended;
    this.#endReason = reason;
    log('task ended: %s %s', reason.code, reason.message);
    this.#relayed.closeAll(reason);
    // Wakes a #joined() still waiting for a worker that never ran the task.
    Atomics.notify(this.#thread, kHubWord);
  }
}
