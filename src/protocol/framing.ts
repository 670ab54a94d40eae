/**
 * Stream framing: every frame is a u32 little-endian body length, then the body.
 * The decoder is fed arbitrary chunks and hands out whole bodies; the encoder batches bodies into
 * as few buffers as possible so pipelined calls cost one write, not one each.
 */
import { copyBytes } from '../shm/copy.js';
import { RpcError } from '../errors.js';
import { bytesToFill } from '../bytes.js';
import { countCopied } from '../observe.js';
import { writeU32 } from './envelope.js';

export const kLengthBytes = 4;
/** Default largest frame body: 64 MiB. */
export const kDefaultMaxFrameBytes = 64 * 1024 * 1024;

/**
 * A piece of a partial frame at least this long, filling at least half of its chunk's memory, is
 * kept by reference until the frame completes; shorter ones are copied into a tail buffer of at
 * most this size, so a peer that sends a frame a few bytes at a time cannot make us hold an object
 * per few bytes.
 */
const kKeepPieceFrom = 16 * 1024;

export class FrameDecoder {
  readonly #max: number;
  /**
   * The partial frame being assembled across chunks: its announced body length (0 when there is
   * none: an empty frame never spans chunks) and the bytes received so far.
   */
  #want = 0;
  #have = 0;
  /**
   * Its bytes so far, in order: chunks kept by reference and filled tails, then the open tail.
   * Memory follows what arrived, never the length a peer announced: otherwise four bytes of a
   * length prefix would make each connection reserve up to maxFrameBytes.
   */
  readonly #pieces: Uint8Array[] = [];
  #tail: Uint8Array | undefined;
  #tailFilled = 0;
  /** Up to three bytes of a length prefix split across chunks. */
  readonly #lenBytes = new Uint8Array(kLengthBytes);
  #lenFilled = 0;

  constructor(maxFrameBytes: number = kDefaultMaxFrameBytes) {
    this.#max = maxFrameBytes;
  }

  /** True while a frame has been started but not completed. */
  get pending(): boolean {
    return this.#want > 0 || this.#lenFilled > 0;
  }

