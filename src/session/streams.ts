/**
 * The two halves of a stream with credit-based flow control, thread-neutral like the session that
 * uses them: an `Inbox` is the receiving end (an async iterator that grants the sender more credit
 * as its consumer takes items), an `Outflow` the sending end's credit (a producer is pulled only
 * while it has some). A sender never has more than `window` items unread at the receiver, so a
 * slow consumer pauses the producer and memory stays bounded on both ends and in between.
 */
import { RpcError } from '../errors.js';

/** Items a receiver lets the sender have in flight, unless the caller says otherwise. */
export const kDefaultWindow = 32;

export interface InboxOptions {
  /** Credit granted when the stream opened: the most items that may arrive unread. */
  window: number;
  /** Sends `n` more credit to the sender. */
  grant(n: number): void;
  /** The consumer stopped early (`return()`, `throw()`, or `break` in `for await`). */
  onReturn(): void;
}

type Waiter<T> = { resolve(r: IteratorResult<T>): void; reject(err: unknown): void };

/**
 * The receiving end of a stream: pushes come from the session as items arrive, `next()` from the
 * consumer. Items already received are delivered before a peer's error; a local cancel drops them.
 */
export class Inbox<T = unknown> implements AsyncIterableIterator<T> {
  readonly #options: InboxOptions;
  readonly #items: T[] = [];
  #head = 0;
  #waiter: Waiter<T> | undefined;
  /** Items the sender may still send without more credit. */
  #allowed: number;
  /** Items taken since credit was last granted. */
  #taken = 0;
  #ended = false;
  #error: RpcError | undefined;
  /** The consumer is done with the stream (it ended, failed, or was returned). */
  #closed = false;

  constructor(options: InboxOptions) {
    this.#options = options;
    this.#allowed = options.window;
  }

  /** Items received and not yet taken: never more than the window. */
  get buffered(): number {
    return this.#items.length - this.#head;
  }

  /** True once the stream can deliver nothing more than what it holds. */
  get finished(): boolean {
    return this.#ended || this.#error !== undefined || this.#closed;
  }

  /** An item from the sender. False when it sent beyond its credit (the caller then fails the stream). */
  push(item: T): boolean {
    if (this.finished) return true;
    if (--this.#allowed < 0) return false;
    const w = this.#waiter;
    if (w !== undefined) {
      this.#waiter = undefined;
      this.#took();
      w.resolve({ value: item, done: false });
      return true;
    }
    this.#items.push(item);
    return true;
  }

  /** The sender finished; the consumer gets what is queued, then `done`. */
  end(): void {
    if (this.finished) return;
    this.#ended = true;
    if (this.buffered === 0) this.#settleWaiter();
  }

  /**
   * The stream failed. `afterQueued`: deliver what was received first (a peer's error after its
   * items); otherwise drop it and fail at once (a cancel, a deadline, a closed connection).
   */
  fail(err: RpcError, afterQueued: boolean): void {
    if (this.finished) return;
    this.#error = err;
    if (!afterQueued) this.#drop();
    if (this.buffered === 0) this.#settleWaiter();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.buffered > 0) {
      const value = this.#items[this.#head];
      this.#items[this.#head++] = undefined as T;
      if (this.#head === this.#items.length) {
        this.#items.length = 0;
        this.#head = 0;
      }
      this.#took();
      return Promise.resolve({ value, done: false });
    }
    if (this.#error !== undefined) {
      const err = this.#error;
      this.#closed = true;
      return Promise.reject(err);
    }
    if (this.#ended || this.#closed) {
      this.#closed = true;
      return Promise.resolve({ value: undefined, done: true });
    }
    if (this.#waiter !== undefined) return Promise.reject(new RpcError('INVALID_ARGUMENT', 'next() called again before the previous next() settled'));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Stops the stream early: the sender is told to stop, what is queued is dropped. */
  return(value?: unknown): Promise<IteratorResult<T>> {
    this.#stop();
    return Promise.resolve({ value: value as T, done: true });
  }

  /** Stops the stream early, like `return()`, and rejects with `err`. */
  throw(err?: unknown): Promise<IteratorResult<T>> {
    this.#stop();
    return Promise.reject(err);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  #stop(): void {
    if (this.#closed) return;
    const wasOpen = !this.#ended && this.#error === undefined;
    this.#closed = true;
    this.#drop();
    this.#settleWaiter();
    if (wasOpen) this.#options.onReturn();
  }

  #drop(): void {
    this.#items.length = 0;
    this.#head = 0;
  }

  /** One item went to the consumer: once half the window is taken, hand that much credit back. */
  #took(): void {
    if (this.finished) return;
    const half = Math.max(1, this.#options.window >>> 1);
    if (++this.#taken >= half) {
      const n = this.#taken;
      this.#taken = 0;
      this.#allowed += n;
      this.#options.grant(n);
    }
  }

  #settleWaiter(): void {
    const w = this.#waiter;
    if (w === undefined) return;
    this.#waiter = undefined;
    if (this.#error !== undefined) {
      this.#closed = true;
      w.reject(this.#error);
    } else {
      w.resolve({ value: undefined, done: true });
    }
  }
}

/** The sending end's credit: how many items it may still send, and whether the receiver stopped it. */
export class Outflow {
  #credit: number;
  #stopped = false;
  #wake: (() => void) | undefined;

  constructor(credit: number) {
    this.#credit = credit;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Credit from the receiver; 0 means "stop, I read no more". */
  add(n: number): void {
    if (n === 0) {
      this.stop();
      return;
    }
    this.#credit += n;
    this.#wakeUp();
  }

  stop(): void {
    this.#stopped = true;
    this.#wakeUp();
  }

  /** Resolves true once one item may be sent (and takes its credit), false once stopped. */
  async take(): Promise<boolean> {
    while (this.#credit === 0 && !this.#stopped) await new Promise<void>((resolve) => (this.#wake = resolve));
    if (this.#stopped) return false;
    this.#credit--;
    return true;
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/**
 * Pulls `source` while `flow` has credit and hands each item to `send` (awaiting it when the
 * carrier is full). Resolves 'done' when the source ended, 'stopped' when the receiver or a cancel
 * stopped it (the source is then `return()`ed, so a generator's `finally` runs); rejects with what
 * the source threw.
 */
export async function pump(source: AsyncIterable<unknown>, flow: Outflow, send: (item: unknown) => void | Promise<void>): Promise<'done' | 'stopped'> {
  const it = source[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      if (!(await flow.take())) return 'stopped';
      let r: IteratorResult<unknown>;
      try {
        r = await it.next();
      } catch (err) {
        finished = true; // a source that threw is finished; return() would not run its finally again
        throw err;
      }
      if (r.done) {
        finished = true;
        return 'done';
      }
      if (flow.stopped) return 'stopped';
      // An item that cannot be sent (the codec refuses it) ends the stream; the source is return()ed below.
      const queued = send(r.value);
      if (queued !== undefined) await queued;
    }
  } finally {
    if (!finished) {
      try {
        await it.return?.();
      } catch {
        // the source's own cleanup failed: nobody is left to tell
      }
    }
  }
}

/** Never throws: a value whose reading throws (a hostile Proxy, a getter) is not a stream, and whoever encodes it next says why. */
export function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  if (value === null || typeof value !== 'object') return false;
  try {
    return typeof (value as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
  } catch {
    return false;
  }
}
