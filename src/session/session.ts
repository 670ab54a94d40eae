/**
 * The call layer of one connection, thread-neutral: the pending-call table, ids, deadlines,
 * cancellation, and dispatch of incoming requests and events to a handler. It sees only envelope
 * bodies: `send` hands one to whatever carries it (a framed socket in a worker, a ring to a worker
 * on the main thread), `receive` takes one in.
 */
import { createProxy } from '../service/proxy.js';
import type { ProxyOptions, ServiceProxy, UntypedApi } from '../service/types.js';
import { RpcError, fromWireError, remoteError, toWireError, asWireError, type WireError } from '../errors.js';
import type { Codec } from '../codec/index.js';
import { Kind, checkEnvelope, envelopeId, idHeader, kMaxDeadlineMs, kindHeader, readU32LE, requestHeader } from '../protocol/envelope.js';
import type { CallContext, CallOptions, Handler, PeerClient, PeerInfo } from '../types.js';
import { callEnd, callError, callStart } from '../observe.js';

/**
 * Delivers one envelope body, `head` followed by `payload`, to the peer, in order. Both are views
 * valid only during the call (the receiver copies them). A returned promise means "queued: wait
 * before sending more".
 */
export type SendBody = (head: Uint8Array, payload: Uint8Array) => void | Promise<void>;

const kEmpty = new Uint8Array(0);

export interface SessionOptions {
  codec: Codec;
  send: SendBody;
  peer: PeerInfo;
  handler?: Handler;
  /** First id this session hands out; sessions sharing a connection use disjoint ranges. */
  firstId?: number;
  /** Told about a handler error that has nobody to reach (a throwing `onEvent`). */
  onUnhandled?: (err: unknown) => void;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: RpcError): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** performance.now() at send when someone listens to the call channels, else 0. */
  t0: number;
}

/** Error payloads say who raised them: the peer's handler (`handler`) or its runtime (`runtime`). */
type ErrorPayload = WireError & { origin?: 'handler' | 'runtime' };

export class Session implements PeerClient {
  readonly peer: PeerInfo;
  readonly #codec: Codec;
  readonly #send: SendBody;
  readonly #handler: Handler | undefined;
  readonly #onUnhandled: (err: unknown) => void;
  readonly #pending = new Map<number, Pending>();
  /** Requests being served, by id: aborting one fires the handler's ctx.signal. */
  readonly #serving = new Map<number, Serving>();
  /** Header scratch: filled and handed to `send`, which copies it before returning. */
  readonly #scratch = new Uint8Array(16);
  #nextId: number;
  #closed: RpcError | undefined;

  constructor(options: SessionOptions) {
    this.#codec = options.codec;
    this.#send = options.send;
    this.peer = options.peer;
    this.#handler = options.handler;
    this.#nextId = options.firstId ?? 1;
    this.#onUnhandled = options.onUnhandled ?? ((err) => process.emitWarning(`ogurpchik: an onEvent handler threw: ${(err as Error)?.stack ?? err}`));
  }

  /** Why the session closed, once it has. */
  get closedWith(): RpcError | undefined {
    return this.#closed;
  }

