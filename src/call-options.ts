// Kept apart from ./types.ts (which re-exports them) so that ./service/types.ts can build on them
// without importing ./types.ts, which imports it: no import cycles (scripts/check-imports.mjs).

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
