/**
 * The call layer of one connection, thread-neutral: the pending-call table, ids, deadlines,
 * cancellation, and dispatch of incoming requests and events to a handler. It sees only envelope
 * bodies: `send` hands one to whatever carries it (a framed socket in a worker, a ring to a worker
 * on the main thread), `receive` takes one in.
 */
import { createProxy } from '../service/proxy.js';
import type { ProxyOptions, ServiceProxy, UntypedApi } from '../service/types.js';
import { RpcError, fromWireError, messageOf, remoteError, toWireError, asWireError, type WireError } from '../errors.js';
import type { Codec } from '../codec/index.js';
import {
  Kind,
  OpenFlag,
  StreamDir,
  checkEnvelope,
  creditHeader,
  encodePong,
  creditOf,
  deadlineMsOf,
  dirOf,
  envelopeId,
  idHeader,
  kindHeader,
  openCreditOf,
  openFlagsOf,
  openHeader,
  payloadOf,
  payloadStart,
  requestHeader,
  HeaderScratch,
  headerBytes,
  streamHeader,
} from '../protocol/envelope.js';
import type { CallContext, CallOptions, Handler, PeerClient, PeerInfo, StreamOptions } from '../types.js';
import { callEnd, callError, callStart, countCopied } from '../observe.js';
import { badTimeLimit, isTimerMs, kMaxTimerMs } from '../limits.js';
import { IdTable } from './id-table.js';
import { Inbox, Outflow, isAsyncIterable, kDefaultWindow, kMaxWindow, pump } from './streams.js';

/**
 * Delivers one envelope body, `head` followed by `payload`, to the peer, in order. Both are views
 * valid only during the call (the receiver copies them). A returned promise means "queued: wait
 * before sending more".
 */
export type SendBody = (head: Uint8Array, payload: Uint8Array) => void | Promise<void>;

/** Payloads at least this large, when nobody reuses their bytes, are decoded with binary values left in place. */
const kDecodeInPlaceBytes = 64 * 1024;
const kEmpty = new Uint8Array(0);

/** The errors a session made for events it could not decode (as opposed to what a handler threw). */
const undecodableEvents = new WeakSet<object>();

/** SessionOptions.onUnhandled by default: a process warning that says which of the two it was. */
function warnUnhandled(err: unknown): void {
  if (undecodableEvents.has(err as object)) process.emitWarning(`ogurpchik: ${(err as Error).message}`);
  else process.emitWarning(`ogurpchik: an onEvent handler threw: ${(err as Error)?.stack ?? err}`);
}

export interface SessionOptions {
  codec: Codec;
  send: SendBody;
  peer: PeerInfo;
  handler?: Handler;
  /** First id this session hands out; sessions sharing a connection use disjoint ranges. */
  firstId?: number;
  /**
   * Told what has nobody to reach: a throwing `onEvent`, and an event whose payload could not be
   * decoded (an RpcError 'PROTOCOL'; only the first of each session). Default: a process warning.
   */
  onUnhandled?: (err: unknown) => void;
  /**
   * Largest body this session sends (the node's maxFrameBytes; default no limit). A request,
   * answer, event or stream item over it fails on its own with FRAME_TOO_LARGE instead of going
   * out: a peer with the same limit would close the whole connection over it.
   */
  maxFrameBytes?: number;
  /**
   * Most calls of the peer this session serves at once (default no limit): a Request or Open
   * beyond it is answered at once with BUSY and its handler does not run. A call counts from its
   * arrival until its handler has finished (a result stream: until the stream has ended), so a
   * cancelled call whose handler ignores the signal keeps its place.
   */
  maxConcurrentCalls?: number;
  /** Whether the errors this session sends carry their stacks (default false; see sendsStacks in errors.ts). */
  sendStacks?: boolean;
}

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

/** Where a Request's and a Response's payload starts: its codec header (a bin's) goes there. */
const kRequestHeaderBytes = headerBytes(Kind.Request);
const kResponseHeaderBytes = headerBytes(Kind.Response);

interface Pending {
  resolve(value: unknown): void;
  reject(err: RpcError): void;
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** performance.now() at send when someone listens to the call channels, else 0. */
  t0: number;
}

/**
 * A call of ours that streams one way or both (opened with an Open envelope): its result arrives
 * in `inbox` (a result stream) or settles `resolve`/`reject` (a request stream with one answer).
 */
