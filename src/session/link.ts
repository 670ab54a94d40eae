/**
 * What a session's outgoing and incoming calls share: the codec, the `send` that carries envelope
 * bodies to the peer, the size limit on what is sent, how received payloads are decoded, and
 * whether the session has closed.
 */
import { copyOut } from '../shm/copy.js';
import type { Codec } from '../codec/index.js';
import { RpcError, messageOf } from '../errors.js';
import { HeaderScratch, Kind, creditHeader, idHeader, streamHeader, type StreamDir } from '../protocol/envelope.js';
import { countCopied } from '../observe.js';

/**
 * Delivers one envelope body, `head` followed by `payload`, to the peer, in order. Both are views
 * valid only during the call (the receiver copies them). A returned promise means "queued: wait
 * before sending more".
 */
export type SendBody = (head: Uint8Array, payload: Uint8Array) => void | Promise<void>;

export const kEmpty = new Uint8Array(0);

/** Payloads at least this large, when nobody reuses their bytes, are decoded with binary values left in place. */
const kDecodeInPlaceBytes = 64 * 1024;

export interface LinkOptions {
  codec: Codec;
  send: SendBody;
  /** Largest body sent (see SessionOptions.maxFrameBytes). */
  maxFrameBytes: number;
  /** Told when `send` failed: the session closes with that error. */
  onSendFailed(reason: RpcError): void;
}

export class Link {
  readonly codec: Codec;
  /** Header scratch: filled and handed to `send`, which copies it before returning. */
  readonly scratch = new HeaderScratch();
  /** Why the session closed, once it has; set by the session only. */
  closed: RpcError | undefined;
  readonly #send: SendBody;
  readonly #maxBody: number;
  /** An in-place codec (the view codec): its values keep the bytes they were decoded from. */
  readonly #inPlace: boolean;
  readonly #onSendFailed: (reason: RpcError) => void;

  constructor(options: LinkOptions) {
    this.codec = options.codec;
    this.#send = options.send;
    this.#maxBody = options.maxFrameBytes;
    this.#inPlace = options.codec.inPlace;
    this.#onSendFailed = options.onSendFailed;
  }

  /** Hands a body to `send` as it is: its throw and its promise are the caller's. */
  send(head: Uint8Array, payload: Uint8Array): void | Promise<void> {
    return this.#send(head, payload);
  }

  /** Hands a body to `send`; a failure to send closes the session instead of reaching the caller. */
  sendSafely(head: Uint8Array, payload: Uint8Array): void {
    try {
      const r = this.#send(head, payload);
      if (r !== undefined) r.catch((err) => this.#onSendFailed(asRpcError(err)));
    } catch (err) {
      this.#onSendFailed(asRpcError(err));
    }
  }

  /** One item of stream `dir` of call `id`; a returned promise means "queued: wait before sending more". Throws when it cannot go. */
  sendItem(id: number, dir: StreamDir, item: unknown): void | Promise<void> {
    const payload = this.codec.encode(item);
    const head = streamHeader(this.scratch, Kind.Item, id, dir);
    this.checkSize(head.length + payload.length, 'a stream item');
    return this.#send(head, payload);
  }

  sendEnd(id: number, dir: StreamDir): void {
    this.sendSafely(streamHeader(this.scratch, Kind.End, id, dir), kEmpty);
  }

  sendCredit(id: number, dir: StreamDir, n: number): void {
    this.sendSafely(creditHeader(this.scratch, id, dir, n), kEmpty);
  }

  sendCancel(id: number): void {
    this.sendSafely(idHeader(this.scratch, Kind.Cancel, id), kEmpty);
  }

  /** FRAME_TOO_LARGE for a body over this end's maxFrameBytes (it fails alone and is not sent; the connection stays), else undefined. */
  tooLarge(bytes: number, what: string): RpcError | undefined {
    if (bytes <= this.#maxBody) return undefined;
    return new RpcError('FRAME_TOO_LARGE', `${what} of ${bytes} bytes exceeds maxFrameBytes (${this.#maxBody}): not sent`, { data: { length: bytes, max: this.#maxBody } });
  }

  checkSize(bytes: number, what: string): void {
    const err = this.tooLarge(bytes, what);
    if (err !== undefined) throw err;
  }

  /**
   * Decodes the payload that starts at `start` in `bytes` (the rest of it). A body in shared
   * memory is a view into a ring, reused once `receive` returns: an in-place value is made over a
   * copy of it. Socket bodies (and messages the ring reassembled) are never reused, so values stay
   * over them in place, and so do the binary values msgpack decodes from a large one.
   */
  decode(bytes: Uint8Array, start = 0): unknown {
    // Binary values of a large payload stay views into it. A small one is copied out, so that a
    // few bytes kept by the handler do not pin the whole socket chunk they arrived in. (Reading
    // `.buffer` is a call into V8's C++ runtime: a small payload of msgpack or json skips it.)
    const large = bytes.length - start >= kDecodeInPlaceBytes;
    if (!large && !this.#inPlace) return this.codec.decodeFrom(bytes, start, false);
    const shared = bytes.buffer instanceof SharedArrayBuffer;
    if (this.#inPlace && shared) {
      countCopied(bytes.length - start);
      return this.codec.decode(copyOut(bytes, start));
    }
    return this.codec.decodeFrom(bytes, start, !shared && large);
  }
}

/** `err` as an RpcError: itself if it is one, else CLOSED with it as the cause (what a failed send means). */
export function asRpcError(err: unknown): RpcError {
  if (RpcError.is(err)) return err;
  return new RpcError('CLOSED', (err as Error)?.message ?? String(err), { cause: err });
}

/** Why a value of ours cannot go out (the codec's INVALID_ARGUMENT, FRAME_TOO_LARGE): an RpcError as it is, anything else INVALID_ARGUMENT. */
export function unsendable(err: unknown): RpcError {
  if (RpcError.is(err)) return err;
  return new RpcError('INVALID_ARGUMENT', `the value cannot be sent: ${messageOf(err)}`, { cause: err });
}
