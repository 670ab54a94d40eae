/**
 * The client side of a node: one or more endpoints, each served by one connection task at a time,
 * with optional reconnection (exponential backoff with jitter), load spreading over the ready
 * endpoints, and, for a client that found its server through discovery, endpoints that follow the
 * published records. `Client` sends everything through `use()`, the one place that picks a ready
 * session, so every kind of call (call, notify, and whatever comes next) gets the same behaviour.
 *
 * An endpoint's life: idle → connecting → ready; a failed attempt goes to transient-failure and
 * tries again after a delay; a ready connection that drops goes to transient-failure and tries again
 * at once (or after a delay, when it had not lived for `maxDelayMs`). Without `reconnect`, a failure
 * or drop is final: the endpoint goes to closed and stays there.
 */
import { EventEmitter } from 'node:events';
import { RpcError } from '../errors.js';
import type { Session } from '../session/session.js';
import { formatAddress, type TransportDescriptor } from '../transport/descriptors.js';
import type { CallOptions } from '../types.js';
import { logger } from '../observe.js';
import { isTimerMs, timeLimit } from '../limits.js';
import type { RemoteTask } from './remote-task.js';

const log = logger('client');

/** Where one endpoint is: `ready` ones take calls. */
export type EndpointState = 'idle' | 'connecting' | 'ready' | 'transient-failure' | 'closed';

/**
 * The client as a whole: `ready` when any endpoint is, else `connecting` when any is, else
 * `transient-failure` when any is waiting to retry; `idle` with no endpoint (discovery lists none
 * right now); `closed` once closed, or when every endpoint is closed for good (no reconnect).
 */
export type ClientState = EndpointState;

/** How calls are spread over the ready endpoints. */
export type BalancePolicy = 'round-robin' | 'least-in-flight';

/** Opt-in reconnection: a lost or failed connection is tried again, after delays that grow exponentially, with jitter. */
export interface ReconnectOptions {
  /** Delay before the retry that follows the first failed attempt, in ms (default 100). */
  initialDelayMs?: number;
  /** Largest delay between attempts, in ms (default 5000). A connection that drops sooner than this after it came up counts as a failed attempt. */
  maxDelayMs?: number;
  /** Each further failed attempt multiplies the delay by this (default 2; at least 1). */
  multiplier?: number;
  /** Each delay is moved at random by up to this fraction of itself, either way (default 0.2; 0 to 1), then capped at maxDelayMs. */
  jitter?: number;
  /** Calls made while no connection is ready wait for one (up to their timeoutMs) instead of failing with UNAVAILABLE (default false; a call's own `waitForReady` wins). */
  waitForReady?: boolean;
}

/** The payload of a client's `state` event: one endpoint changed state. */
export interface ClientStateEvent {
  /** The endpoint, as an address (`127.0.0.1:4000`, a socket path, `shm:<name>`). */
  endpoint: string;
  state: EndpointState;
  previous: EndpointState;
  /** The client's state after this change. */
  client: ClientState;
  /** Why, for `transient-failure` and `closed` (the connection's close reason or the attempt's error). */
  error?: RpcError;
}

/** One endpoint as `client.endpoints` reports it. */
export interface EndpointInfo {
  endpoint: string;
  state: EndpointState;
  /** Calls in flight on its connection. */
  pending: number;
}

/** One endpoint in RunningNode.stats(): its EndpointInfo, and the frames of its current connection. */
export interface EndpointStats extends EndpointInfo {
  /** Frames received and sent on its current connection (0 while it has none). */
  framesIn: number;
  framesOut: number;
  /**
   * The main↔worker ring pair its current connection rides (undefined while it has none): every
   * connection that one pool thread hosts for this thread shares one.
   */
  ringPair?: number;
  /** True when its connection is shm's direct path: this thread reads and writes the shared-memory rings itself (no ring pair, no worker hop). */
  direct?: true;
}

/** Where a client's endpoints come from when it found its server through discovery. */
export interface Resolver {
  /** The transports the live records name now. */
  resolve(): Promise<TransportDescriptor[]>;
  /** Calls `onChange` with the transports whenever the records change; returns the stop. */
  watch(onChange: (transports: TransportDescriptor[]) => void, onError: (err: RpcError) => void): () => void;
}

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
export const kMaxCallAttempts = 5;

const kReconnectDefaults: Required<ReconnectOptions> = { initialDelayMs: 100, maxDelayMs: 5000, multiplier: 2, jitter: 0.2, waitForReady: false };

