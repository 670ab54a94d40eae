/**
 * The peer's calls and events on one session: the handler runs for each, within the session's
 * limit on calls served at once, and its answer (one value, or a result stream against the
 * caller's credit) goes back; drain() stops taking new calls while those being served finish.
 */
import { RpcError, messageOf } from '../errors.js';
import { Kind, OpenFlag, StreamDir, headerBytes, idHeader } from '../protocol/envelope.js';
import type { Handler, PeerClient, PeerInfo } from '../types.js';
import { encodeErrorPayload, undecodable, type ErrorOrigin } from './error-payload.js';
import { IdTable } from './id-table.js';
import { Serving } from './serving.js';
import type { Link } from './link.js';
import { Inbox, Outflow, isAsyncIterable, kDefaultWindow, pump } from './streams.js';

/** Where a Response's payload starts: its codec header (a bin's) goes there. */
const kResponseHeaderBytes = headerBytes(Kind.Response);
const kErrorHeaderBytes = headerBytes(Kind.Error);

/** The errors a session made for events it could not decode (as opposed to what a handler threw). */
const undecodableEvents = new WeakSet<object>();

/** SessionOptions.onUnhandled by default: a process warning that says which of the two it was. */
function warnUnhandled(err: unknown): void {
  if (undecodableEvents.has(err as object)) process.emitWarning(`ogurpchik: ${(err as Error).message}`);
  else process.emitWarning(`ogurpchik: an onEvent handler threw: ${(err as Error)?.stack ?? err}`);
}

export interface IncomingOptions {
  link: Link;
  /** The session, which a handler's ctx.client calls back through. */
  client: PeerClient;
  peer: PeerInfo;
  handler: Handler | undefined;
  /** See SessionOptions.maxConcurrentCalls. */
  maxConcurrentCalls: number | undefined;
  /** See SessionOptions.sendStacks. */
  sendStacks: boolean;
  /** See SessionOptions.onUnhandled. */
  onUnhandled: ((err: unknown) => void) | undefined;
}

export class Incoming {
  readonly #link: Link;
  readonly #client: PeerClient;
  readonly #peer: PeerInfo;
  readonly #handler: Handler | undefined;
  readonly #maxServing: number;
  readonly #sendStacks: boolean;
  readonly #onUnhandled: (err: unknown) => void;
  /** Requests being served, by id: aborting one fires the handler's ctx.signal. */
  readonly #serving = new IdTable<Serving>();
  /**
   * Calls being served, counted apart from #serving: a peer that reuses an id still being served
   * replaces the table's entry, and must not get a second handler past the limit that way.
   */
  #servingNow = 0;
  /** Events whose payload could not be decoded (dropped). */
  #undecodableEvents = 0;
  /** Set by drain(): called once no call is being served any more. */
  #onDrained: (() => void) | undefined;

  constructor(options: IncomingOptions) {
    this.#link = options.link;
    this.#client = options.client;
    this.#peer = options.peer;
    this.#handler = options.handler;
    this.#maxServing = options.maxConcurrentCalls ?? Infinity;
    this.#sendStacks = options.sendStacks;
    this.#onUnhandled = options.onUnhandled ?? warnUnhandled;
  }

  /** Calls being served now (their handler running, or their result stream going). */
  get count(): number {
    return this.#servingNow;
  }