interface OutCall {
  inbox: Inbox | undefined;
  resolve: ((value: unknown) => void) | undefined;
  reject: ((err: RpcError) => void) | undefined;
  /** Our request stream's credit, when the request is a stream. */
  upload: Outflow | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** Error payloads say who raised them: the peer's handler (`handler`) or its runtime (`runtime`). */
type ErrorPayload = WireError & { origin?: 'handler' | 'runtime' };

export class Session implements PeerClient {
  readonly peer: PeerInfo;
  readonly #codec: Codec;
  readonly #send: SendBody;
  readonly #handler: Handler | undefined;
  readonly #onUnhandled: (err: unknown) => void;
  readonly #pending = new IdTable<Pending>();
  /** Our calls in flight that stream (Open): kept apart so the plain call path stays as it was. */
  readonly #outgoing = new Map<number, OutCall>();
  /** Requests being served, by id: aborting one fires the handler's ctx.signal. */
  readonly #serving = new IdTable<Serving>();
  /** Header scratch: filled and handed to `send`, which copies it before returning. */
  readonly #scratch = new HeaderScratch();
  #nextId: number;
  #closed: RpcError | undefined;
  /** An in-place codec (the view codec): its values keep the bytes they were decoded from. */
  readonly #inPlace: boolean;
  readonly #maxBody: number;
  readonly #maxServing: number;
  readonly #sendStacks: boolean;
  /**
   * Calls being served, counted apart from #serving: a peer that reuses an id still being served
   * replaces the table's entry, and must not get a second handler past the limit that way.
   */
  #servingNow = 0;
  /** Events whose payload could not be decoded (dropped). */
  #undecodableEvents = 0;
  /** Set by drain(): called once no call is being served any more. */
  #onDrained: (() => void) | undefined;

  constructor(options: SessionOptions) {
    this.#codec = options.codec;
    this.#send = options.send;
    this.peer = options.peer;
    this.#handler = options.handler;
    this.#nextId = options.firstId ?? 1;
    this.#inPlace = options.codec.inPlace;
    this.#maxBody = options.maxFrameBytes ?? Infinity;
    this.#maxServing = options.maxConcurrentCalls ?? Infinity;
    this.#onUnhandled = options.onUnhandled ?? warnUnhandled;
    this.#sendStacks = options.sendStacks ?? false;
  }

  /** Why the session closed, once it has. */
  get closedWith(): RpcError | undefined {
    return this.#closed;
  }

  /** Calls in flight. */
  get pendingCount(): number {
    return this.#pending.size + this.#outgoing.size;
  }