/** Checks reconnect options and fills in the defaults; `true` means all defaults, `false`/undefined no reconnect. */
export function reconnectOptions(value: ReconnectOptions | boolean | undefined): Required<ReconnectOptions> | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return { ...kReconnectDefaults };
  if (value === null || typeof value !== 'object') throw new RpcError('INVALID_ARGUMENT', 'reconnect takes true or an options object');
  const o = { ...kReconnectDefaults, ...Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) } as Required<ReconnectOptions>;
  if (!isTimerMs(o.initialDelayMs)) throw new RpcError('INVALID_ARGUMENT', `reconnect.initialDelayMs must be from 0 to 2^31-1, got ${o.initialDelayMs}`);
  if (!isTimerMs(o.maxDelayMs) || o.maxDelayMs < o.initialDelayMs) {
    throw new RpcError('INVALID_ARGUMENT', `reconnect.maxDelayMs must be from initialDelayMs (${o.initialDelayMs}) to 2^31-1, got ${o.maxDelayMs}`);
  }
  if (!(Number.isFinite(o.multiplier) && o.multiplier >= 1)) throw new RpcError('INVALID_ARGUMENT', `reconnect.multiplier must be at least 1, got ${o.multiplier}`);
  if (!(o.jitter >= 0 && o.jitter <= 1)) throw new RpcError('INVALID_ARGUMENT', `reconnect.jitter must be from 0 to 1, got ${o.jitter}`);
  if (typeof o.waitForReady !== 'boolean') throw new RpcError('INVALID_ARGUMENT', `reconnect.waitForReady must be a boolean, got ${o.waitForReady}`);
  return o;
}

/** The delay before the retry that follows `failures` consecutive failed attempts (1 or more). */
export function backoffDelay(failures: number, o: Required<ReconnectOptions>, random: () => number = Math.random): number {
  const base = Math.min(o.maxDelayMs, o.initialDelayMs * o.multiplier ** Math.max(0, failures - 1));
  return Math.max(0, Math.min(o.maxDelayMs, Math.round(base * (1 + o.jitter * (2 * random() - 1)))));
}

class Endpoint {
  readonly key: string;
  state: EndpointState = 'idle';
  /** The task of the current connection, while ready. */
  task: RemoteTask | undefined;
  /** The attempt in progress. */
  opening: Promise<void> | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Consecutive failed attempts (a connection that dropped young counts as one): sets the next delay. */
  failures = 0;
  readyAt = 0;
  /** Why it last failed or closed. */
  error: RpcError | undefined;
  /** Still named by discovery; an endpoint that is not is never reconnected. */
  wanted = true;
  /** Taken out of the channel's list. */
  removed = false;

  constructor(readonly transport: TransportDescriptor) {
    this.key = formatAddress(transport);
  }

  get session(): Session | undefined {
    return this.state === 'ready' ? this.task!.clientSession : undefined;
  }
}

/** An endpoint as `client.endpoints` reports it. */
function infoOf(e: Endpoint): EndpointInfo {
  return { endpoint: e.key, state: e.state, pending: e.session?.pendingCount ?? 0 };
}

export class Channel {
  readonly #open: ChannelOptions['open'];
  readonly #reconnect: Required<ReconnectOptions> | undefined;
  readonly #balance: BalancePolicy;
  readonly #resolver: Resolver | undefined;
  readonly #endpoints: Endpoint[] = [];
  readonly #events = new EventEmitter();
  /** Calls waiting for a ready endpoint: woken on every change that may let them go on. */
  readonly #waiters = new Set<() => void>();
  #cursor = 0;
  #waiting = 0;
  #state: ClientState = 'idle';
  #closed: RpcError | undefined;
  #closing: Promise<void> | undefined;
  #stopWatch: (() => void) | undefined;
  #refreshing: Promise<void> | undefined;

  constructor(transports: TransportDescriptor[], options: ChannelOptions) {
    this.#open = options.open;
    this.#reconnect = options.reconnect;
    this.#balance = options.balance;
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
    return this.#endpoints.map(infoOf);
  }