  /** Calls in flight. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  call(request: unknown, options?: CallOptions): Promise<any> {
    if (this.#closed) return Promise.reject(this.#closed);
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    let timeoutMs = options?.timeoutMs;
    let deadline = 0;
    if (timeoutMs !== undefined) {
      if (!(timeoutMs >= 0)) return Promise.reject(new RpcError('INVALID_ARGUMENT', `timeoutMs must be a non-negative number, got ${timeoutMs}`));
      deadline = Math.min(Math.max(1, Math.ceil(timeoutMs)), kMaxDeadlineMs);
    }
    let payload: Uint8Array;
    const id = this.#nextId++;
    try {
      payload = this.#codec.encode(request);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const p: Pending = { resolve, reject, timer: undefined, signal, onAbort: undefined, t0: 0 };
      if (callStart.hasSubscribers || callEnd.hasSubscribers || callError.hasSubscribers) {
        p.t0 = performance.now();
        callStart.publish({ id, peer: this.peer });
      }
      if (deadline > 0) {
        p.timer = setTimeout(() => this.#giveUp(id, new RpcError('TIMEOUT', `call timed out after ${timeoutMs} ms`)), timeoutMs);
      }
      if (signal) {
        p.onAbort = () => this.#giveUp(id, cancelled(signal));
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.#pending.set(id, p);
      this.#sendSafely(requestHeader(this.#scratch, id, deadline), payload);
    });
  }

  proxy<Api = UntypedApi>(options?: ProxyOptions): ServiceProxy<Api> {
    return createProxy<Api>(this, options);
  }

  async notify(event: unknown): Promise<void> {
    if (this.#closed) throw this.#closed;
    const payload = this.#codec.encode(event);
    await this.#send(kindHeader(this.#scratch, Kind.Event), payload);
  }

  /** Takes one envelope body from the peer. Throws RpcError('PROTOCOL') when the body is malformed. */
  receive(body: Uint8Array): void {
    // Parsed in place (no envelope object): this runs once per message on both sides.
    const kind = checkEnvelope(body);
    switch (kind) {
      case Kind.Response: {
        const p = this.#settle(envelopeId(body));
        if (p === undefined) return; // late reply to a call that timed out or was cancelled
        let value: unknown;
        try {
          value = this.#codec.decode(body.subarray(9));
        } catch (err) {
          this.#fail(envelopeId(body), p, err as RpcError);
          return;
        }
        if (p.t0 !== 0) callEnd.publish({ id: envelopeId(body), peer: this.peer, durationMs: performance.now() - p.t0 });
        p.resolve(value);
        return;
      }
      case Kind.Error: {
        const p = this.#settle(envelopeId(body));
        if (p === undefined) return;
        this.#fail(envelopeId(body), p, this.#decodeError(body.subarray(9)));
        return;
      }
      case Kind.Request:
        this.#serve(envelopeId(body), readU32LE(body, 9), body.subarray(13));
        return;
      case Kind.Event:
        this.#event(body.subarray(1));
        return;
      case Kind.Cancel:
        this.#serving.get(envelopeId(body))?.abort(new RpcError('CANCELLED', 'the caller cancelled the call'));
        return;
      case Kind.Ping:
        this.#sendSafely(idHeader(this.#scratch, Kind.Pong, envelopeId(body)), kEmpty);
        return;
      case Kind.Pong:
        return;
      case Kind.Close:
        this.close(this.#decodeError(body.subarray(1), true));
        return;
      default:
        throw new RpcError('PROTOCOL', `envelope kind ${kind} is not valid here`);
    }
  }

  /** Rejects every pending call with `reason`, aborts every handler in progress, refuses further calls. Idempotent. */
  close(reason: RpcError): void {
    if (this.#closed) return;
    this.#closed = reason;
    const pending = [...this.#pending];
    this.#pending.clear();
    for (const [id, p] of pending) {
      clearPending(p);
      this.#fail(id, p, reason);
    }
    const serving = [...this.#serving.values()];
    this.#serving.clear();
    for (const call of serving) call.abort(reason);
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (p === undefined) return undefined;
    this.#pending.delete(id);
    clearPending(p);
    return p;
  }

  #fail(id: number, p: Pending, err: RpcError): void {
    if (p.t0 !== 0) callError.publish({ id, peer: this.peer, durationMs: performance.now() - p.t0, error: err });
    p.reject(err);
  }

  #giveUp(id: number, reason: RpcError): void {
    const p = this.#settle(id);
    if (p === undefined) return;
    this.#fail(id, p, reason);
    if (!this.#closed) this.#sendSafely(idHeader(this.#scratch, Kind.Cancel, id), kEmpty);
  }

  #sendSafely(head: Uint8Array, payload: Uint8Array): void {
    try {
      const r = this.#send(head, payload);
      if (r !== undefined) r.catch((err) => this.close(asRpcError(err)));
    } catch (err) {
      this.close(asRpcError(err));
    }
  }

  #decodeError(payload: Uint8Array, asIs = false): RpcError {
    let raw: unknown;
    try {
      raw = this.#codec.decode(payload);
    } catch (err) {
      return asRpcError(err);
    }
    const wire = asWireError(raw);
    if (wire === undefined) return new RpcError('PROTOCOL', 'the peer sent an error that is not an error');
    return asIs || (raw as ErrorPayload).origin === 'runtime' ? fromWireError(wire) : remoteError(wire);
  }

  #sendError(id: number, err: unknown, origin: 'handler' | 'runtime'): void {
    // A handler's refusal (see kRefusal) is sent as the runtime's: the caller sees its code.
    const wire: ErrorPayload = { ...toWireError(err), origin: origin === 'handler' && isRefusal(err) ? 'runtime' : origin };
    let payload: Uint8Array;
    try {
      payload = this.#codec.encode(wire);
    } catch {
      // Own properties the codec cannot carry: send the error without them.
      const { data: _dropped, cause: _cause, ...plain } = wire;
      payload = this.#codec.encode(plain);
    }
    this.#sendSafely(idHeader(this.#scratch, Kind.Error, id), payload);
  }

