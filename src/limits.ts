/**
 * Checks of the numbers a user hands the runtime: time limits and integer options.
 *
 * A timer holds a signed 32-bit delay: `setTimeout` fires a longer one after 1 ms (Node only
 * prints a TimeoutOverflowWarning), so a time limit above 2^31-1 ms would end at once. Every limit
 * is therefore checked against that, and Infinity is the way to say "none".
 */
import { RpcError } from './errors.js';

/** The longest delay a timer holds: 2^31-1 ms, about 24.8 days. */
export const kMaxTimerMs = 2 ** 31 - 1;

/** Whether `value` is a time limit a timer can hold: a number of ms from 0 to kMaxTimerMs. */
export function isTimerMs(value: unknown): value is number {
  return typeof value === 'number' && value >= 0 && value <= kMaxTimerMs;
}

/** The INVALID_ARGUMENT for a time limit `what` that is not undefined, Infinity or isTimerMs. */
export function badTimeLimit(what: string, value: unknown): RpcError {
  return new RpcError('INVALID_ARGUMENT', `${what} must be a number of ms from 0 to 2^31-1 (about 24.8 days), or Infinity for none; got ${shown(value)}`);
}

/** A caller's time limit: undefined when there is none (undefined or Infinity), else the number; throws badTimeLimit. */
export function timeLimit(what: string, value: unknown): number | undefined {
  if (value === undefined || value === Infinity) return undefined;
  if (!isTimerMs(value)) throw badTimeLimit(what, value);
  return value;
}

/** What an integer option may be: `fallback` when it is undefined, else from `min` to `max`. */
export interface IntegerRange {
  fallback: number;
  min: number;
  max: number;
}

/** `value` (or `range.fallback` when undefined) as an integer within `range`, else INVALID_ARGUMENT naming `what`. */
export function checkInteger(what: string, value: unknown, range: IntegerRange): number {
  const n = value === undefined ? range.fallback : value;
  if (!(Number.isInteger(n) && (n as number) >= range.min && (n as number) <= range.max)) {
    throw new RpcError('INVALID_ARGUMENT', `${what} must be an integer from ${bound(range.min)} to ${bound(range.max)}, got ${shown(value)}`);
  }
  return n as number;
}

const kPowers = new Map([
  [2 ** 30, '2^30'],
  [2 ** 31 - 1, '2^31-1'],
  [2 ** 32 - 1, '2^32-1'],
]);

function bound(n: number): string {
  return kPowers.get(n) ?? String(n);
}

function shown(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}
