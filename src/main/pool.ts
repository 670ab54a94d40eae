/**
 * The process-wide piscina pool that hosts connection tasks. Tasks are long-lived, so the pool is
 * sized by tasks per thread, and a full pool refuses a task with BUSY instead of queueing it behind
 * tasks that will not finish. Client connections are packed onto one pool thread (see placement()),
 * listeners go to the least busy thread.
 */
import os from 'node:os';
import { Piscina } from 'piscina';
import { RpcError } from '../errors.js';
import type { TaskSpec } from '../bridge/control.js';
import type { TaskRunner } from './remote-task.js';

export interface PoolOptions {
  /** Worker threads (default: available parallelism). */
  threads?: number;
  /** Listeners and connections one worker hosts at most (default 1024). */
  tasksPerThread?: number;
}

const kEntry = new URL('../worker/entry.cjs', import.meta.url).href;

/**
 * Where a task's placement hint rides: piscina hands a task's value under this symbol to the load
 * balancer, and structured cloning drops symbol keys, so the worker never sees it.
 */
const kPlacement: symbol = Piscina.queueOptionsSymbol;

interface Placement {
  /** A client connection: packed with the others (see placement()). */
  client: boolean;
}

type Balancer = NonNullable<NonNullable<ConstructorParameters<typeof Piscina>[0]>['loadBalancer']>;
type PoolWorker = Parameters<Balancer>[1][number];

/**
 * The pool's load balancer. Listeners go to the least busy thread (the first idle one, else the
 * one with the fewest tasks). Client connections all go to one thread, the one that took the first
 * of them, until it holds `maxPerThread` tasks (or dies): every connection of a pool thread rides
 * one ring pair with the main thread, so connections packed on one thread share one batch and one
 * wake-up per direction, and the process keeps one busy pool thread for its calls, not one per core.
 */
function placement(maxPerThread: number): Balancer {
  let clientThread: number | undefined;
  const leastBusy = (workers: PoolWorker[]): PoolWorker | null => {
    let best: PoolWorker | null = null;
    for (const w of workers) {
      if (w.terminating || w.destroyed || w.currentUsage >= maxPerThread) continue;
      if (w.currentUsage === 0) return w;
      if (best === null || w.currentUsage < best.currentUsage) best = w;
    }
    return best;
  };
  return (task, workers) => {
    const hint = (task as unknown as Record<symbol, Placement | null>)[kPlacement];
    if (hint?.client !== true) return leastBusy(workers);
    for (const w of workers) {
      if (w.id === clientThread && !w.terminating && !w.destroyed && w.currentUsage < maxPerThread) return w;
    }
    const chosen = leastBusy(workers);
    if (chosen !== null) clientThread = chosen.id;
    return chosen;
  };
}

interface Shared {
  pool: Piscina;
  threads: number;
  tasksPerThread: number;
  capacity: number;
  active: number;
  users: number;
  /** Set while nobody holds the pool: it is destroyed when this timer fires. */
  linger: ReturnType<typeof setTimeout> | undefined;
}

let shared: Shared | undefined;

/**
 * How long the pool outlives its last user. Starting its threads costs ~100 ms, which a process
 * that opens a node per call (connect, call, close, again) would otherwise pay every time. Idle
 * pool threads are unref'd, as is this timer: a lingering pool never keeps the process alive.
 */
const kLingerMs = 5000;

/**
 * A user's hold on the shared pool; the pool is destroyed kLingerMs after the last user releases
 * it, unless a new user takes it meanwhile. The hold is taken at the first task run, so a node
 * whose connections all run elsewhere (isolate plugins, in their own threads) starts no pool
 * threads at all.
 */
export class PoolLease implements TaskRunner {
  /** The pool size this lease asks for (used if it starts the pool, or finds one lingering). */
  readonly #threads: number;
  readonly #tasksPerThread: number;
  #held = false;
  #released = false;

  constructor(options: PoolOptions = {}) {
    this.#threads = Math.max(1, options.threads ?? os.availableParallelism());
    this.#tasksPerThread = Math.max(1, options.tasksPerThread ?? 1024);
  }

  /** Runs one connection task; rejects with BUSY when every slot is taken, resolves when the task ends. */
  run(spec: TaskSpec): Promise<void> {
    if (this.#released) return Promise.reject(new RpcError('CLOSED', 'the node was closed'));
    const s = this.#hold();
    if (s.active >= s.capacity) {
      return Promise.reject(new RpcError('BUSY', `the worker pool is full: ${s.capacity} listeners and connections are open (raise pool.tasksPerThread)`));
    }
    s.active++;
    const task = { ...spec, [kPlacement]: { client: spec.role === 'connect' } satisfies Placement };
    const done = s.pool.run(task, { transferList: [spec.hub.control] as never });
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
    s.linger = setTimeout(() => {
      if (shared === s) shared = undefined;
      s.pool.destroy().catch(() => {});
    }, kLingerMs).unref();
  }

  /** Takes this lease's hold on the pool, starting the pool if nobody holds it (its size is the first holder's options). */
  #hold(): Shared {
    const threads = this.#threads;
    const tasksPerThread = this.#tasksPerThread;
    if (shared !== undefined && shared.users === 0) {
      // A lingering pool, that nobody holds: keep it if it has the size asked for, else replace it.
      const s = shared;
      clearTimeout(s.linger);
      s.linger = undefined;
      if (s.threads !== threads || s.tasksPerThread !== tasksPerThread) {
        shared = undefined;
        s.pool.destroy().catch(() => {});
      }
    }
    if (shared === undefined) {
      const pool = new Piscina({
        filename: kEntry,
        minThreads: threads,
        maxThreads: threads,
        concurrentTasksPerWorker: tasksPerThread,
        loadBalancer: placement(tasksPerThread),
        // 'sync' would park a worker in Atomics.wait between tasks, freezing its sockets and ports.
        atomics: 'disabled',
        idleTimeout: 2 ** 31 - 1,
      });
      shared = { pool, threads, tasksPerThread, capacity: threads * tasksPerThread, active: 0, users: 0, linger: undefined };
    }
    if (!this.#held) {
      this.#held = true;
      shared.users++;
    }
    return shared;
  }
}

/** How many nodes hold the shared pool now (0: nobody; an unheld pool may still linger a few seconds). For tests. */
export function poolHolders(): number {
  return shared?.users ?? 0;
}
