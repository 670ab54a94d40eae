/**
 * Codecs turn payload values into bytes and back. A codec is chosen per serve/connect as a plain
 * descriptor (it crosses into worker threads); each thread builds its own instance with `createCodec`,
 * so no encoder state is shared between instances or threads.
 */
import { Packr } from 'msgpackr';
import { RpcError } from '../errors.js';
import { countCopied } from '../observe.js';
import { copyOut } from '../shm/copy.js';
import { View, viewBytes } from './view.js';
import { resolveDecodeLimits, scanJson, scanMsgpack, unscannedBytes, type DecodeLimits, type ResolvedDecodeLimits } from './budget.js';

export type { DecodeLimits } from './budget.js';

export type CodecKind = 'msgpack' | 'json' | 'view';

/** A serialisable choice of codec. */
export type CodecDescriptor = { kind: 'msgpack' } | { kind: 'json' } | { kind: 'view' };

/**
 * A Promise or a function at the top of a value is a mistake (a call whose request was not
 * awaited, say) that both codecs would send silently, as {} or nil: refused instead.
 */
function refuseUnsendable(value: unknown, codec: string): void {
  if (typeof value === 'function') throw new RpcError('INVALID_ARGUMENT', `a function cannot be encoded as ${codec}`);
  if (typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function') {
    throw new RpcError('INVALID_ARGUMENT', `a Promise (or another thenable) cannot be encoded as ${codec}: await it first`);
  }
}

export interface Codec {
  readonly kind: CodecKind;
  /**
   * True when `decode` returns a value over `bytes` in place (the view codec): the session then
   * gives it bytes that stay intact for as long as the value is used.
   */
  readonly inPlace: boolean;
  /** Encodes a value; the returned bytes may be a view into a reused buffer, valid until the next encode. */
  encode(value: unknown): Uint8Array;
  /**
   * When `value` encodes as its own bytes behind a short header (msgpack's bin: 2-5 bytes), writes
   * that header into `target` at `at` and returns its length, so the caller can send the header
   * and then `value` itself, copying the bytes once, where they go. Returns 0 for anything else.
   */
  bytesHeader(value: unknown, target: Uint8Array, at: number): number;
  /**
   * Decodes bytes into a value; unless `inPlace`, a fresh one that does not reference `bytes` (which
   * may be a ring view). With `owned` (nobody reuses `bytes`: a frame read from a stream, a message
   * reassembled from ring fragments) binary values may be views into `bytes` instead of copies.
   */
  decode(bytes: Uint8Array, owned?: boolean): unknown;
  /** `decode(bytes.subarray(start), owned)`, without making that view when the codec need not. */
  decodeFrom(bytes: Uint8Array, start: number, owned?: boolean): unknown;
  /** Encodes an error payload (a plain object: see docs/PROTOCOL.md); the view codec uses msgpack for these. */
  encodeError(error: object): Uint8Array;
  /** Decodes an error payload into a fresh value. */
  decodeError(bytes: Uint8Array): unknown;
}

/** MessagePack via msgpackr (the default): binary-safe, fast; keeps Uint8Array, Date, bigint and undefined (a Map arrives as an object, a Set as an array: docs/PROTOCOL.md §7). */
export function msgpack(): CodecDescriptor {
  return { kind: 'msgpack' };
}

/** JSON (UTF-8): readable on the wire; values must be JSON-serialisable (Uint8Array does not survive). */
export function json(): CodecDescriptor {
  return { kind: 'json' };
}

/**
 * The zero-copy view codec: you send bytes (a `Uint8Array` or a finished `flatbuffers.Builder`),
 * the peer receives a `View` over them in place and reads FlatBuffers fields without decoding.
 */
export function view(): CodecDescriptor {
  return { kind: 'view' };
}

/** Builds a codec whose decode refuses, before building anything, a payload over `limits` (NodeOptions.decodeLimits). */
export function createCodec(descriptor: CodecDescriptor = msgpack(), limits?: DecodeLimits): Codec {
  const resolved = resolveDecodeLimits(limits);
  switch (descriptor?.kind) {
    case 'msgpack':
      return new MsgpackCodec(resolved);
    case 'json':
      return new JsonCodec(resolved);
    case 'view':
      return new ViewCodec(resolved);
    default:
      throw new RpcError('INVALID_ARGUMENT', `unknown codec ${JSON.stringify((descriptor as { kind?: unknown })?.kind)}`);
  }
}

/** This thread's shared codecs, by kind and resolved limits (see sharedCodec). */
const shared = new Map<string, Codec>();

/**
 * The codec `createCodec(descriptor, limits)` would build, one instance per thread for every
 * caller with the same kind and limits: a thread hosting many connections then keeps one codec's
 * buffers and state warm rather than one per connection. Safe because no codec keeps state from
 * one payload to the next (msgpack records are off; scan stacks are used within one call) and an
 * encoding is never rewritten by a later one, whichever session made it.
 */
