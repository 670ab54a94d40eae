/**
 * A client's reconnection settings, and the backoff they give: each failed attempt waits longer
 * than the last (exponentially, with jitter), up to a cap.
 */
import { RpcError } from '../errors.js';
import { isTimerMs } from '../limits.js';

/** Opt-in reconnection: a lost or failed connection is tried again, after delays that grow exponentially, with jitter. */
export interface ReconnectOptions {
  /** Delay before the retry that follows the first failed attempt, in ms (default 100). */
  initialDelayMs?: number;
  /** Largest delay between attempts, in ms (default 5000). A connection that drops sooner than this after it came up counts as a failed attempt. */
  maxDelayMs?: number;
  /** Each further failed attempt multiplies the delay by this (default 2; at least 1). */
  multiplier?: number;
  /** Each delay is moved at random by up to this fraction of itself, either way (default 0.2; 0 to 1), then capped at maxDelayMs. */
  jitter?: number;
  /** Calls made while no connection is ready wait for one (up to their timeoutMs) instead of failing with UNAVAILABLE (default false; a call's own `waitForReady` wins). */
  waitForReady?: boolean;
}

const kReconnectDefaults: Required<ReconnectOptions> = { initialDelayMs: 100, maxDelayMs: 5000, multiplier: 2, jitter: 0.2, waitForReady: false };

/** Checks reconnect options and fills in the defaults; `true` means all defaults, `false`/undefined no reconnect. */
export function reconnectOptions(value: ReconnectOptions | boolean | undefined): Required<ReconnectOptions> | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return { ...kReconnectDefaults };
  if (value === null || typeof value !== 'object') throw new RpcError('INVALID_ARGUMENT', 'reconnect takes true or an options object');
  const o = { ...kReconnectDefaults, ...Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) } as Required<ReconnectOptions>;
  if (!isTimerMs(o.initialDelayMs)) throw new RpcError('INVALID_ARGUMENT', `reconnect.initialDelayMs must be from 0 to 2^31-1, got ${o.initialDelayMs}`);
  if (!isTimerMs(o.maxDelayMs) || o.maxDelayMs < o.initialDelayMs) {
    throw new RpcError('INVALID_ARGUMENT', `reconnect.maxDelayMs must be from initialDelayMs (${o.initialDelayMs}) to 2^31-1, got ${o.maxDelayMs}`);
  }
  if (!(Number.isFinite(o.multiplier) && o.multiplier >= 1)) throw new RpcError('INVALID_ARGUMENT', `reconnect.multiplier must be at least 1, got ${o.multiplier}`);
  if (!(o.jitter >= 0 && o.jitter <= 1)) throw new RpcError('INVALID_ARGUMENT', `reconnect.jitter must be from 0 to 1, got ${o.jitter}`);
  if (typeof o.waitForReady !== 'boolean') throw new RpcError('INVALID_ARGUMENT', `reconnect.waitForReady must be a boolean, got ${o.waitForReady}`);
  return o;
}

/** The delay before the retry that follows `failures` consecutive failed attempts (1 or more). */
export function backoffDelay(failures: number, o: Required<ReconnectOptions>, random: () => number = Math.random): number {
  const base = Math.min(o.maxDelayMs, o.initialDelayMs * o.multiplier ** Math.max(0, failures - 1));
  return Math.max(0, Math.min(o.maxDelayMs, Math.round(base * (1 + o.jitter * (2 * random() - 1)))));
}
