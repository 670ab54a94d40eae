/**
 * The call layer of one connection, thread-neutral: our calls (./outgoing.ts) and the peer's
 * (./incoming.ts) over one link (./link.ts), and the dispatcher that routes each received envelope
 * to one of them by kind. It sees only envelope bodies: `send` hands one to whatever carries it (a
 * framed socket in a worker, a ring to a worker on the main thread), `receive` takes one in.
 */
import { createProxy } from '../service/proxy.js';
import type { ProxyOptions, ServiceProxy, UntypedApi } from '../service/types.js';
import { RpcError } from '../errors.js';
import type { Codec } from '../codec/index.js';
import {
  Kind,
  StreamDir,
  checkEnvelope,
  creditOf,
  deadlineMsOf,
  dirOf,
  encodePong,
  envelopeId,
  kindHeader,
  openCreditOf,
  openFlagsOf,
  payloadOf,
  payloadStart,
} from '../protocol/envelope.js';
import type { CallOptions, Handler, PeerClient, PeerInfo, StreamOptions } from '../types.js';
import { decodeErrorPayload } from './error-payload.js';
import { Incoming } from './incoming.js';
import { Link, kEmpty, unsendable, type SendBody } from './link.js';
import { Outgoing } from './outgoing.js';

export type { SendBody } from './link.js';
export { kRefusal } from './error-payload.js';

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

export class Session implements PeerClient {
  readonly peer: PeerInfo;
  readonly #link: Link;
  readonly #outgoing: Outgoing;
  readonly #incoming: Incoming;

  constructor(options: SessionOptions) {
    this.peer = options.peer;
    this.#link = new Link({
      codec: options.codec,
      send: options.send,
      maxFrameBytes: options.maxFrameBytes ?? Infinity,
      onSendFailed: (reason) => this.close(reason),
    });
    this.#outgoing = new Outgoing({ link: this.#link, peer: this.peer, firstId: options.firstId ?? 1 });
    this.#incoming = new Incoming({
      link: this.#link,
      client: this,
      peer: this.peer,
      handler: options.handler,
      maxConcurrentCalls: options.maxConcurrentCalls,
      sendStacks: options.sendStacks ?? false,
      onUnhandled: options.onUnhandled,
    });
  }

  /** Why the session closed, once it has. */
  get closedWith(): RpcError | undefined {
    return this.#link.closed;
  }

  /** Calls in flight. */
  get pendingCount(): number {
    return this.#outgoing.size;
  }

  /** Calls of the peer being served now (their handler running, or their result stream going). */
  get servingCount(): number {
    return this.#incoming.count;
  }

  call(request: unknown, options?: CallOptions): Promise<any> {
    return this.#outgoing.call(request, options);
  }

  proxy<Api = UntypedApi>(options?: ProxyOptions): ServiceProxy<Api> {
    return createProxy<Api>(this, options);
  }

  async notify(event: unknown): Promise<void> {
    const link = this.#link;
    if (link.closed) throw link.closed;
    let payload: Uint8Array;
    try {
      payload = link.codec.encode(event);
    } catch (err) {
      throw unsendable(err);
    }
    const head = kindHeader(link.scratch, Kind.Event);
    link.checkSize(head.length + payload.length, 'an event');
    await link.send(head, payload);
  }

  /**
   * Calls a handler that answers with a stream: returns an async iterator over its items (a
   * request that is itself an async iterable is sent as a stream too). Flow control keeps at most
   * `window` items unread; `return()` (or `break`), `signal` and `timeoutMs` cancel it at the peer.
   */
  stream(request: unknown, options?: StreamOptions): AsyncIterableIterator<any> {
    return this.#outgoing.stream(request, options);
  }

  /** Takes one envelope body from the peer. Throws RpcError('PROTOCOL') when the body is malformed. */
  receive(body: Uint8Array): void {
    // Read in place (no envelope object): this runs once per message on both sides.
    const kind = checkEnvelope(body);
    switch (kind) {
      case Kind.Response:
        this.#outgoing.response(envelopeId(body), body);
        return;
      case Kind.Error:
        this.#outgoing.error(envelopeId(body), payloadOf(body));
        return;
      case Kind.Request:
        this.#incoming.serve(envelopeId(body), deadlineMsOf(body), 0, 0, body, payloadStart(body));
        return;
      case Kind.Event:
        this.#incoming.event(payloadOf(body));
        return;
      case Kind.Cancel:
        this.#incoming.cancel(envelopeId(body));
        return;
      case Kind.Open:
        this.#incoming.serve(envelopeId(body), deadlineMsOf(body), openFlagsOf(body), openCreditOf(body), body, payloadStart(body));
        return;
      case Kind.Item:
        if (dirOf(body) === StreamDir.Down) this.#outgoing.resultItem(envelopeId(body), payloadOf(body));
        else this.#incoming.requestItem(envelopeId(body), payloadOf(body));
        return;
      case Kind.End:
        if (dirOf(body) === StreamDir.Down) this.#outgoing.resultEnd(envelopeId(body));
        else this.#incoming.requestEnd(envelopeId(body));
        return;
      case Kind.Credit:
        if (dirOf(body) === StreamDir.Down) this.#incoming.resultCredit(envelopeId(body), creditOf(body));
        else this.#outgoing.uploadCredit(envelopeId(body), creditOf(body));
        return;
      case Kind.Ping:
        this.#link.sendSafely(encodePong(body), kEmpty);
        return;
      case Kind.Pong:
        return;
      case Kind.Close:
        this.close(decodeErrorPayload(this.#link.codec, payloadOf(body), true));
        return;
      default:
        throw new RpcError('PROTOCOL', `envelope kind ${kind} is not valid here`);
    }
  }

  /**
   * Stops serving new calls: from now on a Request or Open is answered at once with UNAVAILABLE
   * (`data: { closing: true }`; its handler does not run, so the caller may send it again
   * elsewhere), while the calls being served finish and their answers go out. `onDrained` runs
   * once none is left, after the last answer was handed to `send` (at once, in a microtask, when
   * none is being served). Our own calls and the peer's events carry on. Once only.
   */
  drain(onDrained: () => void): void {
    this.#incoming.drain(onDrained);
  }

  /** Rejects every pending call with `reason`, aborts every handler in progress, refuses further calls. Idempotent. */
  close(reason: RpcError): void {
    if (this.#link.closed) return;
    this.#link.closed = reason;
    this.#outgoing.close(reason);
    this.#incoming.close(reason);
  }
}
