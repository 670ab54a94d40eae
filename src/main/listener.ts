/**
 * A served address that stays served. A listener is a long-lived task in a pool worker, and the
 * connections it accepts live in that worker too. If the worker dies under it (a worker-module
 * handler's uncaught exception or process.exit, a worker out of memory), those connections close
 * with CLOSED like any dead peer, and the listener starts again on a fresh worker at the same
 * address: a port the kernel picked stays the port, so `addresses` and a published record stay
 * true. A listener that keeps dying, or cannot listen again at once (the port taken meanwhile),
 * is retried after a back-off that doubles up to kMaxBackoffMs.
 */
import { RpcError, messageOf } from '../errors.js';
import { listenerRestart, logger } from '../observe.js';
import { formatAddress, type Address, type TransportDescriptor } from '../transport/descriptors.js';
import { shmControlPath } from '../transport/shm.js';
import { removeStaleSocket } from '../transport/socket-file.js';
import { isNamedPipe } from '../transport/unix.js';
import { RemoteTask, type RemoteTaskOptions, type TaskRunner } from './remote-task.js';

/** One listener in RunningNode.stats(). Counts run from the start of its current worker task. */
export interface ListenerStats {
  /** What it is bound to (port 0 resolved), as in RunningNode.addresses; none for a transport that reports none. */
  address?: Address;
  /** The pool threads serving it (`serve(..., { threads })`; 1 otherwise); the counts below are their sums. */
  threads: number;
  /** Connections open now. */
  connections: number;
  /** Connections it took in (past the handshake, not refused) since its task started. */
  accepted: number;
  /** Frames received and sent on them all since then, closed connections included. */
  framesIn: number;
  framesOut: number;
  /** How many times the listener was started again after its worker died (its counts start again with it). */
  restarts: number;
}

const log = logger('listener');

/** The first retry waits this long; each failure in a row doubles it, up to kMaxBackoffMs. */
const kFirstBackoffMs = 50;
const kMaxBackoffMs = 5000;
/** A listener that stayed up this long counts as healthy: the next death restarts it at once. */
const kHealthyMs = 5000;

/** What RunningNode holds for each served address: one supervised listener, or a group of them on several threads. */
export interface ServedAddress {
  readonly address: Address | undefined;
  stats(): Promise<ListenerStats>;
  drain(): Promise<void>;
  close(): Promise<void>;
}

export class SupervisedListener implements ServedAddress {
  /** The bound address, as first bound (port 0 resolved); restarts keep it. */
  readonly address: Address | undefined;
  readonly #label: string;
  readonly #runner: TaskRunner;
  readonly #options: RemoteTaskOptions;
  #task: RemoteTask;
  #startedAt = performance.now();
  /** Failures in a row (deaths soon after starting, failed restarts): the back-off's exponent. */
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #wakeSleeper: (() => void) | undefined;
  #closing: Promise<void> | undefined;
  /** Set by drain(): a task that ends now is not started again. */
  #draining = false;
  /** The restart loop, while one runs (close() waits for it). */
  #restarting: Promise<void> | undefined;
  /** How many times it was started again after its task ended. */
  #restarts = 0;

  private constructor(runner: TaskRunner, options: RemoteTaskOptions, task: RemoteTask) {
    this.#runner = runner;
    this.address = task.address;
    // Later starts bind what the first one bound, not port 0 again.
    this.#options = { ...options, config: { ...options.config, transport: pinned(options.config.transport, task.address) } };
    this.#label = formatAddress(task.address ?? options.config.transport);
    this.#task = task;
    this.#watch(task);
  }

  /** Starts listening; rejects (nothing left running) when the first start fails. */
  static async start(runner: TaskRunner, options: RemoteTaskOptions): Promise<SupervisedListener> {
    return new SupervisedListener(runner, options, await RemoteTask.start(runner, options));
  }

