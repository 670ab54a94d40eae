/**
 * Codecs turn payload values into bytes and back. A codec is chosen per serve/connect as a plain
 * descriptor (it crosses into worker threads); each thread builds its own instance with `createCodec`,
 * so no encoder state is shared between instances or threads.
 */
import { Packr } from 'msgpackr';
import { RpcError } from '../errors.js';
import { countCopied } from '../observe.js';
import { View, viewBytes } from './view.js';

export type CodecKind = 'msgpack' | 'json' | 'view';

/** A serialisable choice of codec. */
export type CodecDescriptor = { kind: 'msgpack' } | { kind: 'json' } | { kind: 'view' };

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
   * Decodes bytes into a value; unless `inPlace`, a fresh one that does not reference `bytes` (which
   * may be a ring view). With `owned` (nobody reuses `bytes`: a frame read from a stream, a message
   * reassembled from ring fragments) binary values may be views into `bytes` instead of copies.
   */
  decode(bytes: Uint8Array, owned?: boolean): unknown;
  /** Encodes an error payload (a plain object: see docs/PROTOCOL.md); the view codec uses msgpack for these. */
  encodeError(error: object): Uint8Array;
  /** Decodes an error payload into a fresh value. */
  decodeError(bytes: Uint8Array): unknown;
}

/** MessagePack via msgpackr (the default): binary-safe, fast, keeps Uint8Array, Date, Map, Set, bigint. */
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

export function createCodec(descriptor: CodecDescriptor = msgpack()): Codec {
  switch (descriptor?.kind) {
    case 'msgpack':
      return new MsgpackCodec();
    case 'json':
      return new JsonCodec();
    case 'view':
      return new ViewCodec();
    default:
      throw new RpcError('INVALID_ARGUMENT', `unknown codec ${JSON.stringify((descriptor as { kind?: unknown })?.kind)}`);
  }
}

class MsgpackCodec implements Codec {
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

  encode(value: unknown): Uint8Array {
    try {
      return this.#packr.pack(value);
    } catch (cause) {
      throw new RpcError('INVALID_ARGUMENT', `value cannot be encoded as msgpack: ${(cause as Error).message}`, { cause });
    }
  }

  decode(bytes: Uint8Array, owned = false): unknown {
    // Decoding materialises every string (and, from bytes not owned, every binary) of the value:
    // counted as copied, unless the binaries are left in place.
    if (!owned) countCopied(bytes.length);
    try {
      return bytes.length === 0 ? undefined : (owned ? this.#aliasing : this.#packr).unpack(bytes);
    } catch (cause) {
      throw new RpcError('PROTOCOL', `payload is not valid msgpack: ${(cause as Error).message}`, { cause });
    }
  }
}

class JsonCodec implements Codec {
  encodeError(error: object): Uint8Array {
    return this.encode(error);
  }

  decodeError(bytes: Uint8Array): unknown {
    return this.decode(bytes);
  }

  readonly kind = 'json' as const;
  readonly inPlace = false;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder('utf-8', { fatal: true });

  encode(value: unknown): Uint8Array {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (cause) {
      throw new RpcError('INVALID_ARGUMENT', `value cannot be encoded as JSON: ${(cause as Error).message}`, { cause });
    }
    // undefined encodes as an empty payload, which decodes back to undefined.
    return text === undefined ? new Uint8Array(0) : this.#encoder.encode(text);
  }

  decode(bytes: Uint8Array): unknown {
    if (bytes.length === 0) return undefined;
    countCopied(bytes.length);
    try {
      // TextDecoder refuses views of shared memory; copy those out first.
      const own = bytes.buffer instanceof SharedArrayBuffer ? bytes.slice() : bytes;
      return JSON.parse(this.#decoder.decode(own));
    } catch (cause) {
      throw new RpcError('PROTOCOL', `payload is not valid JSON: ${(cause as Error).message}`, { cause });
    }
  }
}

class ViewCodec implements Codec {
  readonly kind = 'view' as const;
  readonly inPlace = true;
  /** Errors are not bytes the caller built: they travel as msgpack maps. */
  readonly #errors = new MsgpackCodec();

  encodeError(error: object): Uint8Array {
    return this.#errors.encode(error);
  }

  decodeError(bytes: Uint8Array): unknown {
    return this.#errors.decode(bytes);
  }

  encode(value: unknown): Uint8Array {
    return viewBytes(value);
  }

  decode(bytes: Uint8Array): View {
    return new View(bytes);
  }
}
