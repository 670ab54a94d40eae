/**
 * The handler's side of one call being served: its `ctx`, its deadline timer, and its streams'
 * ends, all stopped at once when the call is aborted (cancel, deadline, close).
 */
import { RpcError } from '../errors.js';
import { kMaxTimerMs } from '../limits.js';
import type { CallContext, PeerClient, PeerInfo } from '../types.js';
import type { Inbox, Outflow } from './streams.js';

/**
 * One request being served, and the handler's `ctx`. The AbortController behind `ctx.signal` is
 * made only when a handler reads `signal`: most handlers never do, and making one for every call
 * would cost each small request more than anything else its serving does (docs/PERFORMANCE.md).
 */
export class Serving implements CallContext {
  readonly peer: PeerInfo;
  readonly client: PeerClient;
  readonly deadline?: number;
  aborted = false;
  /** Set once the session has stopped counting this call among those it serves. */
  served = false;
  /** The caller's request stream, when it sent one. */
  requestStream: Inbox | undefined;
  /** Credit for our result stream, when the caller asked for one. */
  resultFlow: Outflow | undefined;
  #reason: RpcError | undefined;
  #controller: AbortController | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(client: PeerClient, peer: PeerInfo, deadlineMs: number) {
    this.peer = peer;
    this.client = client;
    if (deadlineMs > 0) {
      this.deadline = Date.now() + deadlineMs;
      this.#arm(deadlineMs, deadlineMs);
    }
  }

  /** Aborts the call `ms` from now; a deadline longer than a timer holds (from a peer's u32 field) takes several. */
  #arm(ms: number, deadlineMs: number): void {
    const step = Math.min(ms, kMaxTimerMs);
    this.#timer = setTimeout(() => {
      if (ms > step) this.#arm(ms - step, deadlineMs);
      else this.abort(new RpcError('TIMEOUT', `the caller's deadline of ${deadlineMs} ms passed`));
    }, step);
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  abort(reason: RpcError): void {
    if (this.aborted) return;
    this.aborted = true;
    this.#reason = reason;
    this.done();
    this.requestStream?.fail(reason, false);
    this.resultFlow?.stop();
    this.#controller?.abort(reason);
  }

  /** The handler finished: its deadline timer is no longer needed. */
  done(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }
}