  call(request: unknown, options?: CallOptions): Promise<any> {
    if (this.#closed) return Promise.reject(this.#closed);
    if (isAsyncIterable(request)) return this.#callWithStream(request, options);
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(cancelled(signal));
    const refused = checkCallOptions(options);
    if (refused) return Promise.reject(refused);
    const timeoutMs = options?.timeoutMs;
    const deadline = deadlineOf(timeoutMs);
    let payload: Uint8Array = kEmpty;
    // Bytes go out as they are, behind their codec header: copied once, where they are sent.
    const binHeader = this.#codec.bytesHeader(request, this.#scratch.bytes, kRequestHeaderBytes);
    const direct = binHeader > 0;
    try {
      if (direct) this.#checkSize(kRequestHeaderBytes + binHeader + (request as Uint8Array).length, 'a request');
      else this.#checkSize(kRequestHeaderBytes + (payload = this.#codec.encode(request)).length, 'a request');
    } catch (err) {
      return Promise.reject(err);
    }
    const id = this.#nextId++;
    const promise = new Promise(takeResolvers);
    const p: Pending = { resolve: takenResolve, reject: takenReject, timer: undefined, signal, onAbort: undefined, t0: 0 };
    try {
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
      if (direct) {
        requestHeader(this.#scratch, id, deadline);
        // Written again beside its envelope header: a callStart subscriber may have sent through this session meanwhile.
        const n = this.#codec.bytesHeader(request, this.#scratch.bytes, kRequestHeaderBytes);
        this.#sendSafely(this.#scratch.view(kRequestHeaderBytes + n), request as Uint8Array);
      } else {
        this.#sendSafely(requestHeader(this.#scratch, id, deadline), payload);
      }
    } catch (err) {
      // The call rejects, as a throw inside a promise executor would make it (a signal that is
      // not an AbortSignal, say); its listener was never added, only its timer may need clearing.
      this.#pending.delete(id);
      if (p.timer !== undefined) clearTimeout(p.timer);
      p.reject(RpcError.is(err) ? err : new RpcError('INVALID_ARGUMENT', `the call could not be made: ${(err as Error)?.message ?? err}`, { cause: err }));
    }
    return promise;
  }

  proxy<Api = UntypedApi>(options?: ProxyOptions): ServiceProxy<Api> {
    return createProxy<Api>(this, options);
  }

  async notify(event: unknown): Promise<void> {
    if (this.#closed) throw this.#closed;
    const payload = this.#codec.encode(event);
    const head = kindHeader(this.#scratch, Kind.Event);
    this.#checkSize(head.length + payload.length, 'an event');
    await this.#send(head, payload);
  }

  /**
   * Calls a handler that answers with a stream: returns an async iterator over its items (a
   * request that is itself an async iterable is sent as a stream too). Flow control keeps at most
   * `window` items unread; `return()` (or `break`), `signal` and `timeoutMs` cancel it at the peer.
   */
  stream(request: unknown, options?: StreamOptions): AsyncIterableIterator<any> {
    const id = this.#nextId++;
    const window = options?.window ?? kDefaultWindow;
    const windowOk = Number.isInteger(window) && window >= 1 && window <= kMaxWindow;
    const inbox = new Inbox({
      window: windowOk ? window : kDefaultWindow,
      grant: (n) => {
        if (this.#outgoing.has(id)) this.#sendSafely(creditHeader(this.#scratch, id, StreamDir.Down, n), kEmpty);
      },
      onReturn: () => this.#giveUpStream(id, undefined),
    });
    const refused =
      this.#closed ??
      checkCallOptions(options) ??
      (windowOk ? undefined : new RpcError('INVALID_ARGUMENT', `window must be an integer from 1 to ${kMaxWindow}, got ${window}`));
    if (refused !== undefined) {
      inbox.fail(refused, false);
      return inbox;
    }
    this.#open(id, request, options, { inbox, resolve: undefined, reject: undefined, upload: undefined, timer: undefined, signal: options?.signal, onAbort: undefined }, window);
    return inbox;
  }

  #callWithStream(request: AsyncIterable<unknown>, options: CallOptions | undefined): Promise<unknown> {
    const refused = checkCallOptions(options);
    if (refused !== undefined) return Promise.reject(refused);
    return new Promise((resolve, reject) => {
      this.#open(this.#nextId++, request, options, { inbox: undefined, resolve, reject, upload: undefined, timer: undefined, signal: options?.signal, onAbort: undefined }, 0);
    });
  }

  /** Sends an Open for `out` (registered under `id`) and starts its request stream, if any. */
  #open(id: number, request: unknown, options: CallOptions | undefined, out: OutCall, window: number): void {
    const signal = options?.signal;
    if (signal?.aborted) {
      this.#failOut(out, cancelled(signal));
      return;
    }
    const upload = isAsyncIterable(request) ? request : undefined;
    let payload: Uint8Array = kEmpty;
    if (upload === undefined) {
      try {
        payload = this.#codec.encode(request);
      } catch (err) {
        this.#failOut(out, asRpcError(err));
        return;
      }
    }
    const timeoutMs = options?.timeoutMs;
    const deadline = deadlineOf(timeoutMs);
    if (deadline > 0) out.timer = setTimeout(() => this.#giveUpStream(id, new RpcError('TIMEOUT', `call timed out after ${timeoutMs} ms`)), timeoutMs);
    if (signal) {
      out.onAbort = () => this.#giveUpStream(id, cancelled(signal));
      signal.addEventListener('abort', out.onAbort, { once: true });
    }
    // The Open goes out before any item: the callee learns of the credit it grants only from it.
    out.upload = upload === undefined ? undefined : new Outflow(0);
    this.#outgoing.set(id, out);
    const flags = (out.inbox ? OpenFlag.ResultStream : 0) | (upload ? OpenFlag.RequestStream : 0);
    this.#sendSafely(openHeader(this.#scratch, id, deadline, flags, out.inbox ? window : 0), payload);
    if (upload !== undefined && this.#outgoing.get(id) === out) this.#upload(id, out, upload);
  }

  /** Sends our request stream while the callee grants credit; ends it with End, or cancels the call if the source throws. */
  #upload(id: number, out: OutCall, source: AsyncIterable<unknown>): void {
    pump(source, out.upload!, (item) => this.#sendItem(id, StreamDir.Up, item)).then(
      (how) => {
        if (how === 'done' && this.#outgoing.get(id) === out && !this.#closed) this.#sendSafely(streamHeader(this.#scratch, Kind.End, id, StreamDir.Up), kEmpty);
      },
      (err) => {
        if (this.#outgoing.get(id) !== out) return;
        const message = `the request stream failed: ${(err as Error)?.message ?? err}`;
        this.#giveUpStream(id, RpcError.is(err) && err.code !== 'REMOTE' ? err : new RpcError('CANCELLED', message, { cause: err }));
      },
    );
  }

  /** One item of stream `dir` of call `id`; a returned promise means "queued: wait before sending more". */
  #sendItem(id: number, dir: StreamDir, item: unknown): void | Promise<void> {
    const payload = this.#codec.encode(item);
    const head = streamHeader(this.#scratch, Kind.Item, id, dir);
    this.#checkSize(head.length + payload.length, 'a stream item');
    return this.#send(head, payload);
  }

  /** FRAME_TOO_LARGE for a body over this end's maxFrameBytes (it fails alone and is not sent; the connection stays), else undefined. */
  #tooLarge(bytes: number, what: string): RpcError | undefined {
    if (bytes <= this.#maxBody) return undefined;
    return new RpcError('FRAME_TOO_LARGE', `${what} of ${bytes} bytes exceeds maxFrameBytes (${this.#maxBody}): not sent`, { data: { length: bytes, max: this.#maxBody } });
  }

  #checkSize(bytes: number, what: string): void {
    const err = this.#tooLarge(bytes, what);
    if (err !== undefined) throw err;
  }

  /** Our streaming call ended: forget it, stop its timers and its request stream. */
  #endOut(id: number): OutCall | undefined {
    const out = this.#outgoing.get(id);
    if (out === undefined) return undefined;
    this.#outgoing.delete(id);
    if (out.timer !== undefined) clearTimeout(out.timer);
    if (out.onAbort !== undefined) out.signal!.removeEventListener('abort', out.onAbort);
    out.upload?.stop();
    return out;
  }

  #failOut(out: OutCall, err: RpcError, afterQueued = false): void {
    if (out.inbox) out.inbox.fail(err, afterQueued);
    else out.reject!(err);
  }

  /** We give up on streaming call `id` (cancel, deadline, the consumer stopped, a bad item): tell the callee. */
  #giveUpStream(id: number, reason: RpcError | undefined): void {
    const out = this.#endOut(id);
    if (out === undefined) return;
    if (reason !== undefined) this.#failOut(out, reason);
    if (!this.#closed) this.#sendSafely(idHeader(this.#scratch, Kind.Cancel, id), kEmpty);
  }

  /** Takes one envelope body from the peer. Throws RpcError('PROTOCOL') when the body is malformed. */
  receive(body: Uint8Array): void {
    // Parsed in place (no envelope object): this runs once per message on both sides.
    const kind = checkEnvelope(body);
    switch (kind) {
      case Kind.Response: {
        const p = this.#settle(envelopeId(body));
        if (p === undefined) {
          this.#answerOut(envelopeId(body), payloadOf(body), false);
          return; // or a late reply to a call that timed out or was cancelled
        }
        let value: unknown;
        try {
          value = this.#decode(body, payloadStart(body));
        } catch (err) {
          this.#fail(envelopeId(body), p, undecodable(err));
          return;
        }
        if (p.t0 !== 0) callEnd.publish({ id: envelopeId(body), peer: this.peer, durationMs: performance.now() - p.t0 });
        p.resolve(value);
        return;
      }
      case Kind.Error: {
        const p = this.#settle(envelopeId(body));
        if (p === undefined) {
          this.#answerOut(envelopeId(body), payloadOf(body), true);
          return;
        }
        this.#fail(envelopeId(body), p, this.#decodeError(payloadOf(body)));
        return;
      }
      case Kind.Request:
        this.#serve(envelopeId(body), deadlineMsOf(body), 0, 0, body, payloadStart(body));
        return;
      case Kind.Event:
        this.#event(payloadOf(body));
        return;
      case Kind.Cancel:
        this.#serving.get(envelopeId(body))?.abort(new RpcError('CANCELLED', 'the caller cancelled the call'));
        return;
      case Kind.Open:
        this.#serve(envelopeId(body), deadlineMsOf(body), openFlagsOf(body), openCreditOf(body), body, payloadStart(body));
        return;
      case Kind.Item:
        if (dirOf(body) === StreamDir.Down) this.#resultItem(envelopeId(body), payloadOf(body));
        else this.#requestItem(envelopeId(body), payloadOf(body));
        return;
      case Kind.End:
        if (dirOf(body) === StreamDir.Down) this.#resultEnd(envelopeId(body));
        else this.#serving.get(envelopeId(body))?.requestStream?.end();
        return;
      case Kind.Credit:
        if (dirOf(body) === StreamDir.Down) this.#serving.get(envelopeId(body))?.resultFlow?.add(creditOf(body));
        else this.#outgoing.get(envelopeId(body))?.upload?.add(creditOf(body));
        return;
      case Kind.Ping:
        this.#sendSafely(encodePong(body), kEmpty);
        return;
      case Kind.Pong:
        return;
      case Kind.Close:
        this.close(this.#decodeError(payloadOf(body), true));
        return;
      default:
        throw new RpcError('PROTOCOL', `envelope kind ${kind} is not valid here`);
    }
  }

  /** Calls of the peer being served now (their handler running, or their result stream going). */
  get servingCount(): number {
    return this.#servingNow;
  }

  /**
   * Stops serving new calls: from now on a Request or Open is answered at once with UNAVAILABLE
   * (`data: { closing: true }`; its handler does not run, so the caller may send it again
   * elsewhere), while the calls being served finish and their answers go out. `onDrained` runs
   * once none is left, after the last answer was handed to `send` (at once, in a microtask, when
   * none is being served). Our own calls and the peer's events carry on. Once only.
   */
  drain(onDrained: () => void): void {
    if (this.#onDrained !== undefined || this.#closed) return;
    this.#onDrained = onDrained;
    if (this.#servingNow === 0) queueMicrotask(onDrained);
  }

  /** Rejects every pending call with `reason`, aborts every handler in progress, refuses further calls. Idempotent. */
  close(reason: RpcError): void {
    if (this.#closed) return;
    this.#closed = reason;
    const pending = this.#pending.entries();
    this.#pending.clear();
    for (const [id, p] of pending) {
      clearPending(p);
      this.#fail(id, p, reason);
    }
    for (const id of [...this.#outgoing.keys()]) this.#failOut(this.#endOut(id)!, reason);
    const serving = this.#serving.values();
    this.#serving.clear();
    for (const call of serving) call.abort(reason);
  }

  /**
   * Takes call `id` out of the table and stops its timer and signal: from then on nothing but
   * its settling can reach it (not its deadline, not close()), so whoever takes it settles it,
   * whatever decoding its answer does (see #decodeError and undecodable()).
   */
  #settle(id: number): Pending | undefined {
    const p = this.#pending.delete(id);
    if (p === undefined) return undefined;
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

  /**
   * Decodes the payload that starts at `start` in `bytes` (the rest of it). A body in shared
   * memory is a view into a ring, reused once `receive` returns: an in-place value is made over a
   * copy of it. Socket bodies (and messages the ring reassembled) are never reused, so values stay
   * over them in place, and so do the binary values msgpack decodes from a large one.
   */
  #decode(bytes: Uint8Array, start = 0): unknown {
    // Binary values of a large payload stay views into it. A small one is copied out, so that a
    // few bytes kept by the handler do not pin the whole socket chunk they arrived in. (Reading
    // `.buffer` is a call into V8's C++ runtime: a small payload of msgpack or json skips it.)
    const large = bytes.length - start >= kDecodeInPlaceBytes;
    if (!large && !this.#inPlace) return this.#codec.decodeFrom(bytes, start, false);
    const shared = bytes.buffer instanceof SharedArrayBuffer;
    if (this.#inPlace && shared) {
      countCopied(bytes.length - start);
      return this.#codec.decode(bytes.slice(start));
    }
    return this.#codec.decodeFrom(bytes, start, !shared && large);
  }

  /** A Response or Error to one of our streaming calls (taken out of #outgoing, as #settle does, only to be settled at once). */
  #answerOut(id: number, payload: Uint8Array, isError: boolean): void {
    const out = this.#outgoing.get(id);
    if (out === undefined) return;
    if (isError) {
      const err = this.#decodeError(payload);
      this.#endOut(id);
      this.#failOut(out, err, true);
      return;
    }
    if (out.inbox !== undefined) {
      // A result stream ends with End or Error, never a Response.
      this.#giveUpStream(id, new RpcError('PROTOCOL', 'the peer answered a stream call with a single response'));
      return;
    }
    this.#endOut(id);
    try {
      out.resolve!(this.#decode(payload));
    } catch (err) {
      out.reject!(undecodable(err));
    }
  }

  /** The result stream of our call `id` ended. */
  #resultEnd(id: number): void {
    const out = this.#outgoing.get(id);
    if (out === undefined) return;
    if (out.inbox === undefined) {
      // A call that waits for one answer got a stream's end instead.
      this.#giveUpStream(id, new RpcError('PROTOCOL', 'the peer ended a result stream where a single response was due'));
      return;
    }
    this.#endOut(id);
    out.inbox.end();
  }

  /** An item of the result stream of our call `id`. */
  #resultItem(id: number, payload: Uint8Array): void {
    const inbox = this.#outgoing.get(id)?.inbox;
    if (inbox === undefined) return; // a late item of a stream we gave up on
    let item: unknown;
    try {
      item = this.#decode(payload);
    } catch (err) {
      this.#giveUpStream(id, undecodable(err));
      return;
    }
    if (!inbox.push(item)) this.#giveUpStream(id, new RpcError('PROTOCOL', 'the peer sent stream items beyond the credit it was given'));
  }

  /** An item of the request stream of the peer's call `id`, which we serve. */
  #requestItem(id: number, payload: Uint8Array): void {
    const call = this.#serving.get(id);
    const inbox = call?.requestStream;
    if (inbox === undefined) return;
    let item: unknown;
    try {
      item = this.#decode(payload);
    } catch (err) {
      inbox.fail(undecodable(err), true);
      this.#sendSafely(creditHeader(this.#scratch, id, StreamDir.Up, 0), kEmpty);
      return;
    }
    if (!inbox.push(item)) {
      inbox.fail(new RpcError('PROTOCOL', 'the caller sent request items beyond the credit it was given'), false);
      this.#sendSafely(creditHeader(this.#scratch, id, StreamDir.Up, 0), kEmpty);
    }
  }

  /**
   * Serves a call: a Request (`flags` 0) or an Open, whose request may be a stream (the handler
   * reads an Inbox) and whose answer may be one (pulled against the caller's credit). The
   * request's payload is `body` from `start` on (no view made: this runs once per request).
   */
  #serve(id: number, deadlineMs: number, flags: number, credit: number, body: Uint8Array, start: number): void {
    const onRequest = this.#handler?.onRequest;
    if (onRequest === undefined) {
      this.#sendError(id, new RpcError('UNIMPLEMENTED', 'the peer serves no requests on this connection'), 'runtime');
      return;
    }
    if (this.#onDrained !== undefined) {
      this.#sendError(id, new RpcError('UNAVAILABLE', 'the server is closing: this call was not run, so it may be sent again (to another endpoint)', { data: { closing: true } }), 'runtime');
      return;
    }
    if (this.#servingNow >= this.#maxServing) {
      const max = this.#maxServing;
      this.#sendError(id, new RpcError('BUSY', `the server already serves ${max} calls of this connection (its maxConcurrentCalls): call again once one has finished`, { data: { max } }), 'runtime');
      return;
    }
    let request: unknown;
    if ((flags & OpenFlag.RequestStream) === 0) {
      try {
        request = this.#decode(body, start);
      } catch (err) {
        this.#sendError(id, err, 'runtime');
        return;
      }
    }
    const call = new Serving(this, deadlineMs);
    this.#servingNow++;
    if (flags & OpenFlag.RequestStream) request = call.requestStream = this.#requestInbox(id, call);
    if (flags & OpenFlag.ResultStream) call.resultFlow = new Outflow(credit);
    this.#serving.set(id, call);
    if (call.requestStream) this.#sendSafely(creditHeader(this.#scratch, id, StreamDir.Up, kDefaultWindow), kEmpty);
    let result: unknown;
    try {
      result = onRequest.call(this.#handler, request, call);
    } catch (err) {
      // `throw undefined` is still a throw, not an answer of undefined.
      this.#finish(id, call, undefined, err === undefined ? new Error('the handler threw undefined') : err);
      return;
    }
    if (call.resultFlow === undefined) {
      this.#settleResult(id, call, result);
      return;
    }
    Promise.resolve(result).then(
      (value) => {
        if (!isAsyncIterable(value)) {
          this.#finish(id, call, undefined, new RpcError('INVALID_ARGUMENT', 'stream() was called, but the handler returned a single value, not an async iterable: use call()'), 'runtime');
          return;
        }
        this.#sendStream(id, call, value);
      },
      (err) => this.#finish(id, call, undefined, err ?? new Error('handler rejected with ' + err)),
    );
  }

  /** The handler's view of the caller's request stream: taking items grants the caller credit. */
  #requestInbox(id: number, call: Serving): Inbox {
    return new Inbox({
      window: kDefaultWindow,
      grant: (n) => {
        if (this.#serving.get(id) === call) this.#sendSafely(creditHeader(this.#scratch, id, StreamDir.Up, n), kEmpty);
      },
      // The handler stopped reading: credit 0 tells the caller to stop sending.
      onReturn: () => {
        if (this.#serving.get(id) === call) this.#sendSafely(creditHeader(this.#scratch, id, StreamDir.Up, 0), kEmpty);
      },
    });
  }

  /** Sends a handler's result stream while the caller grants credit, then End (or Error if it threw). */
  #sendStream(id: number, call: Serving, source: AsyncIterable<unknown>): void {
    // An item this side cannot send (too large, unencodable) fails the stream as the runtime's error, not the handler's.
    let unsendable: unknown;
    const send = (item: unknown) => {
      try {
        return this.#sendItem(id, StreamDir.Down, item);
      } catch (err) {
        unsendable = err;
        throw err;
      }
    };
    pump(source, call.resultFlow!, send).then(
      (how) => {
        this.#served(id, call);
        call.requestStream?.fail(new RpcError('CANCELLED', 'the call finished'), false);
        if (how === 'done' && !call.aborted && !this.#closed) this.#sendSafely(streamHeader(this.#scratch, Kind.End, id, StreamDir.Down), kEmpty);
      },
      (err) => this.#finish(id, call, undefined, err ?? new Error('the stream threw ' + err), err !== undefined && err === unsendable ? 'runtime' : 'handler'),
    );
  }

  #sendSafely(head: Uint8Array, payload: Uint8Array): void {
    try {
      const r = this.#send(head, payload);
      if (r !== undefined) r.catch((err) => this.close(asRpcError(err)));
    } catch (err) {
      this.close(asRpcError(err));
    }
  }

  /**
   * The error a peer's Error or Close payload says. Never throws: a call already out of its table
   * waits on the result, so anything decoding throws (a stack overflow, say) is a PROTOCOL error.
   */
  #decodeError(payload: Uint8Array, asIs = false): RpcError {
    try {
      const raw = this.#codec.decodeError(payload);
      const wire = asWireError(raw);
      if (wire === undefined) return new RpcError('PROTOCOL', 'the peer sent an error that is not an error');
      return asIs || (raw as ErrorPayload).origin === 'runtime' ? fromWireError(wire) : remoteError(wire);
    } catch (err) {
      return undecodable(err);
    }
  }

  #sendError(id: number, err: unknown, origin: 'handler' | 'runtime'): void {
    let read: WireError;
    try {
      read = toWireError(err, { stacks: this.#sendStacks });
    } catch (readErr) {
      // A getter that throws, a Proxy that refuses: the caller still gets an answer, and this
      // session (every call on the connection) carries on.
      read = { code: 'REMOTE', name: 'Error', message: `the handler threw an error that cannot be read: ${messageOf(readErr)}` };
    }
    // A handler's refusal (see kRefusal) is sent as the runtime's: the caller sees its code.
    const wire: ErrorPayload = { ...read, origin: origin === 'handler' && isRefusal(err) ? 'runtime' : origin };
    let payload: Uint8Array;
    try {
      payload = this.#codec.encodeError(wire);
    } catch {
      // Own properties the codec cannot carry: send the error without them.
      const { data: _dropped, cause: _cause, ...plain } = wire;
      payload = this.#codec.encodeError(plain);
    }
    this.#sendSafely(idHeader(this.#scratch, Kind.Error, id), payload);
  }

  /** A handler's single answer, or the promise of one. */
  #settleResult(id: number, call: Serving, result: unknown): void {
    if (result !== null && typeof (result as PromiseLike<unknown>)?.then === 'function') {
      (result as PromiseLike<unknown>).then(
        (value) => this.#finish(id, call, value, undefined),
        (err) => this.#finish(id, call, undefined, err ?? new Error('handler rejected with ' + err)),
      );
    } else {
      this.#finish(id, call, result, undefined);
    }
  }

  /** Call `id` has been served (its handler finished, or its result stream ended): it no longer counts. */
  #served(id: number, call: Serving): void {
    call.done();
    if (!call.served) {
      call.served = true;
      // Draining: the last call's answer is sent right after this returns; the connection may close after it.
      if (--this.#servingNow === 0 && this.#onDrained !== undefined) queueMicrotask(this.#onDrained);
    }
    if (this.#serving.get(id) === call) this.#serving.delete(id);
  }

  #finish(id: number, call: Serving, value: unknown, err: unknown, origin: 'handler' | 'runtime' = 'handler'): void {
    this.#served(id, call);
    // The handler no longer reads its request stream: whatever the caller still sends is dropped.
    call.requestStream?.fail(new RpcError('CANCELLED', 'the call finished'), false);
    if (isAsyncIterable(value)) {
      // A stream where one answer was expected: release it (a generator's finally runs) and say why.
      releaseIterable(value);
      err = new RpcError('INVALID_ARGUMENT', 'the handler returned a stream (an async iterable): call it with stream(), not call()');
      origin = 'runtime';
    }
    // The caller gave up (cancel or deadline) or the connection closed: nobody waits for this answer.
    if (call.aborted || this.#closed) return;
    if (err !== undefined) {
      this.#sendError(id, err, origin);
      return;
    }
    // Bytes go out as they are, behind their codec header (see call()).
    const n = this.#codec.bytesHeader(value, this.#scratch.bytes, kResponseHeaderBytes);
    if (n > 0) {
      const tooLarge = this.#tooLarge(kResponseHeaderBytes + n + (value as Uint8Array).length, "the handler's answer");
      if (tooLarge !== undefined) return this.#sendError(id, tooLarge, 'runtime');
      idHeader(this.#scratch, Kind.Response, id);
      this.#sendSafely(this.#scratch.view(kResponseHeaderBytes + n), value as Uint8Array);
      return;
    }
    let payload: Uint8Array;
    try {
      payload = this.#codec.encode(value);
    } catch (encodeErr) {
      // Said as the answer's fault: the caller would otherwise take it for its own request's.
      this.#sendError(id, new RpcError('INVALID_ARGUMENT', `the handler's answer cannot be sent: ${messageOf(encodeErr)}`), 'runtime');
      return;
    }
    const tooLarge = this.#tooLarge(kResponseHeaderBytes + payload.length, "the handler's answer");
    if (tooLarge !== undefined) return this.#sendError(id, tooLarge, 'runtime');
    this.#sendSafely(idHeader(this.#scratch, Kind.Response, id), payload);
  }

  #event(payload: Uint8Array): void {
    const onEvent = this.#handler?.onEvent;
    if (onEvent === undefined) return;
    let event: unknown;
    try {
      event = this.#decode(payload);
    } catch (err) {
      // The peer's bytes, not our handler: said once per connection, so a peer sending nothing
      // else cannot flood the log; the connection and its calls carry on, as after an
      // undecodable request (which its caller hears of).
      if (this.#undecodableEvents++ === 0) {
        const from = this.peer.address === undefined ? this.peer.transport : `${this.peer.transport} ${this.peer.address}`;
        const dropped = new RpcError('PROTOCOL', `an event from ${from} could not be decoded and was dropped (later ones on this connection are dropped without a word): ${messageOf(err)}`, { cause: err });
        undecodableEvents.add(dropped);
        this.#onUnhandled(dropped);
      }
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
  /** Set once the session has stopped counting this call among those it serves. */
  served = false;
  /** The caller's request stream, when it sent one. */
  requestStream: Inbox | undefined;
  /** Credit for our result stream, when the caller asked for one. */
  resultFlow: Outflow | undefined;
  #reason: RpcError | undefined;
  #controller: AbortController | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(session: Session, deadlineMs: number) {
    this.peer = session.peer;
    this.client = session;
    if (deadlineMs > 0) {
      this.deadline = Date.now() + deadlineMs;
      this.#arm(deadlineMs, deadlineMs);
    }
  }

  /** Aborts the call `ms` from now; a deadline longer than a timer holds (from a peer's u32 field) takes several. */
  #arm(ms: number, deadlineMs: number): void {
    const step = Math.min(ms, kMaxTimerMs);
    this.#timer = setTimeout(() => {
      if (ms > step) this.#arm(ms - step, deadlineMs);
      else this.abort(new RpcError('TIMEOUT', `the caller's deadline of ${deadlineMs} ms passed`));
    }, step);
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
    this.requestStream?.fail(reason, false);
    this.resultFlow?.stop();
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

function releaseIterable(value: AsyncIterable<unknown>): void {
  try {
    const r = (value as Partial<AsyncIterator<unknown>>).return?.();
    if (r && typeof r.then === 'function') r.then(undefined, () => {});
  } catch {
    // its cleanup failed: nobody is left to tell
  }
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

function clearPending(p: Pending): void {
  if (p.timer !== undefined) clearTimeout(p.timer);
  if (p.onAbort !== undefined) p.signal!.removeEventListener('abort', p.onAbort);
}

function cancelled(signal: AbortSignal): RpcError {
  const reason = signal.reason;
  if (RpcError.is(reason) && reason.code === 'CANCELLED') return reason;
  return new RpcError('CANCELLED', 'the call was cancelled', reason === undefined ? {} : { cause: reason });
}

/** What a call gets when its answer cannot be decoded: the codec's PROTOCOL error, or one made of whatever else decoding threw. */
function undecodable(err: unknown): RpcError {
  if (RpcError.is(err)) return err;
  return new RpcError('PROTOCOL', `the peer's answer could not be decoded: ${messageOf(err)}`, { cause: err });
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
