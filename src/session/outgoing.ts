/**
 * Our calls in flight on one session, plain (Request) and streaming (Open) alike, in one table:
 * ids, deadlines, cancellation, our request streams, and the answers that settle them. Every call
 * leaves the table through #take, and one we give up on (deadline, signal, a consumer that stopped,
 * a bad answer) through #giveUp, which tells the callee with Cancel.
 */
import { RpcError } from '../errors.js';
import { Kind, OpenFlag, StreamDir, headerBytes, openHeader, payloadStart, requestHeader } from '../protocol/envelope.js';
import type { CallOptions, PeerInfo, StreamOptions } from '../types.js';
import { callEnd, callError, callStart } from '../observe.js';
import { badTimeLimit, isTimerMs } from '../limits.js';
import { decodeErrorPayload, undecodable } from './error-payload.js';
import { IdTable } from './id-table.js';
import { asRpcError, kEmpty, type Link } from './link.js';
import { Inbox, Outflow, isAsyncIterable, kDefaultWindow, kMaxWindow, pump } from './streams.js';

/** Where a Request's payload starts: its codec header (a bin's) goes there. */
const kRequestHeaderBytes = headerBytes(Kind.Request);

/**
 * One promise executor for every call: it leaves the promise's resolvers in these two slots, read
 * at once in the same synchronous step, so a call allocates no executor closure of its own.
 */
let takenResolve: (value: unknown) => void = () => {};
let takenReject: (err: RpcError) => void = () => {};
function takeResolvers(resolve: (value: unknown) => void, reject: (err: RpcError) => void): void {
  takenResolve = resolve;
  takenReject = reject;
}

/** A call of ours in flight: its result arrives in `inbox` (a result stream) or settles `resolve`/`reject` (one answer). */
interface OutCall {
  inbox: Inbox | undefined;
  resolve: ((value: unknown) => void) | undefined;
  reject: ((err: RpcError) => void) | undefined;
  /** Our request stream's credit, when the request is a stream. */
  upload: Outflow | undefined;
  /**
   * Sent as an Open. A result stream's End for an Open that waits for one answer is the peer's
   * mistake; stream envelopes naming a Request's id are dropped, as those of an unknown id are.
   */
  opened: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** performance.now() at send when someone listens to the call channels (plain calls only), else 0. */
  t0: number;
}

export interface OutgoingOptions {
  link: Link;
  peer: PeerInfo;
  /** First id handed out (see SessionOptions.firstId). */
  firstId: number;
}

export class Outgoing {
  readonly #link: Link;
  readonly #peer: PeerInfo;
  readonly #calls = new IdTable<OutCall>();
  #nextId: number;

  constructor(options: OutgoingOptions) {
    this.#link = options.link;
    this.#peer = options.peer;
    this.#nextId = options.firstId;
  }

  /** Calls in flight. */
  get size(): number {
    return this.#calls.size;
  }

