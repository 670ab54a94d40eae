import type { TaskSpec } from '../bridge/control.js';

/**
 * A listener's count of the clients it serves, against its maxConnections: the total (word 0) and
 * this task's own share (word 1 + member) of an Int32Array. The tasks serving one address on
 * several threads share one in shared memory and take a place with compare-and-swap, so two
 * threads cannot both take the last one; a task serving alone has one of its own.
 */
export class ConnectionSlots {
  readonly #max: number;
  readonly #counts: Int32Array;
  /** This task's word in `#counts`. */
  readonly #mine: number;

  constructor(max: number, shared: TaskSpec['shared']) {
    this.#max = max;
    this.#counts = shared?.connections ?? new Int32Array(2);
    this.#mine = 1 + (shared?.member ?? 0);
    // Started in the place of a task whose thread died: its clients died with it, but it could
    // not give their places back. (If it died between taking a place and counting it as its own,
    // that one place stays taken: refusing one client too many, never admitting one.)
    const left = Atomics.exchange(this.#counts, this.#mine, 0);
    if (left !== 0) Atomics.sub(this.#counts, 0, left);
  }

  /** Takes a place; false when all are taken. */
  take(): boolean {
    const counts = this.#counts;
    for (;;) {
      const n = Atomics.load(counts, 0);
      if (n >= this.#max) return false;
      if (Atomics.compareExchange(counts, 0, n, n + 1) === n) {
        Atomics.add(counts, this.#mine, 1);
        return true;
      }
    }
  }

  /** Gives back a place taken by take(). */
  give(): void {
    Atomics.sub(this.#counts, this.#mine, 1);
    Atomics.sub(this.#counts, 0, 1);
  }
}
