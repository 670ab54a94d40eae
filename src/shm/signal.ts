// Apart from ./ring.ts, which re-exports it, so that ./native.ts can implement it without importing
// the ring (the ring imports ./weigh.ts, which imports ./native.ts): no import cycles.

/** How a side sleeps and wakes the other. Default: Atomics.waitAsync / Atomics.notify (same process). For cross-process rings: `futexSignal` (./native.ts). */
export interface RingSignal {
  /** Resolves when `view[index]` may no longer equal `expected`, or after timeoutMs (the ring passes Infinity: its watchdog is the safety net). Must never block the event loop. */
  wait(view: Int32Array, index: number, expected: number, timeoutMs: number): Promise<void>;
  /** Wakes the (single) waiter on `view[index]`, if any. */
  notify(view: Int32Array, index: number): void;
}
