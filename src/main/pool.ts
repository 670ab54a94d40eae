/**
 * The process-wide piscina pool that hosts connection tasks. Tasks are long-lived, so the pool is
 * sized by tasks per thread, and a full pool refuses a task with BUSY instead of queueing it behind
 * tasks that will not finish.
 */
import os from 'node:os';
import { Piscina } from 'piscina';
import { RpcError } from '../errors.js';
import type { TaskSpec } from '../protocol/control.js';
import type { TaskRunner } from './remote-task.js';

export interface PoolOptions {
  /** Worker threads (default: available parallelism). */
  threads?: number;
  /** Listeners and connections one worker hosts at most (default 1024). */
  tasksPerThread?: number;
}

const kEntry = new URL('../worker/entry.cjs', import.meta.url).href;

interface Shared {
  pool: Piscina;
  capacity: number;
  active: number;
  users: number;
}

let shared: Shared | undefined;

/**
 * A user's hold on the shared pool; the pool is destroyed when the last user releases it. The
 * hold is taken at the first task run, so a node whose connections all run elsewhere (isolate
 * plugins, in their own threads) starts no pool threads at all.
 */
export class PoolLease implements TaskRunner {
  readonly #options: PoolOptions;
  #held = false;
  #released = false;

  constructor(options: PoolOptions = {}) {
    this.#options = options;
  }

  /** Runs one connection task; rejects with BUSY when every slot is taken, resolves when the task ends. */
  run(spec: TaskSpec): Promise<void> {
    if (this.#released) return Promise.reject(new RpcError('CLOSED', 'the node was closed'));
    const s = this.#hold();
    if (s.active >= s.capacity) {
      return Promise.reject(new RpcError('BUSY', `the worker pool is full: ${s.capacity} listeners and connections are open (raise pool.tasksPerThread)`));
    }
    s.active++;
    const done = s.pool.run(spec, { transferList: [spec.port] as never });
    return done.finally(() => s.active--);
  }

  /**
   * Terminates pool thread `threadId`: a task on it did not close in time (its event loop is
   * stuck). Every task of that thread ends with it; piscina starts a fresh thread in its place.
   */
  kill(threadId: number | undefined): void {
    const worker = threadId === undefined ? undefined : shared?.pool.threads.find((w) => w.threadId === threadId);
    if (worker !== undefined) void worker.terminate();
  }

  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    if (!this.#held || shared === undefined) return;
    const s = shared;
    if (--s.users > 0) return;
    shared = undefined;
    await s.pool.destroy();
  }

  /** Takes this lease's hold on the pool, starting the pool if nobody holds it (its size is the first holder's options). */
  #hold(): Shared {
    if (shared === undefined) {
      const threads = Math.max(1, this.#options.threads ?? os.availableParallelism());
      const tasksPerThread = Math.max(1, this.#options.tasksPerThread ?? 1024);
      const pool = new Piscina({
        filename: kEntry,
        minThreads: threads,
        maxThreads: threads,
        concurrentTasksPerWorker: tasksPerThread,
        // 'sync' would park a worker in Atomics.wait between tasks, freezing its sockets and ports.
        atomics: 'disabled',
        idleTimeout: 2 ** 31 - 1,
      });
      shared = { pool, capacity: threads * tasksPerThread, active: 0, users: 0 };
    }
    if (!this.#held) {
      this.#held = true;
      shared.users++;
    }
    return shared;
  }
}

/** How many nodes hold the shared pool now (0: it is not running). For tests. */
export function poolHolders(): number {
  return shared?.users ?? 0;
}