export function sharedCodec(descriptor: CodecDescriptor = msgpack(), limits?: DecodeLimits): Codec {
  const r = resolveDecodeLimits(limits);
  const key = `${descriptor?.kind}|${r.maxDepth}|${r.maxArrayLength}|${r.maxMapSize}|${r.maxStringBytes}|${r.maxBinaryBytes}|${r.maxElements}|${r.maxExpansion}`;
  let codec = shared.get(key);
  if (codec === undefined) {
    codec = createCodec(descriptor, limits);
    shared.set(key, codec);
  }
  return codec;
}

/** Byte payloads up to this size take MsgpackCodec's direct path; larger ones cost their copy, not Packr's overhead. */
const kBinFastMax = 4096;
const kBinBufferBytes = 64 * 1024;
/** Copies this short are faster as a loop than through TypedArray#set. */
const kShortCopy = 32;

/** Writes the msgpack bin header of `n` bytes (bin 8, 16 or 32, as msgpackr picks) at `at`; returns its length. */
function writeBinHeader(out: Uint8Array, at: number, n: number): number {
  if (n < 0x100) {
    out[at] = 0xc4;
    out[at + 1] = n;
    return 2;
  }
  if (n < 0x10000) {
    out[at] = 0xc5;
    out[at + 1] = n >> 8;
    out[at + 2] = n & 0xff;
    return 3;
  }
  out[at] = 0xc6;
  out[at + 1] = n >>> 24;
  out[at + 2] = (n >> 16) & 0xff;
  out[at + 3] = (n >> 8) & 0xff;
  out[at + 4] = n & 0xff;
  return 5;
}

class MsgpackCodec implements Codec {
  readonly #limits: ResolvedDecodeLimits;
  /** The scan's stack of open containers, allocated once. */
  readonly #stack: Float64Array;
  /** Payloads this short cannot break the limits: the scan is skipped (most calls' payloads). */
  readonly #unscanned: number;

  constructor(limits: ResolvedDecodeLimits) {
    this.#limits = limits;
    this.#stack = new Float64Array(limits.maxDepth + 2);
    this.#unscanned = unscannedBytes(limits);
  }

  encodeError(error: object): Uint8Array {
    return this.encode(error);
  }

  decodeError(bytes: Uint8Array): unknown {
    return this.decode(bytes);
  }

  readonly kind = 'msgpack' as const;
  readonly inPlace = false;
  // copyBuffers: decoded binary must not alias the frame, which may be a view into a shared ring.
  readonly #packr = new Packr({ useRecords: false, copyBuffers: true, largeBigIntToFloat: false });
  // For bytes nobody reuses: binary values stay views into them (no copy of a large payload).
  readonly #aliasing = new Packr({ useRecords: false, copyBuffers: false, largeBigIntToFloat: false });

  /**
   * Where small byte payloads are encoded (see #encodeBytes): filled from the front and replaced
   * when full, never rewritten, so an encoding stays valid as long as Packr's own do.
   */
  #bin = new Uint8Array(kBinBufferBytes);
  #binAt = 0;

  encode(value: unknown): Uint8Array {
    // A payload of bytes is a msgpack bin with a 2-5 byte header: written here directly, the same
    // bytes Packr writes, without the ~0.25 µs its general path costs per call.
    if (value instanceof Uint8Array && (value.constructor === Uint8Array || value.constructor === Buffer) && value.length <= kBinFastMax) {
      return this.#encodeBytes(value);
    }
    refuseUnsendable(value, 'msgpack');
    try {
      return this.#packr.pack(value);
    } catch (cause) {
      throw new RpcError('INVALID_ARGUMENT', `value cannot be encoded as msgpack: ${(cause as Error).message}`, { cause });
    }
  }

  bytesHeader(value: unknown, target: Uint8Array, at: number): number {
    if (!(value instanceof Uint8Array) || (value.constructor !== Uint8Array && value.constructor !== Buffer)) return 0;
    return writeBinHeader(target, at, value.length);
  }

