/**
 * The client side of a node: its endpoints (src/main/endpoint.ts), each served by one connection
 * task at a time, with optional reconnection (src/main/reconnect.ts), load spreading over the ready
 * endpoints (src/main/balance.ts), and, for a client that found its server through discovery,
 * endpoints that follow the published records. `Client` sends everything through `use()`, the one
 * place that picks a ready session, so every kind of call (call, notify, and whatever comes next)
 * gets the same behaviour.
 */
import { EventEmitter } from 'node:events';
import { RpcError } from '../errors.js';
import type { Resolver } from '../discovery/resolver.js';
import type { Session } from '../session/session.js';
import { formatAddress, type TransportDescriptor } from '../transport/descriptors.js';
import type { CallOptions } from '../types.js';
import { logger } from '../observe.js';
import { timeLimit } from '../limits.js';
import { Balancer, type BalancePolicy } from './balance.js';
import { clientState, describeEndpoints, Endpoint, type ClientState, type ClientStateEvent, type EndpointInfo, type EndpointState, type EndpointStats } from './endpoint.js';
import { ReadyWaiters } from './ready-wait.js';
import { backoffDelay, type ReconnectOptions } from './reconnect.js';
import type { RemoteTask } from './remote-task.js';

const log = logger('client');

/** How a Channel opens connections, and what it does when they fail. */
export interface ChannelOptions {
  /** Starts one connection task to `transport`; resolves once connected (handshake done), rejects with why not. */
  open(transport: TransportDescriptor): Promise<RemoteTask>;
  /** Absent: no reconnection (a lost endpoint is closed for good). */
  reconnect?: Required<ReconnectOptions>;
  balance: BalancePolicy;
  /** Only with reconnect: re-resolve before each attempt and follow the records. */
  resolver?: Resolver;
}

/** An idempotent call is sent at most this many times in all. */
const kMaxCallAttempts = 5;

/** A client's endpoints and the calls it sends through them; it owns, and closes, every connection task it opens. */
export class Channel {
  readonly #open: ChannelOptions['open'];
  readonly #reconnect: Required<ReconnectOptions> | undefined;
  readonly #balancer: Balancer;
  readonly #resolver: Resolver | undefined;
  readonly #endpoints: Endpoint[] = [];
  readonly #events = new EventEmitter();
  /** Calls waiting for a ready endpoint: woken on every change that may let them go on. */
  readonly #waiters = new ReadyWaiters();
  #waiting = 0;
  #state: ClientState = 'idle';
  #closed: RpcError | undefined;
  #closing: Promise<void> | undefined;
  #stopWatch: (() => void) | undefined;
  #refreshing: Promise<void> | undefined;
  /**
   * The session of the only endpoint, as pick() last gave it, while nothing about the endpoints
   * has changed since (any state change, task change or list change forgets it): a client of one
   * connection then reaches its session without a walk through balancer, endpoint and task, which
   * a process holding hundreds of clients pays in cache misses on every call.
   */
  #only: Session | undefined;

  constructor(transports: TransportDescriptor[], options: ChannelOptions) {
    this.#open = options.open;
    this.#reconnect = options.reconnect;
    this.#balancer = new Balancer(options.balance);
    this.#resolver = options.reconnect ? options.resolver : undefined;
    for (const t of transports) this.#endpoints.push(new Endpoint(t));
  }

  /** Connects every endpoint once; resolves when all first attempts have settled and one is ready, else closes and rejects with the first endpoint's error. */
  async start(): Promise<void> {
    await Promise.all(this.#endpoints.map((e) => this.#attempt(e)));
    if (!this.#endpoints.some((e) => e.state === 'ready')) {
      const err = this.#endpoints[0]?.error ?? new RpcError('UNAVAILABLE', 'there is no endpoint to connect to');
      await this.close();
      throw err;
    }
    if (this.#resolver && !this.#closed) {
      this.#stopWatch = this.#resolver.watch(
        (transports) => this.#setTransports(transports),
        (err) => log('watching discovery failed: %s %s', err.code, err.message),
      );
    }
  }

  get state(): ClientState {
    return this.#state;
  }

