/**
 * Observability: diagnostics_channel events and `DEBUG=ogurpchik:*` logging. Both are published on
 * the thread where the thing happens (client calls on the caller's thread; a worker-module
 * handler's connections in its worker). Payloads and secrets are never included.
 */
import diagnostics from 'node:diagnostics_channel';
import { formatWithOptions } from 'node:util';

/** `{ id, peer }` when a call is sent. */
export const callStart = diagnostics.channel('ogurpchik:call:start');
/** `{ id, peer, durationMs }` when a call resolves. */
export const callEnd = diagnostics.channel('ogurpchik:call:end');
/** `{ id, peer, durationMs, error }` when a call rejects (timeout, cancel, remote error, close). */
export const callError = diagnostics.channel('ogurpchik:call:error');
/** `{ peer }` when a connection opens (seen by this thread). */
export const connectionOpen = diagnostics.channel('ogurpchik:connection:open');
/** `{ peer, error }` when it closes; `error` says why. */
export const connectionClose = diagnostics.channel('ogurpchik:connection:close');
/** `{ address, error, attempt }` when a listener whose worker died is listening again (see SupervisedListener). */
export const listenerRestart = diagnostics.channel('ogurpchik:listener:restart');

/** Namespaces enabled by DEBUG (comma or space separated, `*` wildcards), read once per thread. */
const kPatterns = (process.env.DEBUG ?? '')
  .split(/[\s,]+/)
  .filter(Boolean)
  .map((p) => ({ negate: p.startsWith('-'), re: new RegExp(`^${p.replace(/^-/, '').replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`) }));

function enabled(namespace: string): boolean {
  let on = false;
  for (const p of kPatterns) if (p.re.test(namespace)) on = !p.negate;
  return on;
}

export type Logger = ((format: string, ...args: unknown[]) => void) & { enabled: boolean };

/** A debug-style logger for `ogurpchik:<area>`: prints to stderr only when DEBUG names it. */
export function logger(area: string): Logger {
  const namespace = `ogurpchik:${area}`;
  const on = enabled(namespace);
  const log = ((format: string, ...args: unknown[]) => {
    if (!on) return;
    process.stderr.write(`${new Date().toISOString()} ${namespace} ${formatWithOptions({ colors: false, depth: 3 }, format, ...args)}\n`);
  }) as Logger;
  log.enabled = on;
  return log;
}

/**
 * In a typed array, not a `let`: past 2^30 a number no longer fits V8's small-integer form, and
 * every add to a variable then allocated a fresh heap number (three or four per call, for good,
 * once a process had copied its first GiB).
 */
const copied = new Float64Array(1);

/**
 * Counts payload bytes the runtime copied on this thread (frame assembly, ring copies, decoding).
 * A plain add on paths that already copy those bytes; the bench reads it to show what a codec or
 * path costs in copies.
 */
export function countCopied(bytes: number): void {
  copied[0] += bytes;
}

/** Payload bytes copied on this thread so far (see countCopied). */
export function bytesCopied(): number {
  return copied[0];
}