  #encodeBytes(value: Uint8Array): Uint8Array {
    const n = value.length;
    // Room for the longest header (5 bytes): writeBinHeader alone knows which one it writes.
    if (this.#binAt + 5 + n > this.#bin.length) {
      this.#bin = new Uint8Array(kBinBufferBytes);
      this.#binAt = 0;
    }
    const out = this.#bin;
    const start = this.#binAt;
    let at = start + writeBinHeader(out, start, n);
    if (n <= kShortCopy) for (let i = 0; i < n; i++) out[at + i] = value[i];
    else out.set(value, at);
    at += n;
    // Word-aligned starts, as Packr keeps them.
    this.#binAt = (at + 7) & ~7;
    return out.subarray(start, at);
  }

  decode(bytes: Uint8Array, owned = false): unknown {
    return this.decodeFrom(bytes, 0, owned);
  }

  decodeFrom(bytes: Uint8Array, start: number, owned = false): unknown {
    const n = bytes.length - start;
    // Decoding materialises every string (and, from bytes not owned, every binary) of the value:
    // counted as copied, unless the binaries are left in place.
    if (!owned) countCopied(n);
    // A payload that is one bin and nothing else: the bytes after its header, as Packr returns them
    // (a copy of the same type as `bytes`, or with `owned` a view), without its general path.
    if (n >= 2) {
      const t = bytes[start];
      const header = t === 0xc4 ? 2 : t === 0xc5 ? 3 : t === 0xc6 ? 5 : 0;
      if (header !== 0 && n >= header) {
        const s = start;
        const len = header === 2 ? bytes[s + 1] : header === 3 ? (bytes[s + 1] << 8) | bytes[s + 2] : ((bytes[s + 1] << 24) | (bytes[s + 2] << 16) | (bytes[s + 3] << 8) | bytes[s + 4]) >>> 0;
        if (len === n - header) {
          const max = this.#limits.maxBinaryBytes;
          if (len > max) throw new RpcError('FRAME_TOO_LARGE', `payload refused before decoding: a binary of ${len} bytes exceeds decodeLimits.maxBinaryBytes (${max})`, { data: { limit: 'maxBinaryBytes', length: len, max } });
          if (owned) return bytes.subarray(s + header);
          // From a ring view: slice() of shared memory is slow; a large one is copied with set().
          if (len >= kBinFastMax && bytes.buffer instanceof SharedArrayBuffer) return copyOut(bytes, s + header);
          return Uint8Array.prototype.slice.call(bytes, s + header);
        }
      }
    }
    if (n > this.#unscanned) scanMsgpack(bytes, start, this.#limits, this.#stack);
    if (start > 0) bytes = bytes.subarray(start);
    try {
      return bytes.length === 0 ? undefined : (owned ? this.#aliasing : this.#packr).unpack(bytes);
    } catch (cause) {
      throw new RpcError('PROTOCOL', `payload is not valid msgpack: ${(cause as Error).message}`, { cause });
    }
  }
}

class JsonCodec implements Codec {
  readonly #limits: ResolvedDecodeLimits;
  /** The scan's commas and kinds per open container, allocated once. */
  readonly #stack: Float64Array;
  readonly #kinds: Uint8Array;
  /** Payloads this short cannot break the limits: the scan is skipped. */
  readonly #unscanned: number;

  constructor(limits: ResolvedDecodeLimits) {
    this.#limits = limits;
    this.#stack = new Float64Array(limits.maxDepth + 2);
    this.#kinds = new Uint8Array(limits.maxDepth + 2);
    this.#unscanned = unscannedBytes(limits);
  }

  encodeError(error: object): Uint8Array {
    return this.encode(error);
  }

  decodeError(bytes: Uint8Array): unknown {
    return this.decode(bytes);
  }

  readonly kind = 'json' as const;

  bytesHeader(): number {
    return 0;
  }

  readonly inPlace = false;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder('utf-8', { fatal: true });

  encode(value: unknown): Uint8Array {
    refuseUnsendable(value, 'JSON');
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (cause) {
      throw new RpcError('INVALID_ARGUMENT', `value cannot be encoded as JSON: ${(cause as Error).message}`, { cause });
    }
    // undefined encodes as an empty payload, which decodes back to undefined.
    return text === undefined ? new Uint8Array(0) : this.#encoder.encode(text);
  }

  decodeFrom(bytes: Uint8Array, start: number): unknown {
    return this.decode(start === 0 ? bytes : bytes.subarray(start));
  }

  decode(bytes: Uint8Array): unknown {
    if (bytes.length === 0) return undefined;
    if (bytes.length > this.#unscanned) scanJson(bytes, this.#limits, this.#stack, this.#kinds);
    countCopied(bytes.length);
    try {
      // TextDecoder refuses views of shared memory; copy those out first.
      const own = bytes.buffer instanceof SharedArrayBuffer ? copyOut(bytes) : bytes;
      return JSON.parse(this.#decoder.decode(own));
    } catch (cause) {
      throw new RpcError('PROTOCOL', `payload is not valid JSON: ${(cause as Error).message}`, { cause });
    }
  }
}

class ViewCodec implements Codec {
  readonly kind = 'view' as const;

  bytesHeader(): number {
    return 0;
  }

  readonly inPlace = true;
  /** Errors are not bytes the caller built: they travel as msgpack maps. */
  readonly #errors: MsgpackCodec;

  /** Only error payloads are decoded into values; a View is one object over the bytes, whatever they hold. */
  constructor(limits: ResolvedDecodeLimits) {
    this.#errors = new MsgpackCodec(limits);
  }

  encodeError(error: object): Uint8Array {
    return this.#errors.encode(error);
  }

  decodeError(bytes: Uint8Array): unknown {
    return this.#errors.decode(bytes);
  }

  encode(value: unknown): Uint8Array {
    return viewBytes(value);
  }

  decodeFrom(bytes: Uint8Array, start: number): View {
    return this.decode(start === 0 ? bytes : bytes.subarray(start));
  }

  decode(bytes: Uint8Array): View {
    return new View(bytes);
  }
}