  /** See Session.drain. */
  drain(onDrained: () => void): void {
    if (this.#onDrained !== undefined || this.#link.closed) return;
    this.#onDrained = onDrained;
    if (this.#servingNow === 0) queueMicrotask(onDrained);
  }

  /** Aborts every handler in progress with `reason`. */
  close(reason: RpcError): void {
    const serving = this.#serving.values();
    this.#serving.clear();
    for (const call of serving) call.abort(reason);
  }

  /**
   * Serves a call: a Request (`flags` 0) or an Open, whose request may be a stream (the handler
   * reads an Inbox) and whose answer may be one (pulled against the caller's credit). The
   * request's payload is `body` from `start` on (no view made: this runs once per request).
   */
  serve(id: number, deadlineMs: number, flags: number, credit: number, body: Uint8Array, start: number): void {
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
        request = this.#link.decode(body, start);
      } catch (err) {
        this.#sendError(id, err, 'runtime');
        return;
      }
    }
    const call = new Serving(this.#client, this.#peer, deadlineMs);
    this.#servingNow++;
    if (flags & OpenFlag.RequestStream) request = call.requestStream = this.#requestInbox(id, call);
    if (flags & OpenFlag.ResultStream) call.resultFlow = new Outflow(credit);
    this.#serving.set(id, call);
    if (call.requestStream) this.#link.sendCredit(id, StreamDir.Up, kDefaultWindow);
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

  /** The caller of `id` cancelled it. */
  cancel(id: number): void {
    this.#serving.get(id)?.abort(new RpcError('CANCELLED', 'the caller cancelled the call'));
  }

  /** An item of the request stream of the peer's call `id`. */
  requestItem(id: number, payload: Uint8Array): void {
    const call = this.#serving.get(id);
    const inbox = call?.requestStream;
    if (inbox === undefined) return;
    let item: unknown;
    try {
      item = this.#link.decode(payload);
    } catch (err) {
      inbox.fail(undecodable(err), true);
      this.#link.sendCredit(id, StreamDir.Up, 0);
      return;
    }
    if (!inbox.push(item)) {
      inbox.fail(new RpcError('PROTOCOL', 'the caller sent request items beyond the credit it was given'), false);
      this.#link.sendCredit(id, StreamDir.Up, 0);
    }
  }

  /** The request stream of the peer's call `id` ended. */
  requestEnd(id: number): void {
    this.#serving.get(id)?.requestStream?.end();
  }

  /** The caller of `id` takes `n` more items of its result stream (0: stop sending). */
  resultCredit(id: number, n: number): void {
    this.#serving.get(id)?.resultFlow?.add(n);
  }

  /** An Event's payload: handed to onEvent, if there is one. */
  event(payload: Uint8Array): void {
    const onEvent = this.#handler?.onEvent;
    if (onEvent === undefined) return;
    let event: unknown;
    try {
      event = this.#link.decode(payload);
    } catch (err) {
      // The peer's bytes, not our handler: said once per connection, so a peer sending nothing
      // else cannot flood the log; the connection and its calls carry on, as after an
      // undecodable request (which its caller hears of).
      if (this.#undecodableEvents++ === 0) {
        const from = this.#peer.address === undefined ? this.#peer.transport : `${this.#peer.transport} ${this.#peer.address}`;
        const dropped = new RpcError('PROTOCOL', `an event from ${from} could not be decoded and was dropped (later ones on this connection are dropped without a word): ${messageOf(err)}`, { cause: err });
        undecodableEvents.add(dropped);
        this.#onUnhandled(dropped);
      }
      return;
    }
    try {
      const r = onEvent.call(this.#handler, event, new Serving(this.#client, this.#peer, 0));
      if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(undefined, this.#onUnhandled);
    } catch (err) {
      this.#onUnhandled(err);
    }
  }

  /** The handler's view of the caller's request stream: taking items grants the caller credit. */
  #requestInbox(id: number, call: Serving): Inbox {
    return new Inbox({
      window: kDefaultWindow,
      grant: (n) => {
        if (this.#serving.get(id) === call) this.#link.sendCredit(id, StreamDir.Up, n);
      },
      // The handler stopped reading: credit 0 tells the caller to stop sending.
      onReturn: () => {
        if (this.#serving.get(id) === call) this.#link.sendCredit(id, StreamDir.Up, 0);
      },
    });
  }

  /** Sends a handler's result stream while the caller grants credit, then End (or Error if it threw). */
  #sendStream(id: number, call: Serving, source: AsyncIterable<unknown>): void {
    // An item this side cannot send (too large, unencodable) fails the stream as the runtime's error, not the handler's.
    let unsendable: unknown;
    const send = (item: unknown) => {
      try {
        return this.#link.sendItem(id, StreamDir.Down, item);
      } catch (err) {
        unsendable = err;
        throw err;
      }
    };
    pump(source, call.resultFlow!, send).then(
      (how) => {
        this.#served(id, call);
        call.requestStream?.fail(new RpcError('CANCELLED', 'the call finished'), false);
        if (how === 'done' && !call.aborted && !this.#link.closed) this.#link.sendEnd(id, StreamDir.Down);
      },
      (err) => this.#finish(id, call, undefined, err ?? new Error('the stream threw ' + err), err !== undefined && err === unsendable ? 'runtime' : 'handler'),
    );
  }

  /** Answers call `id` with `err`. Never throws: it runs where nothing would catch it (a handler's promise settling). */
  #sendError(id: number, err: unknown, origin: ErrorOrigin): void {
    const link = this.#link;
    let payload = encodeErrorPayload(link.codec, err, origin, this.#sendStacks);
    // An error too large to send (a huge message or data) is replaced, as an oversize answer is: the caller still hears.
    const tooLarge = link.tooLarge(kErrorHeaderBytes + payload.length, "the handler's error");
    if (tooLarge !== undefined) payload = encodeErrorPayload(link.codec, tooLarge, 'runtime', false);
    link.sendSafely(idHeader(link.scratch, Kind.Error, id), payload);
  }

  /** A handler's single answer, or the promise of one. */
  #settleResult(id: number, call: Serving, result: unknown): void {
    if (isThenable(result)) {
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

  #finish(id: number, call: Serving, value: unknown, err: unknown, origin: ErrorOrigin = 'handler'): void {
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
    if (call.aborted || this.#link.closed) return;
    if (err !== undefined) {
      this.#sendError(id, err, origin);
      return;
    }
    const link = this.#link;
    let n: number;
    let payload: Uint8Array | undefined;
    try {
      // Bytes go out as they are, behind their codec header (see Outgoing.call).
      n = link.codec.bytesHeader(value, link.scratch.bytes, kResponseHeaderBytes);
      if (n === 0) payload = link.codec.encode(value);
    } catch (encodeErr) {
      // Said as the answer's fault: the caller would otherwise take it for its own request's.
      this.#sendError(id, new RpcError('INVALID_ARGUMENT', `the handler's answer cannot be sent: ${messageOf(encodeErr)}`), 'runtime');
      return;
    }
    if (payload === undefined) {
      const tooLarge = link.tooLarge(kResponseHeaderBytes + n + (value as Uint8Array).length, "the handler's answer");
      if (tooLarge !== undefined) return this.#sendError(id, tooLarge, 'runtime');
      idHeader(link.scratch, Kind.Response, id);
      link.sendSafely(link.scratch.view(kResponseHeaderBytes + n), value as Uint8Array);
      return;
    }
    const tooLarge = link.tooLarge(kResponseHeaderBytes + payload.length, "the handler's answer");
    if (tooLarge !== undefined) return this.#sendError(id, tooLarge, 'runtime');
    link.sendSafely(idHeader(link.scratch, Kind.Response, id), payload);
  }
}

/** Never throws: a value whose `then` cannot be read (a hostile Proxy) is an answer, which its encoding then refuses. */
function isThenable(value: unknown): value is PromiseLike<unknown> {
  if (value === null || (typeof value !== 'object' && typeof value !== 'function')) return false;
  try {
    return typeof (value as PromiseLike<unknown>).then === 'function';
  } catch {
    return false;
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