  /**
   * A graceful close's first part: stops listening, and lets each connection answer the calls it
   * serves (new ones are refused with UNAVAILABLE) and then close; no restart follows. Resolves
   * once every connection has closed. close() ends everything at any time.
   */
  drain(): Promise<void> {
    this.#draining = true;
    return this.#task.drain();
  }

  /** What it carries now (RunningNode.stats()): its current task's counts, zero while it is being started again. */
  async stats(): Promise<ListenerStats> {
    const task = await this.#task.stats();
    return {
      ...(this.address !== undefined ? { address: this.address } : {}),
      threads: 1,
      connections: task?.connections ?? 0,
      accepted: task?.accepted ?? 0,
      framesIn: task?.framesIn ?? 0,
      framesOut: task?.framesOut ?? 0,
      restarts: this.#restarts,
    };
  }

  /** Stops listening and closes its connections; no restart follows. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#wakeSleeper?.();
      await this.#restarting;
      await this.#task.close();
      // A socket file is linked into place after its bind (listenSocketFile), so libuv, which
      // unlinks only the path it bound, does not remove it when a killed thread's handles close:
      // what nothing answers on any more is removed here (a new owner's live socket stays).
      const file = socketFileOf(this.#options.config.transport);
      if (file !== undefined) await removeStaleSocket(file).catch(() => {});
    })();
    return this.#closing;
  }

  #watch(task: RemoteTask): void {
    void task.ended.then(() => {
      if (this.#closing !== undefined || this.#draining || task !== this.#task) return;
      const reason = task.endReason ?? new RpcError('CLOSED', 'the listener ended');
      log('listener %s ended: %s %s; starting it again', this.#label, reason.code, reason.message);
      if (performance.now() - this.#startedAt >= kHealthyMs) this.#failures = 0;
      // #restart logs its failures and retries; nothing of it may become an unhandled rejection.
      this.#restarting = this.#restart(reason)
        .catch((err: unknown) => log('listener %s: restarting failed: %s', this.#label, messageOf(err)))
        .finally(() => (this.#restarting = undefined));
    });
  }

  async #restart(reason: RpcError): Promise<void> {
    for (let attempt = 1; this.#closing === undefined; attempt++) {
      if (this.#failures > 0) await this.#sleep(Math.min(kMaxBackoffMs, kFirstBackoffMs * 2 ** (this.#failures - 1)));
      if (this.#closing !== undefined) return;
      this.#failures++;
      let task: RemoteTask;
      try {
        task = await RemoteTask.start(this.#runner, this.#options);
      } catch (err) {
        log('listener %s: restart %d failed: %s', this.#label, attempt, messageOf(err));
        continue;
      }
      if (this.#closing !== undefined) {
        await task.close();
        return;
      }
      this.#task = task;
      this.#restarts++;
      this.#startedAt = performance.now();
      this.#watch(task);
      log('listener %s is listening again (restart %d)', this.#label, attempt);
      if (listenerRestart.hasSubscribers) listenerRestart.publish({ address: this.address, error: reason, attempt });
      return;
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wakeSleeper = resolve;
      this.#timer = setTimeout(resolve, ms);
    }).finally(() => {
      this.#timer = undefined;
      this.#wakeSleeper = undefined;
    });
  }
}

/** The socket file a listener on `transport` puts in place, if any. */
function socketFileOf(transport: TransportDescriptor): string | undefined {
  if (transport.kind === 'unix') return isNamedPipe(transport.path) ? undefined : transport.path;
  if (transport.kind === 'shm') return shmControlPath(transport.name);
  return undefined;
}

/** `transport` bound to what its first start bound: the port the kernel picked for port 0. */
function pinned(transport: TransportDescriptor, address: Address | undefined): TransportDescriptor {
  if (transport.kind === 'tcp' && address?.kind === 'tcp') return { ...transport, port: address.port };
  if (transport.kind === 'vsock' && address?.kind === 'vsock') return { ...transport, port: address.port };
  return transport;
}