  /** See PeerClient.call. */
  call(request: unknown, options?: CallOptions): Promise<any> {
    const link = this.#link;
    if (link.closed) return Promise.reject(link.closed);
    if (isAsyncIterable(request)) return this.#callWithStream(request, options);
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    const refused = checkCallOptions(options);
    if (refused) return Promise.reject(refused);
    const timeoutMs = options?.timeoutMs;
    const deadline = deadlineOf(timeoutMs);
    let payload: Uint8Array = kEmpty;
    // Bytes go out as they are, behind their codec header: copied once, where they are sent.
    const binHeader = link.codec.bytesHeader(request, link.scratch.bytes, kRequestHeaderBytes);
    const direct = binHeader > 0;
    try {
      if (direct) link.checkSize(kRequestHeaderBytes + binHeader + (request as Uint8Array).length, 'a request');
      else link.checkSize(kRequestHeaderBytes + (payload = link.codec.encode(request)).length, 'a request');
    } catch (err) {
      return Promise.reject(err);
    }
    const id = this.#nextId++;
    const promise = new Promise(takeResolvers);
    const call: OutCall = { inbox: undefined, resolve: takenResolve, reject: takenReject, upload: undefined, opened: false, timer: undefined, signal, onAbort: undefined, t0: 0 };
    try {
      if (callStart.hasSubscribers || callEnd.hasSubscribers || callError.hasSubscribers) {
        call.t0 = performance.now();
        callStart.publish({ id, peer: this.#peer });
      }
      this.#arm(id, call, timeoutMs, deadline);
      this.#calls.set(id, call);
      if (direct) {
        requestHeader(link.scratch, id, deadline);
        // Written again beside its envelope header: a callStart subscriber may have sent through this session meanwhile.
        const n = link.codec.bytesHeader(request, link.scratch.bytes, kRequestHeaderBytes);
        link.sendSafely(link.scratch.view(kRequestHeaderBytes + n), request as Uint8Array);
      } else {
        link.sendSafely(requestHeader(link.scratch, id, deadline), payload);
      }
    } catch (err) {
      // The call rejects, as a throw inside a promise executor would make it (a signal that is
      // not an AbortSignal, say); its listener was never added, only its timer may need clearing.
      this.#calls.delete(id);
      if (call.timer !== undefined) clearTimeout(call.timer);
      call.reject!(RpcError.is(err) ? err : new RpcError('INVALID_ARGUMENT', `the call could not be made: ${(err as Error)?.message ?? err}`, { cause: err }));
    }
    return promise;
  }

  /** See Session.stream. */
  stream(request: unknown, options?: StreamOptions): AsyncIterableIterator<any> {
    const id = this.#nextId++;
    const window = options?.window ?? kDefaultWindow;
    const windowOk = Number.isInteger(window) && window >= 1 && window <= kMaxWindow;
    const inbox = new Inbox({
      window: windowOk ? window : kDefaultWindow,
      grant: (n) => {
        if (this.#calls.has(id)) this.#link.sendCredit(id, StreamDir.Down, n);
      },
      onReturn: () => this.#giveUp(id, undefined),
    });
    const refused =
      this.#link.closed ??
      checkCallOptions(options) ??
      (windowOk ? undefined : new RpcError('INVALID_ARGUMENT', `window must be an integer from 1 to ${kMaxWindow}, got ${window}`));
    if (refused !== undefined) {
      inbox.fail(refused, false);
      return inbox;
    }
    this.#open(id, request, options, { inbox, resolve: undefined, reject: undefined, upload: undefined, opened: true, timer: undefined, signal: options?.signal, onAbort: undefined, t0: 0 }, window);
    return inbox;
  }

  #callWithStream(request: AsyncIterable<unknown>, options: CallOptions | undefined): Promise<unknown> {
    const refused = checkCallOptions(options);
    if (refused !== undefined) return Promise.reject(refused);
    return new Promise((resolve, reject) => {
      this.#open(this.#nextId++, request, options, { inbox: undefined, resolve, reject, upload: undefined, opened: true, timer: undefined, signal: options?.signal, onAbort: undefined, t0: 0 }, 0);
    });
  }

  /** Sends an Open for `call` (registered under `id`) and starts its request stream, if any. */
  #open(id: number, request: unknown, options: CallOptions | undefined, call: OutCall, window: number): void {
    const link = this.#link;
    const signal = options?.signal;
    if (signal?.aborted) {
      this.#reject(id, call, cancelled(signal));
      return;
    }
    const upload = isAsyncIterable(request) ? request : undefined;
    let payload: Uint8Array = kEmpty;
    if (upload === undefined) {
      try {
        payload = link.codec.encode(request);
      } catch (err) {
        this.#reject(id, call, asRpcError(err));
        return;
      }
    }
    const timeoutMs = options?.timeoutMs;
    const deadline = deadlineOf(timeoutMs);
    this.#arm(id, call, timeoutMs, deadline);
    // The Open goes out before any item: the callee learns of the credit it grants only from it.
    call.upload = upload === undefined ? undefined : new Outflow(0);
    this.#calls.set(id, call);
    const flags = (call.inbox ? OpenFlag.ResultStream : 0) | (upload ? OpenFlag.RequestStream : 0);
    link.sendSafely(openHeader(link.scratch, id, deadline, flags, call.inbox ? window : 0), payload);
    if (upload !== undefined && this.#calls.get(id) === call) this.#upload(id, call, upload);
  }

  /** Starts call `id`'s deadline timer and listens to its signal: either gives the call up. */
  #arm(id: number, call: OutCall, timeoutMs: number | undefined, deadline: number): void {
    if (deadline > 0) call.timer = setTimeout(() => this.#giveUp(id, new RpcError('TIMEOUT', `call timed out after ${timeoutMs} ms`)), timeoutMs);
    const signal = call.signal;
    if (signal) {
      call.onAbort = () => this.#giveUp(id, cancelled(signal));
      signal.addEventListener('abort', call.onAbort, { once: true });
    }
  }

  /** Sends our request stream while the callee grants credit; ends it with End, or cancels the call if the source throws. */
  #upload(id: number, call: OutCall, source: AsyncIterable<unknown>): void {
    pump(source, call.upload!, (item) => this.#link.sendItem(id, StreamDir.Up, item)).then(
      (how) => {
        if (how === 'done' && this.#calls.get(id) === call && !this.#link.closed) this.#link.sendEnd(id, StreamDir.Up);
      },
      (err) => {
        if (this.#calls.get(id) !== call) return;
        const message = `the request stream failed: ${(err as Error)?.message ?? err}`;
        this.#giveUp(id, RpcError.is(err) && err.code !== 'REMOTE' ? err : new RpcError('CANCELLED', message, { cause: err }));
      },
    );
  }

  /**
   * Takes call `id` out of the table and stops its timer, signal and request stream: from then on
   * nothing but whoever took it can reach it (not its deadline, not close()), so that one settles
   * it, whatever decoding its answer does (see decodeErrorPayload and undecodable()).
   */
  #take(id: number): OutCall | undefined {
    const call = this.#calls.delete(id);
    if (call !== undefined) stop(call);
    return call;
  }

  /** Fails a call taken out of the table (or never put in); `afterQueued`: a result stream delivers what it holds first. */
  #reject(id: number, call: OutCall, err: RpcError, afterQueued = false): void {
    if (call.t0 !== 0) callError.publish({ id, peer: this.#peer, durationMs: performance.now() - call.t0, error: err });
    if (call.inbox !== undefined) call.inbox.fail(err, afterQueued);
    else call.reject!(err);
  }

  /** We give up on call `id`: it fails with `reason` (none: its consumer stopped reading) and the callee hears Cancel. */
  #giveUp(id: number, reason: RpcError | undefined): void {
    const call = this.#take(id);
    if (call !== undefined) this.#abandon(id, call, reason);
  }

  /** #giveUp for a call already taken out of the table. */
  #abandon(id: number, call: OutCall, reason: RpcError | undefined): void {
    if (reason !== undefined) this.#reject(id, call, reason);
    if (!this.#link.closed) this.#link.sendCancel(id);
  }

  /** A Response (`body`, checked) to call `id`; a late one, for a call given up on, is dropped. */
  response(id: number, body: Uint8Array): void {
    const call = this.#take(id);
    if (call === undefined) return;
    if (call.inbox !== undefined) {
      // A result stream ends with End or Error, never a Response.
      this.#abandon(id, call, new RpcError('PROTOCOL', 'the peer answered a stream call with a single response'));
      return;
    }
    let value: unknown;
    try {
      value = this.#link.decode(body, payloadStart(body));
    } catch (err) {
      this.#reject(id, call, undecodable(err));
      return;
    }
    if (call.t0 !== 0) callEnd.publish({ id, peer: this.#peer, durationMs: performance.now() - call.t0 });
    call.resolve!(value);
  }

  /** An Error payload for call `id`: a result stream delivers the items it holds before it. */
  error(id: number, payload: Uint8Array): void {
    const call = this.#take(id);
    if (call === undefined) return;
    this.#reject(id, call, decodeErrorPayload(this.#link.codec, payload), true);
  }

  /** An item of the result stream of call `id`. */
  resultItem(id: number, payload: Uint8Array): void {
    const inbox = this.#calls.get(id)?.inbox;
    if (inbox === undefined) return; // a late item of a stream we gave up on
    let item: unknown;
    try {
      item = this.#link.decode(payload);
    } catch (err) {
      this.#giveUp(id, undecodable(err));
      return;
    }
    if (!inbox.push(item)) this.#giveUp(id, new RpcError('PROTOCOL', 'the peer sent stream items beyond the credit it was given'));
  }

  /** The result stream of call `id` ended. */
  resultEnd(id: number): void {
    const call = this.#calls.get(id);
    if (call === undefined || !call.opened) return;
    if (call.inbox === undefined) {
      // A call that waits for one answer got a stream's end instead.
      this.#giveUp(id, new RpcError('PROTOCOL', 'the peer ended a result stream where a single response was due'));
      return;
    }
    this.#take(id);
    call.inbox.end();
  }

  /** The callee takes `n` more items of call `id`'s request stream (0: stop sending). */
  uploadCredit(id: number, n: number): void {
    this.#calls.get(id)?.upload?.add(n);
  }

  /** Fails every call in flight with `reason`; nothing is sent. */
  close(reason: RpcError): void {
    const calls = this.#calls.entries();
    this.#calls.clear();
    for (const [id, call] of calls) {
      stop(call);
      this.#reject(id, call, reason);
    }
  }
}

function stop(call: OutCall): void {
  if (call.timer !== undefined) clearTimeout(call.timer);
  if (call.onAbort !== undefined) call.signal!.removeEventListener('abort', call.onAbort);
  call.upload?.stop();
}

/** The deadline a call sends for a `timeoutMs` checkCallOptions passed: whole ms, at least 1; 0 for none (undefined, Infinity). */
function deadlineOf(timeoutMs: number | undefined): number {
  return timeoutMs === undefined || timeoutMs === Infinity ? 0 : Math.max(1, Math.ceil(timeoutMs));
}

/** The options error a call would reject with, if any. */
function checkCallOptions(options: CallOptions | undefined): RpcError | undefined {
  const timeoutMs = options?.timeoutMs;
  if (timeoutMs !== undefined && timeoutMs !== Infinity && !isTimerMs(timeoutMs)) return badTimeLimit('timeoutMs', timeoutMs);
  return undefined;
}

function cancelled(signal: AbortSignal): RpcError {
  const reason = signal.reason;
  if (RpcError.is(reason) && reason.code === 'CANCELLED') return reason;
  return new RpcError('CANCELLED', 'the call was cancelled', reason === undefined ? {} : { cause: reason });
}