  get endpoints(): EndpointInfo[] {
    return this.#endpoints.map((e) => e.info());
  }

  /** Each endpoint with the frames of its current connection (asks each connection's worker). */
  stats(): Promise<EndpointStats[]> {
    return Promise.all(
      this.#endpoints.map(async (e) => {
        const ringPair = e.state === 'ready' ? e.task!.ringPair : undefined;
        const direct = e.state === 'ready' && e.task!.direct;
        const task = e.state === 'ready' ? await e.task!.stats() : undefined;
        return { ...e.info(), framesIn: task?.framesIn ?? 0, framesOut: task?.framesOut ?? 0, ...(ringPair !== undefined ? { ringPair } : {}), ...(direct ? { direct: true as const } : {}) };
      }),
    );
  }

  /** Calls in flight on every connection, plus calls waiting for one. */
  get pending(): number {
    let n = this.#waiting;
    for (const e of this.#endpoints) n += e.session?.pendingCount ?? 0;
    return n;
  }

  /** Why the client can take no more calls: it was closed, or (without reconnect) every connection is gone. */
  get closedWith(): RpcError | undefined {
    return this.#finalReason();
  }

  onState(listener: (event: ClientStateEvent) => void): void {
    this.#events.on('state', listener);
  }

  offState(listener: (event: ClientStateEvent) => void): void {
    this.#events.off('state', listener);
  }

  /**
   * Runs `run` on a ready session. The fast path, a plain call with a ready endpoint, adds nothing
   * but the pick; anything else (no endpoint ready, an idempotent call) goes through `#useSlowly`.
   */
  use<T>(options: CallOptions | undefined, run: (session: Session, options: CallOptions | undefined) => Promise<T>): Promise<T> {
    if (options?.idempotent !== true) {
      const session = this.#balancer.pick(this.#endpoints, undefined);
      if (session !== undefined) return run(session, options);
    }
    return this.#useSlowly(options, run);
  }

  /** The session `use()` would run a plain call on (no options), if one is ready now. */
  readySession(): Session | undefined {
    const only = this.#only;
    // A closed session not yet noticed by its endpoint is skipped, as pick() skips it.
    if (only !== undefined && only.closedWith === undefined) return only;
    const session = this.#balancer.pick(this.#endpoints, undefined);
    this.#only = this.#endpoints.length === 1 ? session : undefined;
    return session;
  }

  /** Resolves once no call of this client is in flight or waiting for a connection (a graceful close; polled, it is no hot path). */
  async drain(): Promise<void> {
    while (this.pending > 0 && this.#closed === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  /** Closes every connection (pending calls reject with CLOSED), stops retrying and watching. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = new RpcError('CLOSED', 'the client was closed');
      this.#stopWatch?.();
      this.#waiters.wake();
      for (const e of this.#endpoints) {
        clearTimeout(e.timer);
        e.timer = undefined;
      }
      // An attempt in flight sees #closed when it lands and closes its own task.
      await Promise.all(this.#endpoints.map((e) => e.opening));
      for (const e of this.#endpoints) {
        const task = e.task;
        e.task = undefined;
        this.#set(e, 'closed', this.#closed);
        await task?.close().catch(() => {});
      }
    })();
    return this.#closing;
  }

  async #useSlowly<T>(options: CallOptions | undefined, run: (session: Session, options: CallOptions | undefined) => Promise<T>): Promise<T> {
    const timeoutMs = timeLimit('timeoutMs', options?.timeoutMs);
    const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
    // Sessions a call already died on: a retry prefers any other (a reconnected endpoint has a new one).
    const tried = new Set<Session>();
    let lastError: unknown;
    for (let attempt = 1; ; attempt++) {
      let session: Session;
      try {
        session = await this.#ready(options, deadline, tried);
      } catch (err) {
        // A retry that finds nowhere to go: the caller hears why the call failed, not why it could not be retried.
        throw lastError !== undefined && RpcError.is(err) && err.code === 'UNAVAILABLE' ? lastError : err;
      }
      let left = options;
      if (deadline !== undefined) {
        const ms = deadline - performance.now();
        if (ms <= 0) throw new RpcError('TIMEOUT', `call timed out after ${timeoutMs} ms`);
        left = { ...options, timeoutMs: ms };
      }
      try {
        return await run(session, left);
      } catch (err) {
        // Only a call whose connection died under it is retried (its rejection is that close reason
        // itself), or one the server refused without running it.
        if (options?.idempotent !== true || (err !== session.closedWith && !refusedUnrun(err)) || attempt >= kMaxCallAttempts || this.#closed) throw err;
        log('retrying an idempotent call after %s', (err as RpcError).code);
        tried.add(session);
        lastError = err;
      }
    }
  }

  /** A ready session, waiting for one if the call may; rejects with UNAVAILABLE, TIMEOUT, CANCELLED or why the client is done. */
  async #ready(options: CallOptions | undefined, deadline: number | undefined, tried: Set<Session>): Promise<Session> {
    this.#waiting++;
    try {
      for (;;) {
        this.#sweep();
        const session = this.#balancer.pick(this.#endpoints, tried);
        if (session !== undefined) return session;
        const final = this.#finalReason();
        if (final !== undefined) throw final;
        if (!(options?.waitForReady ?? this.#reconnect?.waitForReady ?? false)) throw this.#unavailable();
        await this.#waiters.next(options, deadline, () => describeEndpoints(this.#endpoints));
      }
    } finally {
      this.#waiting--;
    }
  }

  /** Notices ready endpoints whose connection closed before their task ended. */
  #sweep(): void {
    for (const e of [...this.#endpoints]) {
      if (e.state === 'ready' && e.task!.clientSession.closedWith !== undefined) this.#lost(e, e.task!);
    }
  }

  /** Why no call can ever succeed again, or undefined while one may. */
  #finalReason(): RpcError | undefined {
    if (this.#closed) return this.#closed;
    if (this.#reconnect || this.#endpoints.length === 0) return undefined;
    let last: RpcError | undefined;
    for (const e of this.#endpoints) {
      const reason = e.state === 'ready' ? e.task!.clientSession.closedWith : e.state === 'closed' ? e.error : undefined;
      if (reason === undefined) return undefined;
      last = reason;
    }
    return last;
  }

  #unavailable(): RpcError {
    const cause = this.#endpoints.find((e) => e.error !== undefined)?.error;
    return new RpcError('UNAVAILABLE', `no connection is ready (${describeEndpoints(this.#endpoints)})`, cause ? { cause } : {});
  }

  /** One connection attempt; never rejects. */
  #attempt(e: Endpoint): Promise<void> {
    const attempt = (async () => {
      this.#set(e, 'connecting');
      let task: RemoteTask;
      try {
        task = await this.#open(e.transport);
      } catch (err) {
        e.opening = undefined;
        this.#failed(e, RpcError.is(err) ? err : new RpcError('UNAVAILABLE', String((err as Error)?.message ?? err), { cause: err }));
        return;
      }
      e.opening = undefined;
      if (this.#closed || e.removed || !e.wanted) {
        await task.close().catch(() => {});
        if (!this.#closed && !e.removed) this.#remove(e);
        return;
      }
      e.task = task;
      e.readyAt = performance.now();
      this.#set(e, 'ready');
      this.#waiters.wake();
      void task.ended.then(() => this.#lost(e, task));
    })();
    e.opening = attempt;
    return attempt;
  }

  /** A ready connection is gone (its task ended, or its session closed). */
  #lost(e: Endpoint, task: RemoteTask): void {
    if (e.task !== task || e.state !== 'ready') return;
    e.task = undefined;
    this.#only = undefined;
    // Usually already ending; a session closed on this side (a malformed message) leaves its task up.
    void task.close().catch(() => {});
    const reason = task.clientSession.closedWith ?? new RpcError('CLOSED', 'the connection was closed');
    // A connection that lived long enough is healthy: its first retry goes at once, the backoff starts over.
    if (this.#reconnect && performance.now() - e.readyAt >= this.#reconnect.maxDelayMs) e.failures = 0;
    else e.failures++;
    this.#retryOrClose(e, reason);
  }

  /** An attempt failed. */
  #failed(e: Endpoint, err: RpcError): void {
    e.failures++;
    this.#retryOrClose(e, err);
  }

  #retryOrClose(e: Endpoint, reason: RpcError): void {
    e.error = reason;
    if (e.removed) return;
    if (this.#closed) return this.#set(e, 'closed', this.#closed);
    if (!this.#reconnect || !e.wanted) {
      if (e.wanted) this.#set(e, 'closed', reason);
      else this.#remove(e);
      this.#waiters.wake();
      return;
    }
    this.#set(e, 'transient-failure', reason);
    const delay = e.failures === 0 ? 0 : backoffDelay(e.failures, this.#reconnect);
    e.timer = setTimeout(() => {
      e.timer = undefined;
      void this.#retry(e);
    }, delay);
  }

  async #retry(e: Endpoint): Promise<void> {
    // Re-resolve first: the server may have come back at another address (port 0), or be gone for good.
    if (this.#resolver) await this.#refresh();
    if (this.#closed || e.removed || e.state !== 'transient-failure') return;
    await this.#attempt(e);
  }

  /** Looks the records up again (one lookup at a time); a failed lookup keeps the endpoints as they are. */
  #refresh(): Promise<void> {
    this.#refreshing ??= this.#resolver!.resolve()
      .then(
        (transports) => this.#setTransports(transports),
        (err: RpcError) => log('re-resolving failed: %s %s', err?.code, err?.message),
      )
      .finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  /** Makes the endpoints follow what discovery lists: new addresses are connected, vanished ones dropped (a ready one once its connection ends). */
  #setTransports(transports: TransportDescriptor[]): void {
    if (this.#closed) return;
    const fresh = new Map(transports.map((t) => [formatAddress(t), t]));
    for (const e of [...this.#endpoints]) {
      e.wanted = fresh.delete(e.key);
      if (!e.wanted && e.state !== 'ready' && e.state !== 'connecting') this.#remove(e);
    }
    for (const transport of fresh.values()) {
      const e = new Endpoint(transport);
      this.#endpoints.push(e);
      this.#only = undefined;
      log('endpoint %s appeared', e.key);
      void this.#attempt(e);
    }
  }

  #remove(e: Endpoint): void {
    clearTimeout(e.timer);
    e.timer = undefined;
    e.removed = true;
    const at = this.#endpoints.indexOf(e);
    if (at >= 0) this.#endpoints.splice(at, 1);
    this.#only = undefined;
    this.#set(e, 'closed', e.error);
    log('endpoint %s dropped: discovery no longer lists it', e.key);
    this.#waiters.wake();
  }

  #set(e: Endpoint, state: EndpointState, error?: RpcError): void {
    const previous = e.state;
    e.state = state;
    this.#only = undefined;
    this.#state = clientState(this.#endpoints, this.#closed !== undefined);
    if (previous === state) return;
    log('%s: %s -> %s%s', e.key, previous, state, error ? ` (${error.code}: ${error.message})` : '');
    if (this.#events.listenerCount('state') === 0) return;
    const event: ClientStateEvent = { endpoint: e.key, state, previous, client: this.#state };
    if (error !== undefined && (state === 'transient-failure' || state === 'closed')) event.error = error;
    for (const listener of this.#events.listeners('state')) {
      try {
        (listener as (event: ClientStateEvent) => void)(event);
      } catch (err) {
        // A throwing listener must not stop the client from reconnecting.
        process.emitWarning(`ogurpchik: a client 'state' listener threw: ${(err as Error)?.stack ?? err}`);
      }
    }
  }
}

/**
 * A call the server answered without running it: a closing server's UNAVAILABLE (Session#drain),
 * or BUSY from a connection at its maxConcurrentCalls.
 */
function refusedUnrun(err: unknown): boolean {
  if (!RpcError.is(err)) return false;
  const data = err.data as { closing?: unknown; max?: unknown } | undefined;
  return (err.code === 'UNAVAILABLE' && data?.closing === true) || (err.code === 'BUSY' && typeof data?.max === 'number');
}