  /**
   * Feeds one chunk, which the decoder may keep until the frame it holds part of completes (the
   * stream must not reuse it); calls `onFrame` for every completed body (a view into `chunk` when
   * the frame lies inside it, else a fresh array). Throws RpcError('FRAME_TOO_LARGE') for a length
   * over the maximum; after a throw the decoder is unusable (the connection must close).
   */
  push(chunk: Uint8Array, onFrame: (body: Uint8Array) => void): void {
    // A socket's chunks are Node Buffers, whose subarray() and slice() go through Node's
    // FastBuffer constructor and V8's species lookup: measured with callgrind, ~1,000 instructions
    // per frame and again per payload view and copy downstream. The frames of one plain
    // Uint8Array view over the same bytes get the builtins' fast paths all the way.
    if (chunk.constructor !== Uint8Array) chunk = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let at = 0;
    const end = chunk.length;
    if (this.#want > 0) at = this.#fillPartial(chunk, 0, onFrame);
    while (at < end) {
      let len: number;
      if (this.#lenFilled > 0 || end - at < kLengthBytes) {
        // A length prefix split across chunks: gather its bytes one by one (rare).
        while (this.#lenFilled < kLengthBytes && at < end) this.#lenBytes[this.#lenFilled++] = chunk[at++];
        if (this.#lenFilled < kLengthBytes) return;
        this.#lenFilled = 0;
        const l = this.#lenBytes;
        len = (l[0] | (l[1] << 8) | (l[2] << 16) | (l[3] << 24)) >>> 0;
      } else {
        len = (chunk[at] | (chunk[at + 1] << 8) | (chunk[at + 2] << 16) | (chunk[at + 3] << 24)) >>> 0;
        at += kLengthBytes;
      }
      if (len > this.#max) {
        throw new RpcError('FRAME_TOO_LARGE', `frame of ${len} bytes exceeds the maximum of ${this.#max}`, { data: { length: len, max: this.#max } });
      }
      if (end - at >= len) {
        onFrame(chunk.subarray(at, at + len));
        at += len;
      } else {
        this.#want = len;
        this.#have = 0;
        at = this.#fillPartial(chunk, at, onFrame);
      }
    }
  }

  #fillPartial(chunk: Uint8Array, at: number, onFrame: (body: Uint8Array) => void): number {
    const take = Math.min(this.#want - this.#have, chunk.length - at);
    const piece = chunk.subarray(at, at + take);
    this.#have += take;
    if (this.#have === this.#want) onFrame(this.#complete(piece));
    else this.#keep(piece);
    return at + take;
  }

  #keep(piece: Uint8Array): void {
    if (piece.length >= kKeepPieceFrom && piece.length * 2 >= piece.buffer.byteLength) {
      // Kept by reference: the frame's bytes are copied once, when it completes.
      this.#closeTail();
      this.#pieces.push(piece);
      return;
    }
    let from = 0;
    while (from < piece.length) {
      let tail = this.#tail;
      if (tail === undefined) {
        // Sized to what the frame still lacks when that is small, so that a small frame split
        // across chunks is assembled in place, as its body.
        const unstored = this.#want - this.#have + piece.length - from;
        tail = this.#tail = bytesToFill(Math.min(unstored, kKeepPieceFrom));
        this.#tailFilled = 0;
      }
      const n = Math.min(tail.length - this.#tailFilled, piece.length - from);
      tail.set(piece.subarray(from, from + n), this.#tailFilled);
      countCopied(n);
      this.#tailFilled += n;
      from += n;
      if (this.#tailFilled === tail.length) this.#closeTail();
    }
  }

  #closeTail(): void {
    if (this.#tail === undefined) return;
    if (this.#tailFilled > 0) this.#pieces.push(this.#tail.subarray(0, this.#tailFilled));
    this.#tail = undefined;
  }

  /** The frame's body: its pieces so far, then `last`, in one array. */
  #complete(last: Uint8Array): Uint8Array {
    const want = this.#want;
    const tail = this.#tail;
    let body: Uint8Array;
    if (tail !== undefined && tail.length === want) {
      // A small frame: the tail was sized to it, and holds all but `last` already.
      tail.set(last, this.#tailFilled);
      countCopied(last.length);
      body = tail;
    } else {
      this.#closeTail();
      body = bytesToFill(want);
      let at = 0;
      for (const piece of this.#pieces) {
        body.set(piece, at);
        at += piece.length;
      }
      body.set(last, at);
      countCopied(want);
    }
    this.#reset();
    return body;
  }

  #reset(): void {
    this.#want = 0;
    this.#have = 0;
    this.#pieces.length = 0;
    this.#tail = undefined;
    this.#tailFilled = 0;
    this.#lenFilled = 0;
  }

  /**
   * The stream ended, by the peer's close or by `cause` (a socket error): throws RpcError('CLOSED')
   * with that cause if it ended inside a frame.
   */
  end(cause?: Error): void {
    if (!this.pending) return;
    const have = this.#want > 0 ? this.#have : this.#lenFilled;
    const want = this.#want > 0 ? this.#want : kLengthBytes;
    this.#reset();
    const how = cause === undefined ? '' : `: ${cause.message}`;
    throw new RpcError('CLOSED', `the stream ended inside a frame (${have} of ${want} bytes)${how}`, cause === undefined ? {} : { cause });
  }
}

/** Bodies at least this large bypass the batch: by reference when owned, else copied once. */
const kCopyLimit = 16 * 1024;
/** A batch grows up to this before it is written out mid-turn. */
const kBatchBytes = 64 * 1024;
/**
 * A new stream's batch buffer; it doubles as its turns need, up to kBatchBytes. Small, so that
 * a server's many quiet connections neither hold 64 KiB each nor spread their hot bytes over
 * that much memory (measured: ~9% more calls/s over 512 connections, the same over 8).
 */
const kFirstBatchBytes = 4 * 1024;
/** A length prefix plus the largest envelope header (see envelope.ts) fits in this. */
const kHeadScratchBytes = 64;

/**
 * Writes `head` then `body` as one piece, copying both before it returns (the caller keeps them).
 * Streams whose writes copy anyway (a shared-memory ring) offer it, so that a large body is copied
 * once, straight into the stream.
 */
export type CopyingWrite = (head: Uint8Array, body: Uint8Array) => void;

/**
 * Collects frames for one stream and writes them out in batches: small bodies are copied into one
 * buffer behind their length prefixes; a large one is passed through by reference when owned,
 * handed to `writeCopy` when the stream has one, and otherwise copied once into its own chunk.
 */
export class FrameWriter {
  readonly #write: (chunk: Uint8Array) => void;
  readonly #writeCopy: CopyingWrite | undefined;
  #buf = new Uint8Array(kFirstBatchBytes);
  #used = 0;
  /** Length prefix (and header) of a large frame given to writeCopy, which copies it at once. */
  readonly #head = new Uint8Array(kHeadScratchBytes);

  /**
   * `write` receives each outgoing chunk and owns its bytes afterwards (a view: its ArrayBuffer may
   * hold other chunks); `writeCopy` (optional) copies what it is given, and then gets the batches too.
   */
  constructor(write: (chunk: Uint8Array) => void, writeCopy?: CopyingWrite) {
    this.#write = write;
    this.#writeCopy = writeCopy;
  }

  /** True when frames are waiting for `flush()`. */
  get pending(): boolean {
    return this.#used > 0;
  }

  /**
   * Queues one frame. `body` is copied unless it is large and `owned` (the caller will not reuse it),
   * so a view into a ring or a reused buffer is safe to pass.
   */
  push(body: Uint8Array, owned: boolean): void {
    const len = body.length;
    if (len >= kCopyLimit) {
      this.#pushLarge(kEmpty, body, owned);
      return;
    }
    this.#reserve(kLengthBytes + len);
    writeU32(this.#buf, this.#used, len);
    this.#buf.set(body, this.#used + kLengthBytes);
    this.#used += kLengthBytes + len;
  }

  /** Queues one frame whose body is `head` (a few bytes) followed by `payload`; both are copied. */
  push2(head: Uint8Array, payload: Uint8Array): void {
    if (payload.length >= kCopyLimit && head.length <= kHeadScratchBytes - kLengthBytes) {
      this.#pushLarge(head, payload, false);
      return;
    }
    const len = head.length + payload.length;
    this.#reserve(kLengthBytes + len);
    const buf = this.#buf;
    let at = this.#used;
    writeU32(buf, at, len);
    at += kLengthBytes;
    // Headers are a few bytes: a loop beats set()'s call overhead.
    for (let i = 0; i < head.length; i++) buf[at + i] = head[i];
    buf.set(payload, at + head.length);
    this.#used = at + len;
  }

  /** A frame of `head` ‖ `payload` with a large payload: flushes the batch, then writes the frame by itself. */
  #pushLarge(head: Uint8Array, payload: Uint8Array, owned: boolean): void {
    const len = head.length + payload.length;
    if (owned && head.length === 0 && this.#writeCopy === undefined) {
      this.#reserve(kLengthBytes);
      writeU32(this.#buf, this.#used, len);
      this.#used += kLengthBytes;
      this.flush();
      this.#write(payload);
      return;
    }
    this.flush();
    const writeCopy = this.#writeCopy;
    if (writeCopy !== undefined) {
      const h = this.#head;
      writeU32(h, 0, len);
      for (let i = 0; i < head.length; i++) h[kLengthBytes + i] = head[i];
      writeCopy(h.subarray(0, kLengthBytes + head.length), payload);
      return;
    }
    // The stream keeps what it is given until written: one exact-size copy, made once.
    const chunk = bytesToFill(kLengthBytes + len);
    writeU32(chunk, 0, len);
    chunk.set(head, kLengthBytes);
    // The payload may be a view into a ring at any alignment: copyBytes keeps the copy fast.
    copyBytes(chunk, kLengthBytes + head.length, payload, 0, payload.length);
    countCopied(len);
    this.#write(chunk);
  }

  #reserve(n: number): void {
    const need = this.#used + n;
    if (need <= this.#buf.length) return;
    if (need <= kBatchBytes) {
      // Grow rather than write a part of this turn's batch now.
      let size = this.#buf.length * 2;
      while (size < need) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#buf.subarray(0, this.#used));
      this.#buf = grown;
      return;
    }
    this.flush();
    if (n > this.#buf.length) this.#buf = new Uint8Array(n);
  }

  /** Writes everything queued as one chunk. */
  flush(): void {
    const used = this.#used;
    if (used === 0) return;
    const buf = this.#buf;
    if (buf.length > kBatchBytes) this.#buf = new Uint8Array(kBatchBytes);
    this.#used = 0;
    const writeCopy = this.#writeCopy;
    if (writeCopy !== undefined) {
      // The stream copies before it returns: our buffer itself can go, and be reused.
      writeCopy(buf.subarray(0, used), kEmpty);
      return;
    }
    // The stream keeps the chunk until written: an exact-size copy, from Node's shared Buffer pool.
    // Not slice(): a small array of its own lives on the V8 heap, and a socket write first moves
    // it into an ArrayBuffer of its own (an allocation and a copy per write, and a free later).
    const chunk = Buffer.allocUnsafe(used);
    chunk.set(used === buf.length ? buf : buf.subarray(0, used));
    this.#write(chunk);
  }
}

const kEmpty = new Uint8Array(0);

/** One frame as a standalone buffer (tests, custom transports). */
export function encodeFrame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(kLengthBytes + body.length);
  writeU32(out, 0, body.length);
  out.set(body, kLengthBytes);
  return out;
}
