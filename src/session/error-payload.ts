/**
 * What an Error or Close payload holds, both ways: the error a handler threw (or the runtime's own
 * refusal) as it is sent, and the RpcError a received one becomes.
 */
import type { Codec } from '../codec/index.js';
import { RpcError, asWireError, fromWireError, messageOf, remoteError, toWireError, type WireError } from '../errors.js';

/** Who raised an error: the handler (the caller sees REMOTE) or the runtime (the caller sees its code). */
export type ErrorOrigin = 'handler' | 'runtime';

/** Error payloads say who raised them, beside the error itself. */
type ErrorPayload = WireError & { origin?: ErrorOrigin };

/** Set (non-enumerable) on an error a handler throws to refuse a request as the runtime would: the caller sees its code, not REMOTE. */
export const kRefusal = Symbol.for('ogurpchik.refusal');

function isRefusal(err: unknown): boolean {
  return (err as { [kRefusal]?: unknown } | null | undefined)?.[kRefusal] === true;
}

/** The Error payload that tells the caller of `err`; `stacks`: whether it carries the stack (see sendsStacks in errors.ts). */
export function encodeErrorPayload(codec: Codec, err: unknown, origin: ErrorOrigin, stacks: boolean): Uint8Array {
  let read: WireError;
  try {
    read = toWireError(err, { stacks });
  } catch (readErr) {
    // A getter that throws, a Proxy that refuses: the caller still gets an answer, and this
    // session (every call on the connection) carries on.
    read = { code: 'REMOTE', name: 'Error', message: `the handler threw an error that cannot be read: ${messageOf(readErr)}` };
  }
  // A handler's refusal (see kRefusal) is sent as the runtime's: the caller sees its code.
  const wire: ErrorPayload = { ...read, origin: origin === 'handler' && isRefusal(err) ? 'runtime' : origin };
  try {
    return codec.encodeError(wire);
  } catch {
    // Own properties the codec cannot carry: send the error without them.
    const { data: _dropped, cause: _cause, ...plain } = wire;
    return codec.encodeError(plain);
  }
}

/**
 * The error a peer's Error or Close payload says (`asIs`: as the peer's own, never REMOTE, for a
 * Close). Never throws: a call already out of its table waits on the result, so anything decoding
 * throws (a stack overflow, say) is a PROTOCOL error.
 */
export function decodeErrorPayload(codec: Codec, payload: Uint8Array, asIs = false): RpcError {
  try {
    const raw = codec.decodeError(payload);
    const wire = asWireError(raw);
    if (wire === undefined) return new RpcError('PROTOCOL', 'the peer sent an error that is not an error');
    return asIs || (raw as ErrorPayload).origin === 'runtime' ? fromWireError(wire) : remoteError(wire);
  } catch (err) {
    return undecodable(err);
  }
}

/** What a call gets when its answer cannot be decoded: the codec's PROTOCOL error, or one made of whatever else decoding threw. */
export function undecodable(err: unknown): RpcError {
  if (RpcError.is(err)) return err;
  return new RpcError('PROTOCOL', `the peer's answer could not be decoded: ${messageOf(err)}`, { cause: err });
}