  /** Each endpoint with the frames of its current connection (asks each connection's worker). */
  stats(): Promise<EndpointStats[]> {
    return Promise.all(
      this.#endpoints.map(async (e) => {
        const ringPair = e.state === 'ready' ? e.task!.ringPair : undefined;
        const direct = e.state === 'ready' && e.task!.direct;
        const task = e.state === 'ready' ? await e.task!.stats() : undefined;
        return { ...infoOf(e), framesIn: task?.framesIn ?? 0, framesOut: task?.framesOut ?? 0, ...(ringPair !== undefined ? { ringPair } : {}), ...(direct ? { direct: true as const } : {}) };
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
      const session = this.#pick(undefined);
      if (session !== undefined) return run(session, options);
    }
    return this.#useSlowly(options, run);
  }

  /** The session `use()` would run a plain call on (no options), if one is ready now. */
  readySession(): Session | undefined {
    return this.#pick(undefined);
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
      this.#wake();
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
        const session = this.#pick(tried);
        if (session !== undefined) return session;
        const final = this.#finalReason();
        if (final !== undefined) throw final;
        if (!(options?.waitForReady ?? this.#reconnect?.waitForReady ?? false)) throw this.#unavailable();
        await this.#nextChange(options, deadline);
      }
    } finally {
      this.#waiting--;
    }
  }

  /** Resolves at the next change that may give a call a session; rejects at the deadline or on abort. */
  #nextChange(options: CallOptions | undefined, deadline: number | undefined): Promise<void> {
    const signal = options?.signal;
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (err?: RpcError) => {
        this.#waiters.delete(wake);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const wake = () => done();
      const onAbort = () => done(cancelled(signal!));
      if (signal?.aborted) return onAbort();
      this.#waiters.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (deadline !== undefined) {
        timer = setTimeout(() => done(new RpcError('TIMEOUT', `no connection was ready within the call's ${options?.timeoutMs} ms (${this.#describe()})`)), Math.max(0, deadline - performance.now()));
      }
    });
  }

  #wake(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }

  /** The next ready endpoint's session by the balance policy, skipping `exclude` and connections that just closed. */
  #pick(exclude: Set<Session> | undefined): Session | undefined {
    const list = this.#endpoints;
    const n = list.length;
    let best: Session | undefined;
    let bestAt = 0;
    for (let i = 0; i < n; i++) {
      const at = (this.#cursor + i) % n;
      const session = list[at].session;
      // A closed session not yet noticed by its endpoint (its task is still ending): #sweep handles it.
      if (session === undefined || session.closedWith !== undefined || exclude?.has(session)) continue;
      if (this.#balance === 'round-robin') {
        this.#cursor = (at + 1) % n;
        return session;
      }
      if (best === undefined || session.pendingCount < best.pendingCount) {
        best = session;
        bestAt = at;
      }
    }
    // Least-in-flight breaks ties round-robin: the cursor moves past the one chosen.
    if (best !== undefined) this.#cursor = (bestAt + 1) % n;
    return best;
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
    return new RpcError('UNAVAILABLE', `no connection is ready (${this.#describe()})`, cause ? { cause } : {});
  }

  #describe(): string {
    if (this.#endpoints.length === 0) return 'no endpoint is known';
    return this.#endpoints.map((e) => `${e.key} ${e.state}${e.error ? `: ${e.error.code}` : ''}`).join(', ');
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
      this.#wake();
      void task.ended.then(() => this.#lost(e, task));
    })();
    e.opening = attempt;
    return attempt;
  }

  /** A ready connection is gone (its task ended, or its session closed). */
  #lost(e: Endpoint, task: RemoteTask): void {
    if (e.task !== task || e.state !== 'ready') return;
    e.task = undefined;
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
      this.#wake();
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
    this.#set(e, 'closed', e.error);
    log('endpoint %s dropped: discovery no longer lists it', e.key);
    this.#wake();
  }

  #set(e: Endpoint, state: EndpointState, error?: RpcError): void {
    const previous = e.state;
    e.state = state;
    this.#state = this.#aggregate();
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

  #aggregate(): ClientState {
    if (this.#closed) return 'closed';
    const states = new Set(this.#endpoints.map((e) => e.state));
    if (states.has('ready')) return 'ready';
    if (states.has('connecting')) return 'connecting';
    if (states.has('transient-failure')) return 'transient-failure';
    if (states.has('closed')) return 'closed';
    return 'idle';
  }
}

function cancelled(signal: AbortSignal): RpcError {
  const reason = signal.reason;
  if (RpcError.is(reason) && reason.code === 'CANCELLED') return reason;
  return new RpcError('CANCELLED', 'the call was cancelled', reason === undefined ? {} : { cause: reason });
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