  #serve(id: number, deadlineMs: number, payload: Uint8Array): void {
    const onRequest = this.#handler?.onRequest;
    if (onRequest === undefined) {
      this.#sendError(id, new RpcError('UNIMPLEMENTED', 'the peer serves no requests on this connection'), 'runtime');
      return;
    }
    let request: unknown;
    try {
      request = this.#codec.decode(payload);
    } catch (err) {
      this.#sendError(id, err, 'runtime');
      return;
    }
    const call = new Serving(this, deadlineMs);
    this.#serving.set(id, call);
    let result: unknown;
    try {
      result = onRequest.call(this.#handler, request, call);
    } catch (err) {
      this.#finish(id, call, undefined, err);
      return;
    }
    if (result !== null && typeof (result as PromiseLike<unknown>)?.then === 'function') {
      (result as PromiseLike<unknown>).then(
        (value) => this.#finish(id, call, value, undefined),
        (err) => this.#finish(id, call, undefined, err ?? new Error('handler rejected with ' + err)),
      );
    } else {
      this.#finish(id, call, result, undefined);
    }
  }

  #finish(id: number, call: Serving, value: unknown, err: unknown): void {
    call.done();
    this.#serving.delete(id);
    // The caller gave up (cancel or deadline) or the connection closed: nobody waits for this answer.
    if (call.aborted || this.#closed) return;
    if (err !== undefined) {
      this.#sendError(id, err, 'handler');
      return;
    }
    let payload: Uint8Array;
    try {
      payload = this.#codec.encode(value);
    } catch (encodeErr) {
      this.#sendError(id, encodeErr, 'runtime');
      return;
    }
    this.#sendSafely(idHeader(this.#scratch, Kind.Response, id), payload);
  }

  #event(payload: Uint8Array): void {
    const onEvent = this.#handler?.onEvent;
    if (onEvent === undefined) return;
    let event: unknown;
    try {
      event = this.#codec.decode(payload);
    } catch (err) {
      this.#onUnhandled(err);
      return;
    }
    try {
      const r = onEvent.call(this.#handler, event, new Serving(this, 0));
      if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(undefined, this.#onUnhandled);
    } catch (err) {
      this.#onUnhandled(err);
    }
  }
}

/**
 * One request being served, and the handler's `ctx`. The AbortController behind `ctx.signal` is
 * made only when a handler reads `signal`: most never do, and one per call was the largest single
 * cost of serving a small request (measured: 13% of a server worker's CPU).
 */
class Serving implements CallContext {
  readonly peer: PeerInfo;
  readonly client: PeerClient;
  readonly deadline?: number;
  aborted = false;
  #reason: RpcError | undefined;
  #controller: AbortController | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(session: Session, deadlineMs: number) {
    this.peer = session.peer;
    this.client = session;
    if (deadlineMs > 0) {
      this.deadline = Date.now() + deadlineMs;
      this.#timer = setTimeout(() => this.abort(new RpcError('TIMEOUT', `the caller's deadline of ${deadlineMs} ms passed`)), deadlineMs);
    }
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  abort(reason: RpcError): void {
    if (this.aborted) return;
    this.aborted = true;
    this.#reason = reason;
    this.done();
    this.#controller?.abort(reason);
  }

  /** The handler finished: its deadline timer is no longer needed. */
  done(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }
}

function clearPending(p: Pending): void {
  if (p.timer !== undefined) clearTimeout(p.timer);
  if (p.onAbort !== undefined) p.signal!.removeEventListener('abort', p.onAbort);
}

function cancelled(signal: AbortSignal): RpcError {
  const reason = signal.reason;
  if (RpcError.is(reason) && reason.code === 'CANCELLED') return reason;
  return new RpcError('CANCELLED', 'the call was cancelled', reason === undefined ? {} : { cause: reason });
}

export function asRpcError(err: unknown): RpcError {
  if (RpcError.is(err)) return err;
  return new RpcError('CLOSED', (err as Error)?.message ?? String(err), { cause: err });
}

/** Set (non-enumerable) on an error a handler throws to refuse a request as the runtime would: the caller sees its code, not REMOTE. */
export const kRefusal = Symbol.for('ogurpchik.refusal');

function isRefusal(err: unknown): boolean {
  return (err as { [kRefusal]?: unknown } | null | undefined)?.[kRefusal] === true;
}
