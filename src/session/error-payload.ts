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

/**
 * The Error payload that tells the caller of `err`; `stacks`: whether it carries the stack (see
 * sendsStacks in errors.ts). Never throws: a call waits on it, and nothing else would answer.
 */
export function encodeErrorPayload(codec: Codec, err: unknown, origin: ErrorOrigin, stacks: boolean): Uint8Array {
  let read: WireError;
  try {
    read = toWireError(err, { stacks });
  } catch (readErr) {
    // A getter that throws, a Proxy that refuses: the caller still gets an answer, and this
    // session (every call on the connection) carries on.
    read = { code: 'REMOTE', name: 'Error', message: `the handler threw an error that cannot be read: ${messageOf(readErr)}` };
  }
  // An error's name, message and stack are whatever was assigned to them (a bigint, a cycle): the
  // peer takes an error only with string ones, and a codec may not carry the rest.
  const wire: ErrorPayload = {
    ...read,
    name: asText(read.name, 'Error'),
    message: asText(read.message, ''),
    // A handler's refusal (see kRefusal) is sent as the runtime's: the caller sees its code.
    origin: origin === 'handler' && isRefusal(err) ? 'runtime' : origin,
  };
  if (wire.stack !== undefined && typeof wire.stack !== 'string') delete wire.stack;
  try {
    return codec.encodeError(wire);
  } catch {
    // Own properties the codec cannot carry: send the error without them.
  }
  const { data: _dropped, cause: _cause, ...plain } = wire;
  try {
    return codec.encodeError(plain);
  } catch {
    // What is left the codec refused too (a third party's `remote`, say): its strings alone.
  }
  try {
    return codec.encodeError({ code: wire.code, name: wire.name, message: wire.message, origin: wire.origin });
  } catch {
    // Nothing this codec makes can say it: an empty payload, which the caller fails to decode
    // (PROTOCOL), still settles its call.
    return kNoPayload;
  }
}

const kNoPayload = new Uint8Array(0);

/** `value` if it is a string, else its string form (`fallback` when it has none). */
function asText(value: unknown, fallback: string): string {
  if (typeof value === 'string') return value;
  if (value === undefined || value === null) return fallback;
  try {
    return String(value);
  } catch {
    return fallback;
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
