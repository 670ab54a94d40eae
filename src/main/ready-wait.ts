/** Calls that wait for a client's endpoint to become ready (`waitForReady`): each wakes on every change, or gives up at its deadline or abort. */
import { RpcError } from '../errors.js';
import type { CallOptions } from '../types.js';

/** The calls waiting for a change; the Channel wakes them all whenever one may let them go on. */
export class ReadyWaiters {
  readonly #waiters = new Set<() => void>();

  /**
   * Resolves at the next `wake()`; rejects with TIMEOUT at `deadline` (a `performance.now()` time),
   * its message naming the endpoints as `describe` gives them then, or with CANCELLED on abort.
   */
  next(options: CallOptions | undefined, deadline: number | undefined, describe: () => string): Promise<void> {
    const signal = options?.signal;
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (err?: RpcError) => {
        this.#waiters.delete(wake);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const wake = () => done();
      const onAbort = () => done(cancelled(signal!));
      if (signal?.aborted) return onAbort();
      this.#waiters.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (deadline !== undefined) {
        timer = setTimeout(() => done(new RpcError('TIMEOUT', `no connection was ready within the call's ${options?.timeoutMs} ms (${describe()})`)), Math.max(0, deadline - performance.now()));
      }
    });
  }

  /** Wakes every waiting call; each looks again for a ready endpoint. */
  wake(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }
}

function cancelled(signal: AbortSignal): RpcError {
  const reason = signal.reason;
  if (RpcError.is(reason) && reason.code === 'CANCELLED') return reason;
  return new RpcError('CANCELLED', 'the call was cancelled', reason === undefined ? {} : { cause: reason });
}
