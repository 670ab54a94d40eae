/**
 * The zero-copy view codec: a payload is bytes the caller built (raw, or a FlatBuffers buffer),
 * and the receiver gets a `View` over the received bytes where they lie, not a decoded copy.
 * Fields are read from those bytes on access (FlatBuffers tables), so a handler that reads three
 * fields of a 1 MiB request touches three fields, not a megabyte.
 */
import { ByteBuffer } from 'flatbuffers';
import { RpcError } from '../errors.js';

/** Something FlatBuffers-shaped that can hand over its finished bytes (a `flatbuffers.Builder`). */
export interface FinishedBuffer {
  asUint8Array(): Uint8Array;
}

/**
 * Received bytes, in place. Valid until the handler's promise settles (for a handler's request or
 * event) — after that the memory may be reused; take `copy()` of what must outlive it. A response
 * or stream item a caller receives is its own and stays valid.
 */
export class View {
  readonly #bytes: Uint8Array;

  /** @internal */
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  /** The payload bytes themselves, in place (raw-bytes mode). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  get byteLength(): number {
    return this.#bytes.length;
  }

  /**
   * The root table of a FlatBuffers payload, read in place: pass the generated `getRootAs…`
   * function (e.g. `view.root(Order.getRootAsOrder)`); fields are read from the bytes on access.
   */
  root<T>(getRoot: (bb: ByteBuffer) => T): T {
    return getRoot(new ByteBuffer(this.#bytes));
  }

  /** A copy of the bytes that outlives the view. */
  copy(): Uint8Array {
    return this.#bytes.slice();
  }
}

/** What `encode` takes: raw bytes, a finished FlatBuffers builder, or a View received earlier (sent on as is). */
export function viewBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (value instanceof View) return value.bytes;
  if (value !== null && typeof value === 'object' && typeof (value as FinishedBuffer).asUint8Array === 'function') {
    const bytes = (value as FinishedBuffer).asUint8Array();
    if (bytes instanceof Uint8Array) return bytes;
  }
  if (value === undefined) return new Uint8Array(0);
  throw new RpcError(
    'INVALID_ARGUMENT',
    `the view codec sends bytes: a Uint8Array, a finished flatbuffers.Builder or a View, not ${value === null ? 'null' : typeof value}`,
  );
}
