/**
 * A connection worker's awake window: after the peer's bytes arrive, the worker keeps its event
 * loop turning (one immediate per turn) for a while instead of sleeping in its poll for I/O, so
 * the next bytes, the peer's or the main thread's, are taken without a thread wake-up (its cost:
 * docs/PERFORMANCE.md). The socket-side counterpart of a ring reader's poll window
 * (IdleWindows.pollMicros); nothing is held meanwhile: timers and I/O run between turns.
 */
export class AwakeWindow {
  readonly #windowMs: number;
  #until = 0;
  #awake = false;
  #stopped = false;
  #turns = 0;

  /** `windowMicros` 0: never stays awake. */
  constructor(windowMicros: number) {
    this.#windowMs = windowMicros / 1000;
  }

  /** Something arrived: stay awake until the window after now has passed. */
  heard(): void {
    if (this.#windowMs <= 0 || this.#stopped) return;
    this.#until = performance.now() + this.#windowMs;
    if (this.#awake) return;
    this.#awake = true;
    setImmediate(this.#turn);
  }

  /** Ends the window for good (the task is closing). */
  stop(): void {
    this.#stopped = true;
  }

  /** Loop turns spent awake so far, for tests. */
  get turns(): number {
    return this.#turns;
  }

  readonly #turn = (): void => {
    this.#turns++;
    if (!this.#stopped && performance.now() < this.#until) setImmediate(this.#turn);
    else this.#awake = false;
  };
}
