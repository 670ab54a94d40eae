/**
 * Our calls in flight on one session, plain (Request) and streaming (Open) alike, in one table:
 * ids, deadlines, cancellation, our request streams, and the answers that settle them. Every call
 * leaves the table through #take, and one we give up on (deadline, signal, a consumer that stopped,
 * a bad answer) through #giveUp, which tells the callee with Cancel.
 */
import { RpcError, messageOf } from '../errors.js';
import { Kind, OpenFlag, StreamDir, headerBytes, openHeader, payloadStart, requestHeader } from '../protocol/envelope.js';
import type { CallOptions, PeerInfo, StreamOptions } from '../types.js';
import { callEnd, callError, callStart } from '../observe.js';
import { callOptionsError } from '../call-options.js';
import { decodeErrorPayload, undecodable } from './error-payload.js';
import { IdTable } from './id-table.js';
import { kEmpty, unsendable, type Link } from './link.js';
import { Inbox, Outflow, isAsyncIterable, kDefaultWindow, pump } from './streams.js';

/** Where a Request's payload starts: its codec header (a bin's) goes there. */
const kRequestHeaderBytes = headerBytes(Kind.Request);
const kOpenHeaderBytes = headerBytes(Kind.Open);

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
    const refused = callOptionsError(options);
    if (refused) return Promise.reject(refused);
    if (isAsyncIterable(request)) return this.#callWithStream(request, options);
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    const timeoutMs = options?.timeoutMs;
    const deadline = deadlineOf(timeoutMs);
    let payload: Uint8Array = kEmpty;
    let direct: boolean;
    try {
      // Bytes go out as they are, behind their codec header: copied once, where they are sent.
      const binHeader = link.codec.bytesHeader(request, link.scratch.bytes, kRequestHeaderBytes);
      direct = binHeader > 0;
      if (direct) link.checkSize(kRequestHeaderBytes + binHeader + (request as Uint8Array).length, 'a request');
      else link.checkSize(kRequestHeaderBytes + (payload = link.codec.encode(request)).length, 'a request');
    } catch (err) {
      return Promise.reject(unsendable(err));
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
      this.#unmake(id, call, err);
    }
    return promise;
  }

  /** See Session.stream. */
  stream(request: unknown, options?: StreamOptions): AsyncIterableIterator<any> {
    // Refused as call() refuses, but through the iterator: its first next() rejects.
    const refused = this.#link.closed ?? callOptionsError(options, true);
    const id = this.#nextId++;
    const window = refused === undefined ? (options?.window ?? kDefaultWindow) : kDefaultWindow;
    const inbox = new Inbox({
      window,
      grant: (n) => {
        if (this.#calls.has(id)) this.#link.sendCredit(id, StreamDir.Down, n);
      },
      onReturn: () => this.#giveUp(id, undefined),
    });
    if (refused !== undefined) {
      inbox.fail(refused, false);
      return inbox;
    }
    this.#open(id, request, options, { inbox, resolve: undefined, reject: undefined, upload: undefined, opened: true, timer: undefined, signal: options?.signal, onAbort: undefined, t0: 0 }, window);
    return inbox;
  }

  /** A call whose request is a stream (its options already checked). */
  #callWithStream(request: AsyncIterable<unknown>, options: CallOptions | undefined): Promise<unknown> {
    const promise = new Promise(takeResolvers);
    this.#open(this.#nextId++, request, options, { inbox: undefined, resolve: takenResolve, reject: takenReject, upload: undefined, opened: true, timer: undefined, signal: options?.signal, onAbort: undefined, t0: 0 }, 0);
    return promise;
  }

  /**
   * Sends an Open for `call` (registered under `id`) and starts its request stream, if any. Its
   * options were checked; a request refused here (unencodable, over maxFrameBytes) fails as
   * call()'s would, before anything is armed or sent.
   */
  #open(id: number, request: unknown, options: CallOptions | undefined, call: OutCall, window: number): void {
    const link = this.#link;
    const signal = options?.signal;
    if (signal?.aborted) {
      this.#reject(id, call, cancelled(signal));
      return;
    }
    const upload = isAsyncIterable(request) ? request : undefined;
    let payload: Uint8Array = kEmpty;
    try {
      if (upload === undefined) payload = link.codec.encode(request);
      link.checkSize(kOpenHeaderBytes + payload.length, 'a request');
    } catch (err) {
      this.#reject(id, call, unsendable(err));
      return;
    }
    const timeoutMs = options?.timeoutMs;
    const deadline = deadlineOf(timeoutMs);
    try {
      this.#arm(id, call, timeoutMs, deadline);
      // The Open goes out before any item: the callee learns of the credit it grants only from it.
      call.upload = upload === undefined ? undefined : new Outflow(0);
      this.#calls.set(id, call);
      const flags = (call.inbox ? OpenFlag.ResultStream : 0) | (upload ? OpenFlag.RequestStream : 0);
      link.sendSafely(openHeader(link.scratch, id, deadline, flags, call.inbox ? window : 0), payload);
    } catch (err) {
      this.#unmake(id, call, err);
      return;
    }
    if (upload !== undefined && this.#calls.get(id) === call) this.#upload(id, call, upload);
  }

  /**
   * Undoes a call that threw while it was being made (a signal whose addEventListener throws):
   * out of the table, its timer and listener gone, rejected as a throw in a promise executor would.
   */
  #unmake(id: number, call: OutCall, err: unknown): void {
    if (this.#calls.get(id) === call) this.#calls.delete(id);
    stop(call);
    this.#reject(id, call, RpcError.is(err) ? err : new RpcError('INVALID_ARGUMENT', `the call could not be made: ${messageOf(err)}`, { cause: err }));
  }

  /** Listens to call `id`'s signal and starts its deadline timer: either gives the call up. */
  #arm(id: number, call: OutCall, timeoutMs: number | undefined, deadline: number): void {
    // The listener first: a signal that throws when listened to leaves no timer behind.
    const signal = call.signal;
    if (signal) {
      const onAbort = () => this.#giveUp(id, cancelled(signal));
      signal.addEventListener('abort', onAbort, { once: true });
      call.onAbort = onAbort;
    }
    if (deadline > 0) call.timer = setTimeout(() => this.#giveUp(id, new RpcError('TIMEOUT', `call timed out after ${timeoutMs} ms`)), timeoutMs);
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

function cancelled(signal: AbortSignal): RpcError {
  const reason = signal.reason;
  if (RpcError.is(reason) && reason.code === 'CANCELLED') return reason;
  return new RpcError('CANCELLED', 'the call was cancelled', reason === undefined ? {} : { cause: reason });
}
