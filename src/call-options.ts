// The call options, declared once, and the one check of them that every way of calling runs (a
// Client, a Session, a proxy). Kept apart from ./types.ts (which re-exports them) so that
// ./service/types.ts can build on them without importing ./types.ts, which imports it: no import
// cycles (scripts/check-imports.mjs).
import { RpcError, messageOf } from './errors.js';
import { badTimeLimit, isTimerMs } from './limits.js';

/** Options for one call. */
export interface CallOptions {
  /** Rejects with `TIMEOUT` after this many ms; the deadline travels to the handler as a relative time. */
  timeoutMs?: number;
  /** Aborting rejects the call with `CANCELLED` at once and cancels it at the peer. */
  signal?: AbortSignal;
  /**
   * Safe to run twice: when the connection carrying the call dies before the answer, a node's client
   * sends it again on another ready endpoint (or the same one once reconnected), within `timeoutMs`,
   * at most 5 times in all; so is one the server refused without running it (a gracefully closing
   * server's `UNAVAILABLE`, `BUSY` from its `maxConcurrentCalls`). Default false: such a call
   * rejects with the connection's close reason (`CLOSED`), or that refusal. Ignored by a handler's `ctx.client`,
   * which has one connection.
   */
  idempotent?: boolean;
  /**
   * While no connection is ready, wait for one (until `timeoutMs`: `TIMEOUT`; or the signal:
   * `CANCELLED`) instead of failing at once with `UNAVAILABLE`. Default: the client's
   * `reconnect.waitForReady`, else false. Ignored by a handler's `ctx.client`.
   */
  waitForReady?: boolean;
}

/** Options for a call answered with a stream. */
export interface StreamOptions extends CallOptions {
  /**
   * Flow control: the most items the peer may have sent that this side has not yet taken
   * (default 32, at most 65536). A consumer that stops taking pauses the producer at that bound.
   * `timeoutMs` covers the whole stream.
   */
  window?: number;
}

/** Largest `window` a stream may ask for (it bounds memory: items are not bounded in size). */
export const kMaxWindow = 65536;

/**
 * The INVALID_ARGUMENT a call made with `options` fails with, or undefined when they are usable
 * (`stream`: `window` is checked too). Never throws: options whose reading throws are refused.
 */
export function callOptionsError(options: unknown, stream = false): RpcError | undefined {
  if (options === undefined) return undefined;
  if (options === null || typeof options !== 'object' || Array.isArray(options)) return new RpcError('INVALID_ARGUMENT', `call options are an object, got ${kindOf(options)}`);
  try {
    // A signal passed where its options go would otherwise be read as options that say nothing.
    if (isAbortSignal(options)) return new RpcError('INVALID_ARGUMENT', 'call options are an object: pass the signal as { signal }');
    const { timeoutMs, signal, idempotent, waitForReady } = options as StreamOptions;
    if (timeoutMs !== undefined && timeoutMs !== Infinity && !isTimerMs(timeoutMs)) return badTimeLimit('timeoutMs', timeoutMs);
    if (signal !== undefined && !isAbortSignal(signal)) return new RpcError('INVALID_ARGUMENT', `signal must be an AbortSignal, got ${kindOf(signal)}`);
    if (idempotent !== undefined && typeof idempotent !== 'boolean') return new RpcError('INVALID_ARGUMENT', `idempotent must be a boolean, got ${kindOf(idempotent)}`);
    if (waitForReady !== undefined && typeof waitForReady !== 'boolean') return new RpcError('INVALID_ARGUMENT', `waitForReady must be a boolean, got ${kindOf(waitForReady)}`);
    const window = stream ? (options as StreamOptions).window : undefined;
    if (window !== undefined && !(Number.isInteger(window) && window >= 1 && window <= kMaxWindow)) {
      return new RpcError('INVALID_ARGUMENT', `window must be an integer from 1 to ${kMaxWindow}, got ${kindOf(window)}`);
    }
  } catch (err) {
    return new RpcError('INVALID_ARGUMENT', `the call options could not be read: ${messageOf(err)}`, { cause: err });
  }
  return undefined;
}

/** An AbortSignal, or what passes for one (another realm's, a polyfill's): listened to and read, nothing else. */
function isAbortSignal(value: unknown): value is AbortSignal {
  if (value instanceof AbortSignal) return true;
  const v = value as Partial<AbortSignal> | null;
  return typeof v === 'object' && v !== null && typeof v.aborted === 'boolean' && typeof v.addEventListener === 'function' && typeof v.removeEventListener === 'function';
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return Array.isArray(value) ? 'an array' : typeof value;
}
