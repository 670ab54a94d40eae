/**
 * The calls of one session by id: ours in flight, and the peer's being served.
 *
 * Not a Map, for the garbage collector's sake. Ids come in sequence and calls come and go all the
 * time; a Map under that churn rebuilds its hash table every few dozen calls, and a discarded
 * table that V8 had already moved to the old generation still points at the calls it held when it
 * was replaced. Each scavenge takes those pointers as roots (the old-to-new remembered set), so
 * the dead tables keep their calls alive, and with each call its promise, its resolvers and its
 * result: measured with 64 calls in flight, 16% of the main thread's young objects survived every
 * scavenge and ~2.5 MB were promoted each time, to be freed only by mark-compacts.
 *
 * Here an id lives in slot `id & mask` of two arrays that are replaced only when the table grows
 * or shrinks. An id whose slot is taken (a call that has been in flight for a whole lap of ids,
 * or a peer that picks colliding ids) goes to a Map beside them, which stays empty otherwise.
 */

const kMinCapacity = 64;
/** A table shrinks once it has been nearly empty for this many laps of its size (see delete). */
const kShrinkLaps = 2;

export class IdTable<V> {
  /** The id each slot holds (-1: free). Float64: ids go beyond the small-integer range. */
  #ids: Float64Array;
  #values: Array<V | undefined>;
  #mask: number;
  #size = 0;
  #overflow: Map<number, V> | undefined;
  /** Deletes that found the table nearly empty since it last changed size. */
  #quiet = 0;

  constructor() {
    this.#ids = new Float64Array(kMinCapacity).fill(-1);
    this.#values = new Array<V | undefined>(kMinCapacity).fill(undefined);
    this.#mask = kMinCapacity - 1;
  }

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  get(id: number): V | undefined {
    const i = id & this.#mask;
    if (this.#ids[i] === id) return this.#values[i];
    return this.#overflow?.get(id);
  }

  has(id: number): boolean {
    return this.get(id) !== undefined;
  }

  /** Adds or replaces the entry of `id`; `value` must not be undefined. */
  set(id: number, value: V): void {
    const i = id & this.#mask;
    if (this.#ids[i] === id) {
      this.#values[i] = value;
      return;
    }
    if (this.#overflow?.has(id)) {
      this.#overflow.set(id, value);
      return;
    }
    if (this.#size >= (this.#mask + 1) >> 1) this.#resize((this.#mask + 1) * 2);
    this.#place(id, value);
    this.#size++;
  }

  /** Removes the entry of `id`; returns its value (undefined when there was none). */
  delete(id: number): V | undefined {
    const i = id & this.#mask;
    let value: V | undefined;
    if (this.#ids[i] === id) {
      value = this.#values[i];
      this.#ids[i] = -1;
      this.#values[i] = undefined;
    } else {
      const overflow = this.#overflow;
      if (overflow === undefined) return undefined;
      value = overflow.get(id);
      if (value === undefined) return undefined;
      overflow.delete(id);
      if (overflow.size === 0) this.#overflow = undefined;
    }
    this.#size--;
    // Shrink a table that a burst left large, but only after it has seen some laps of ids since it
    // last changed size: a server's table empties after every batch of requests and fills again
    // with the next, and shrinking it each time made it grow each time too.
    const capacity = this.#mask + 1;
    if (capacity > kMinCapacity && this.#size < capacity >> 3 && ++this.#quiet > capacity * kShrinkLaps) this.#resize(capacity >> 1);
    return value;
  }

  /** Every entry, in no particular order; a copy, so the table may change while it is used. */
  entries(): Array<[number, V]> {
    const out: Array<[number, V]> = [];
    const ids = this.#ids;
    const values = this.#values;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v !== undefined) out.push([ids[i], v]);
    }
    if (this.#overflow !== undefined) for (const e of this.#overflow) out.push(e);
    return out;
  }

  /** Every value, as entries() does. */
  values(): V[] {
    return this.entries().map((e) => e[1]);
  }

  clear(): void {
    this.#ids.fill(-1);
    this.#values.fill(undefined);
    this.#overflow = undefined;
    this.#size = 0;
    if (this.#mask + 1 > kMinCapacity) this.#resize(kMinCapacity);
  }

  #place(id: number, value: V): void {
    const i = id & this.#mask;
    if (this.#values[i] === undefined) {
      this.#ids[i] = id;
      this.#values[i] = value;
    } else {
      (this.#overflow ??= new Map()).set(id, value);
    }
  }

  #resize(capacity: number): void {
    const held = this.entries();
    this.#ids = new Float64Array(capacity).fill(-1);
    this.#values = new Array<V | undefined>(capacity).fill(undefined);
    this.#mask = capacity - 1;
    this.#overflow = undefined;
    this.#quiet = 0;
    for (const [id, value] of held) this.#place(id, value);
  }
}
