/**
 * Single-producer / single-consumer ring of variable-size messages over a SharedArrayBuffer: the
 * fast path between the main thread and a connection worker (and, with a native futex as the
 * `RingSignal`, between processes). Layout and record format: ./layout.ts.
 *
 * Hot path rules: every view is made once per ring, a message that fits in one record (any that
 * fits in the ring) costs no allocation on the writer side and one subarray on the reader side,
 * each side publishes its position with one Atomics.store per record and wakes the other only
 * when it sleeps.
 */

import { RpcError } from '../errors.js';
import { bytesToFill } from '../bytes.js';
import { countCopied } from '../observe.js';
import { weighShared } from './weigh.js';
import { copyBytes } from './copy.js';
import {
  kCapacityIndex,
  kClosedIndex,
  kFirstHeaderBytes,
  kHeadIndex,
  kHeaderBytesIndex,
  kKindBits,
  kKindClose,
  kKindCont,
  kKindFirst,
  kKindMask,
  kKindPad,
  kKindWhole,
  kMagicIndex,
  kMaxRingCapacity,
  kMinRingCapacity,
  kReaderSleepingIndex,
  kRecordHeaderBytes,
  kRingHeaderBytes,
  kRingMagic,
  kRingVersion,
  kTailIndex,
  kVersionIndex,
  kWriterWaitingIndex,
  maxRecordBytes,
  maxWholeRecordBytes,
} from './layout.js';

export { kRingHeaderBytes } from './layout.js';
import type { RingSignal } from './signal.js';
export type { RingSignal } from './signal.js';

/**
 * No timeout on waits: the sleeping-flag handshake cannot lose a wake-up, and in Node every
 * Atomics.waitAsync with a finite timeout posts a delayed task that wakes the waiting thread's own
 * event loop once more (measured: one extra uv_async write and loop turn per call, several µs).
 */
const kWaitForever = Infinity;
/**
 * The safety net instead: while a side runs, one timer per side looks every second whether it is
 * parked although the word it waits on has moved (a wake-up lost to a bug, or a peer that died
 * between publishing and notifying) and then wakes it. Costs one timer tick a second, not one per wait.
 */
const kWatchdogMs = 1000;
/** `parkedFor` while not parked: odd, so never a position (positions are 8-aligned). */
const kNotParked = 1;
/**
 * Records the reader consumes before it yields to the event loop, so a flood cannot starve the
 * thread. Small enough that answers to the first calls of a burst leave (their handlers' promise
 * chains run at the yield) while the rest are still being read, so the two threads overlap instead
 * of taking turns: measured with 64 calls in flight to an isolate, 32 gave ~20% more calls/s than
 * 256, and 8 or 16 less again (a loop turn per few records).
 */
export const kBatchRecords = 32;
/** Copies this short are faster as a loop than through TypedArray#set's call overhead. */
const kShortCopy = 32;
const kTwo32 = 4294967296;

const kEmpty = new Uint8Array(0);
const kResolved: Promise<void> = Promise.resolve();

// lib ES2023 does not declare Atomics.waitAsync (ES2024), though Node 20 has it.
type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
const atomicsWithWaitAsync = Atomics as unknown as {
  waitAsync(view: Int32Array, index: number, value: number, timeoutMs?: number): WaitAsyncResult;
};

/** Same-process signal: Atomics.waitAsync parks a promise, not the thread. */
export const atomicsSignal: RingSignal = {
  wait(view, index, expected, timeoutMs) {
    const r = timeoutMs === Infinity ? atomicsWithWaitAsync.waitAsync(view, index, expected) : atomicsWithWaitAsync.waitAsync(view, index, expected, timeoutMs);
    return r.async ? (r.value as Promise<unknown> as Promise<void>) : kResolved;
  },
  notify(view, index) {
    Atomics.notify(view, index, 1);
  },
};

/** Allocates a SharedArrayBuffer holding an empty ring whose data area is `capacity` bytes (rounded up to a power of two, at least 4096). */
export function createRing(capacity: number): SharedArrayBuffer {
  if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > kMaxRingCapacity) {
    throw new RpcError('INVALID_ARGUMENT', `ring capacity must be an integer from 1 to ${kMaxRingCapacity}, got ${capacity}`);
  }
  let cap = kMinRingCapacity;
  while (cap < capacity) cap *= 2;
  const sab = new SharedArrayBuffer(kRingHeaderBytes + cap);
  const ctl = new Int32Array(sab, 0, kRingHeaderBytes >> 2);
  ctl[kMagicIndex] = kRingMagic;
  ctl[kVersionIndex] = kRingVersion;
  ctl[kCapacityIndex] = cap;
  ctl[kHeaderBytesIndex] = kRingHeaderBytes;
  return sab;
}

/**
 * Lays an empty ring over `sab`, whose bytes must be zero (e.g. a freshly created shared-memory
 * segment) and `kRingHeaderBytes + capacity` long with `capacity` a power of two >= 4096.
 */
export function initRing(sab: SharedArrayBuffer): void {
  const cap = sab.byteLength - kRingHeaderBytes;
  if (cap < kMinRingCapacity || cap > kMaxRingCapacity || (cap & (cap - 1)) !== 0) {
    throw new RpcError('INVALID_ARGUMENT', `a ring needs ${kRingHeaderBytes} + a power-of-two capacity >= ${kMinRingCapacity} bytes, got ${sab.byteLength}`);
  }
  const ctl = new Int32Array(sab, 0, kRingHeaderBytes >> 2);
  ctl[kVersionIndex] = kRingVersion;
  ctl[kCapacityIndex] = cap;
  ctl[kHeaderBytesIndex] = kRingHeaderBytes;
  // The magic goes last: a peer that maps the segment early sees no ring until it is complete.
  Atomics.store(ctl, kMagicIndex, kRingMagic);
}

/** Checks that `sab` holds a ring made by createRing (or a peer speaking the same layout); returns its capacity. */
function ringCapacity(sab: SharedArrayBuffer): number {
  if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < kRingHeaderBytes + kMinRingCapacity) {
    throw new RpcError('INVALID_ARGUMENT', 'not a ring: expected a SharedArrayBuffer from createRing()');
  }
  const ctl = new Int32Array(sab, 0, kRingHeaderBytes >> 2);
  const cap = Atomics.load(ctl, kCapacityIndex);
  if (
    Atomics.load(ctl, kMagicIndex) !== kRingMagic ||
    Atomics.load(ctl, kVersionIndex) !== kRingVersion ||
    Atomics.load(ctl, kHeaderBytesIndex) !== kRingHeaderBytes ||
    cap < kMinRingCapacity ||
    (cap & (cap - 1)) !== 0 ||
    sab.byteLength !== kRingHeaderBytes + cap
  ) {
    throw new RpcError('INVALID_ARGUMENT', 'not a ring: bad magic, version or capacity in its header');
  }
  return cap;
}

/**
 * The watchdog timer of one side. Ref'd, it also keeps the thread alive while that side has work
 * pending: a parked waitAsync alone does not (a worker would exit while its reader sleeps).
 */
function watchdog(check: () => void, ref: boolean): ReturnType<typeof setInterval> {
  const timer = setInterval(check, kWatchdogMs);
  if (!ref) timer.unref();
  return timer;
}

function copyInto(out: Uint8Array, dst: number, src: Uint8Array, from: number, n: number): void {
  countCopied(n);
  if (n <= kShortCopy) {
    for (let i = 0; i < n; i++) out[dst + i] = src[from + i];
  } else {
    // A payload behind odd-length headers lands misaligned: copyBytes keeps that at memcpy speed.
    copyBytes(out, dst, src, from, n);
  }
}

/** A message (or its unwritten rest) waiting for ring space. `data === null` marks the close record. */
interface Pending {
  tag: number;
  data: Uint8Array | null;
  /** Bytes of `data` already in the ring. */
  pos: number;
  /** True once the first fragment is in the ring; the rest goes out as continuations. */
  started: boolean;
}
const kDone: Pending = { tag: 0, data: kEmpty, pos: 0, started: false };
const kCloseMarker: Pending = { tag: 0, data: null, pos: 0, started: false };

/** The producing side of a ring. Exactly one RingWriter may exist per ring, in one thread. */
export class RingWriter {
  private readonly ctl: Int32Array;
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly capacity: number;
  private readonly mask: number;
  private readonly maxWhole: number;
  private readonly maxFirst: number;
  private readonly maxCont: number;
  private readonly signal: RingSignal;
  /** Our write position; only this object writes the tail word. */
  private tail: number;
  /** Last head we loaded. Head only moves forward, so the free space it implies is a lower bound: reload only when short. */
  private headCache: number;
  /** Progress out-params of put(), fields so the hot path returns a boolean and allocates nothing. */
  private putPos = 0;
  private putStarted = false;
  /** Free bytes the record put() stopped at needs (its pad included; may exceed the capacity). */
  private putNeed = 0;
  private queue: Pending[] = [];
  private queueHead = 0;
  private queued = 0;
  private pumping = false;
  /** The head position the parked pump waits for, for the watchdog; kNotParked while awake. */
  private parkedFor = kNotParked;
  private closing = false;
  private destroyed = false;
  private flushWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  /** holdWake() is in force: publish() leaves the reader's wake-up to releaseWake(). */
  private wakeHeld = false;
  /** A record published while held may owe the reader a wake-up. */
  private wakeOwed = false;

  constructor(sab: SharedArrayBuffer, options: { signal?: RingSignal } = {}) {
    const cap = ringCapacity(sab);
    weighShared(sab);
    this.ctl = new Int32Array(sab, 0, kRingHeaderBytes >> 2);
    this.words = new Int32Array(sab, kRingHeaderBytes, cap >> 2);
    this.bytes = new Uint8Array(sab, kRingHeaderBytes, cap);
    this.capacity = cap;
    this.mask = cap - 1;
    const maxRecord = maxRecordBytes(cap);
    this.maxWhole = maxWholeRecordBytes(cap) - kRecordHeaderBytes;
    this.maxFirst = maxRecord - kFirstHeaderBytes;
    this.maxCont = maxRecord - kRecordHeaderBytes;
    this.signal = options.signal ?? atomicsSignal;
    this.tail = Atomics.load(this.ctl, kTailIndex);
    this.headCache = Atomics.load(this.ctl, kHeadIndex);
    if (Atomics.load(this.ctl, kClosedIndex) !== 0) this.closing = true;
  }

  /**
   * Appends one message: a u32 `tag` and its bytes (copied; the caller keeps ownership).
   * Returns true when written now; false when queued behind earlier messages until the reader
   * frees space. Throws RpcError('CLOSED') after close().
   */
  write(tag: number, bytes: Uint8Array): boolean {
    return this.write2(tag, bytes, kEmpty);
  }

  /** Same as write(), the message being `head` followed by `body` (avoids a concat). */
  write2(tag: number, head: Uint8Array, body: Uint8Array): boolean {
    if (this.closing) throw new RpcError('CLOSED', 'the ring writer is closed');
    if (tag >>> 0 !== tag) throw new RpcError('INVALID_ARGUMENT', `ring tag must be a u32, got ${tag}`);
    const total = head.length + body.length;
    if (this.queueHead === this.queue.length) {
      if (this.put(tag, head, body, 0, total, false)) return true;
      this.enqueue(tag, head, body, this.putPos, this.putStarted);
    } else {
      // Something is already waiting: writing now would overtake it.
      this.enqueue(tag, head, body, 0, false);
    }
    return false;
  }

  /**
   * Holds wake-ups until releaseWake(): what is written meanwhile is published at once, but a
   * sleeping reader is woken once, at the release, instead of at the first record. For a thread
   * that writes from many callbacks of one event-loop turn (a connection worker reading many
   * sockets): the reader then wakes once per turn and finds the whole turn's records, where it
   * used to wake at the first, drain a few, sleep, and be woken again.
   */
  holdWake(): void {
    this.wakeHeld = true;
  }

  /** Ends holdWake(), waking the reader if something written meanwhile owes it a wake-up. */
  releaseWake(): void {
    this.wakeHeld = false;
    if (!this.wakeOwed) return;
    this.wakeOwed = false;
    this.wakeReader(this.tail);
  }

  /**
   * holdWake() until the end of this event-loop turn (a setImmediate releases it), for a writer
   * called from many callbacks of one turn; a no-op while a hold is in force already.
   */
  holdWakeForTurn(): void {
    if (this.wakeHeld) return;
    this.wakeHeld = true;
    setImmediate(this.releaseWakeBound);
  }

  private readonly releaseWakeBound = (): void => this.releaseWake();

  /** Resolves when every queued message has been written into the ring (rejects if destroy() dropped them). */
  flushed(): Promise<void> {
    if (this.queueHead === this.queue.length) return kResolved;
    return new Promise((resolve, reject) => this.flushWaiters.push({ resolve, reject }));
  }

  /** Bytes queued in memory waiting for ring space. */
  get queuedBytes(): number {
    return this.queued;
  }

  /** Marks the ring closed (after the already-queued messages are written) and wakes the reader. Idempotent. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    if (this.queueHead === this.queue.length && this.putClose()) return;
    this.queue.push(kCloseMarker);
    if (!this.pumping) void this.pump();
  }

  /**
   * Gives up: drops every queued message, rejects flushed() waiters with `reason` (default
   * RpcError('CLOSED')) and refuses further writes. Does not write a close record; use it when
   * the reader is gone. What is already in the ring stays there.
   */
  destroy(reason?: Error): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.closing = true;
    this.queue = [];
    this.queueHead = 0;
    this.queued = 0;
    const err = reason ?? new RpcError('CLOSED', 'the ring writer was destroyed with messages queued');
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    for (const w of waiters) w.reject(err);
    // Wake our own pump if it is parked on the head word; only this side waits there.
    if (this.pumping) this.signal.notify(this.ctl, kHeadIndex);
  }

  /**
   * Writes what of the queue fits now, synchronously; true when the queue is empty. The pump
   * calls it on every wake; tests and callers that want progress without the event loop may too.
   */
  flushQueue(): boolean {
    const queue = this.queue;
    while (this.queueHead < queue.length) {
      const p = queue[this.queueHead];
      if (p.data === null) {
        if (!this.putClose()) return false;
      } else {
        const done = this.put(p.tag, p.data, kEmpty, p.pos, p.data.length, p.started);
        this.queued -= this.putPos - p.pos;
        p.pos = this.putPos;
        p.started = this.putStarted;
        if (!done) return false;
      }
      // Drop the reference now: under steady backpressure the queue may never be empty to reset.
      queue[this.queueHead++] = kDone;
      if (this.queueHead >= 1024 && this.queueHead * 2 >= queue.length) {
        queue.splice(0, this.queueHead);
        this.queueHead = 0;
      }
    }
    queue.length = 0;
    this.queueHead = 0;
    if (this.flushWaiters.length > 0) {
      const waiters = this.flushWaiters;
      this.flushWaiters = [];
      for (const w of waiters) w.resolve();
    }
    return true;
  }

  private enqueue(tag: number, head: Uint8Array, body: Uint8Array, pos: number, started: boolean): void {
    const total = head.length + body.length;
    // Copy only what is not yet in the ring: the caller may reuse its buffers once we return.
    const data = bytesToFill(total - pos);
    countCopied(data.length);
    const headLen = head.length;
    if (pos < headLen) {
      data.set(pos === 0 ? head : head.subarray(pos), 0);
      data.set(body, headLen - pos);
    } else {
      data.set(pos === headLen ? body : body.subarray(pos - headLen), 0);
    }
    this.queue.push({ tag, data, pos: 0, started });
    this.queued += data.length;
    if (!this.pumping) void this.pump();
  }

  /** Waits for space and writes the queue, in order, until it is empty. At most one runs. */
  private async pump(): Promise<void> {
    this.pumping = true;
    const ctl = this.ctl;
    const alive = watchdog(() => {
      if (this.parkedFor !== kNotParked && ((Atomics.load(ctl, kHeadIndex) - this.parkedFor) | 0) >= 0) this.signal.notify(ctl, kHeadIndex);
    }, true);
    try {
      while (!this.flushQueue() && !this.destroyed) {
        // Ask to be woken once half the ring is free (or the next record's room, if larger), not
        // at the first record the reader frees: a message larger than the ring then streams in
        // half-ring strides, a wake-up each, instead of a wake-up per fragment on both sides.
        const half = this.capacity >>> 1;
        // At most the capacity: a pad and a record larger than that need an empty ring first.
        const want = this.putNeed <= half ? half : this.putNeed < this.capacity ? this.putNeed : this.capacity;
        const target = (this.tail + want - this.capacity) | 0;
        // Announce "waiting for head = target" (target | 1: positions are 8-aligned, so never 0).
        // Dekker with the reader, which stores head and then loads this word: all accesses are
        // seq-cst, so either our load below sees a head at the target (we retry at once), or its
        // load comes after our store and it notifies once its head reaches the target. A notify
        // landing before wait() parks is not lost: wait() returns at once when the head word no
        // longer equals `seen`.
        Atomics.store(ctl, kWriterWaitingIndex, target | 1);
        const seen = Atomics.load(ctl, kHeadIndex);
        if (((seen - target) | 0) < 0) {
          this.parkedFor = target;
          await this.signal.wait(ctl, kHeadIndex, seen, kWaitForever);
          this.parkedFor = kNotParked;
        }
        Atomics.store(ctl, kWriterWaitingIndex, 0);
      }
    } finally {
      clearInterval(alive);
      this.pumping = false;
    }
  }

  /**
   * Writes records for bytes [pos, total) of `a`‖`b` while they fit, then publishes tail once.
   * Returns true when the message is complete; progress goes to putPos / putStarted.
   */
  private put(tag: number, a: Uint8Array, b: Uint8Array, pos: number, total: number, started: boolean): boolean {
    const words = this.words;
    const cap = this.capacity;
    let tail = this.tail;
    let done = false;
    for (;;) {
      const remaining = total - pos;
      let kind: number;
      let hdr: number;
      let len: number;
      if (started) {
        kind = kKindCont;
        hdr = kRecordHeaderBytes;
        len = remaining < this.maxCont ? remaining : this.maxCont;
      } else if (remaining <= this.maxWhole) {
        kind = kKindWhole;
        hdr = kRecordHeaderBytes;
        len = remaining;
      } else {
        kind = kKindFirst;
        hdr = kFirstHeaderBytes;
        len = this.maxFirst;
      }
      const rec = (hdr + len + 7) & ~7;
      let off = tail & this.mask;
      let toEnd = cap - off;
      // A record never straddles the end: if it does not fit before it, a pad fills the rest.
      let need = rec <= toEnd ? rec : toEnd + rec;
      if (need > cap - ((tail - this.headCache) | 0)) {
        this.headCache = Atomics.load(this.ctl, kHeadIndex);
        const free = cap - ((tail - this.headCache) | 0);
        if (need > free) {
          // A whole record larger than the space behind the pad can fit only once the reader has
          // passed the pad: write the pad alone now (if it fits) and wait for that.
          this.putNeed = need;
          if (rec <= toEnd || rec <= cap - toEnd || toEnd > free) break;
          words[off >> 2] = (toEnd << kKindBits) | kKindPad;
          words[(off >> 2) + 1] = 0;
          tail = (tail + toEnd) | 0;
          off = 0;
          toEnd = cap;
          need = this.putNeed = rec;
          if (need > cap - ((tail - this.headCache) | 0)) break;
        }
      }
      if (rec > toEnd) {
        words[off >> 2] = (toEnd << kKindBits) | kKindPad;
        words[(off >> 2) + 1] = 0;
        tail = (tail + toEnd) | 0;
        off = 0;
      }
      const w = off >> 2;
      words[w] = (len << kKindBits) | kind;
      words[w + 1] = kind === kKindCont ? 0 : tag;
      if (kind === kKindFirst) {
        words[w + 2] = total % kTwo32;
        words[w + 3] = Math.floor(total / kTwo32);
      }
      if (len > 0) {
        const dst = off + hdr;
        const aLen = a.length;
        if (pos >= aLen) {
          copyInto(this.bytes, dst, b, pos - aLen, len);
        } else if (pos + len <= aLen) {
          copyInto(this.bytes, dst, a, pos, len);
        } else {
          const n = aLen - pos;
          copyInto(this.bytes, dst, a, pos, n);
          copyInto(this.bytes, dst + n, b, 0, len - n);
        }
      }
      tail = (tail + rec) | 0;
      pos += len;
      started = true;
      if (pos === total) {
        done = true;
        break;
      }
    }
    this.putPos = pos;
    this.putStarted = started;
    if (tail !== this.tail) this.publish(tail);
    return done;
  }

  /** Writes the close record if 8 bytes fit; then raises the closed flag for observers. */
  private putClose(): boolean {
    const cap = this.capacity;
    const tail = this.tail;
    // Offsets are 8-aligned, so at least 8 bytes remain before the end: never a pad here.
    if (kRecordHeaderBytes > cap - ((tail - this.headCache) | 0)) {
      this.headCache = Atomics.load(this.ctl, kHeadIndex);
      this.putNeed = kRecordHeaderBytes;
      if (kRecordHeaderBytes > cap - ((tail - this.headCache) | 0)) return false;
    }
    const w = (tail & this.mask) >> 2;
    this.words[w] = kKindClose;
    this.words[w + 1] = 0;
    this.publish((tail + kRecordHeaderBytes) | 0);
    Atomics.store(this.ctl, kClosedIndex, 1);
    return true;
  }

  private publish(tail: number): void {
    const ctl = this.ctl;
    this.tail = tail;
    // Release: the record bytes written above with plain stores are visible to a reader whose
    // Atomics.load of tail sees this value (seq-cst store / load synchronise).
    Atomics.store(ctl, kTailIndex, tail);
    if (this.wakeHeld) {
      // The check below, made later against the tail as it is then, is as sound: it still
      // follows our store of the tail.
      this.wakeOwed = true;
      return;
    }
    this.wakeReader(tail);
  }

  private wakeReader(tail: number): void {
    const ctl = this.ctl;
    // Dekker with the reader's "store sleeping; load tail" (RingReader#loop). The word holds the
    // head the reader saw before sleeping, | 1. Equal to our tail | 1: it has consumed everything,
    // this very record included, and sleeps for the *next* one, so neither notify nor clear it
    // (clearing there would silence the notify the next write owes it: a lost wake-up). Any other
    // non-zero value: it sleeps behind our tail; the CAS makes one burst cost one notify.
    const sleeping = Atomics.load(ctl, kReaderSleepingIndex);
    if (sleeping !== 0 && sleeping !== (tail | 1) && Atomics.compareExchange(ctl, kReaderSleepingIndex, sleeping, 0) === sleeping) {
      this.signal.notify(ctl, kTailIndex);
    }
  }
}

export interface RingHandlers {
  /**
   * One message. `owned` false: `bytes` is a view into the ring (a message that fits in the ring
   * comes as one record), valid only during this call; copy to keep it. `owned` true: a fresh
   * array the reader reassembled from fragments, the handler's to keep. Throwing stops the reader
   * (see onError).
   */
  onMessage(tag: number, bytes: Uint8Array, owned: boolean): void;
  /** After each drained batch (lets the consumer flush a corked socket once per batch). */
  onBatch?(): void;
  /** The writer closed the ring and every message has been delivered. */
  onClose?(): void;
  /** The read loop stopped on an error: a handler threw, or the ring held a corrupt record (RpcError 'PROTOCOL'). Without it the error is thrown as uncaught. */
  onError?(err: unknown): void;
}

export interface RingReaderOptions {
  signal?: RingSignal;
  /**
   * After the last message, keep looking once per turn of this thread's event loop for this many
   * µs before sleeping (default 0). The loop keeps running (timers, I/O), so unlike spinMicros it
   * never holds the thread; it costs at most this much CPU per burst and saves the sleep and the
   * wake-up when the next message comes within the window (a reply to a call just made, say).
   */
  pollMicros?: number;
  /** Opt-in busy-poll, in µs, before sleeping; default 0. Spinning steals a core from the peer on small machines, and holds this thread's event loop. */
  spinMicros?: number;
  /** Whether a started reader keeps its thread alive until it stops (like an open socket); default true. */
  keepAlive?: boolean;
}

/** The consuming side of a ring. Exactly one RingReader may exist per ring, in one thread. */
export class RingReader {
  private readonly ctl: Int32Array;
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly capacity: number;
  private readonly mask: number;
  private readonly maxWhole: number;
  private readonly maxCont: number;
  private readonly signal: RingSignal;
  private readonly handlers: RingHandlers;
  private spinMicros: number;
  private pollMs: number;
  private readonly keepAlive: boolean;
  /**
   * performance.now() until which the loop looks once per turn instead of sleeping: pollMicros
   * after the last drain that delivered something, or later when expectWithin() says so.
   */
  private pollUntil = 0;
  /** Our read position; only this object writes the head word. */
  private head: number;
  /** Last tail we loaded; records up to it are complete, so reload only when we catch up. */
  private tailCache: number;
  /** Reassembly of a fragmented message. */
  private asm: Uint8Array | null = null;
  private asmPos = 0;
  private asmTag = 0;
  private running = false;
  private paused = false;
  private stopped = false;
  private sleeping = false;
  /** expectWithin() has woken the sleeping loop already. */
  private wakeSent = false;
  private resumeWake: (() => void) | null = null;
  #sleeps = 0;
  #spins = 0;

  constructor(sab: SharedArrayBuffer, handlers: RingHandlers, options: RingReaderOptions = {}) {
    const cap = ringCapacity(sab);
    weighShared(sab);
    this.ctl = new Int32Array(sab, 0, kRingHeaderBytes >> 2);
    this.words = new Int32Array(sab, kRingHeaderBytes, cap >> 2);
    this.bytes = new Uint8Array(sab, kRingHeaderBytes, cap);
    this.capacity = cap;
    this.mask = cap - 1;
    this.maxWhole = maxWholeRecordBytes(cap) - kRecordHeaderBytes;
    this.maxCont = maxRecordBytes(cap) - kRecordHeaderBytes;
    this.signal = options.signal ?? atomicsSignal;
    this.handlers = handlers;
    this.spinMicros = options.spinMicros ?? 0;
    this.pollMs = (options.pollMicros ?? 0) / 1000;
    this.keepAlive = options.keepAlive ?? true;
    this.head = Atomics.load(this.ctl, kHeadIndex);
    this.tailCache = this.head;
  }

  /** How many times the read loop has gone to sleep (waited on the signal): what the idle strategy saves. */
  get sleeps(): number {
    return this.#sleeps;
  }

  /** Whether the read loop runs: after stop(), true until its pending wait (if any) has settled. */
  get looping(): boolean {
    return this.running;
  }

  /** False while a fragmented message is half read: a reader that takes over the ring from this one must start where this one stopped at a message boundary. */
  get atMessageBoundary(): boolean {
    return this.asm === null;
  }

  /** How many times the read loop has busy-polled (spinMicros) before sleeping. */
  get spins(): number {
    return this.#spins;
  }

  /** The spinMicros and pollMicros the loop uses now. */
  get windows(): { spinMicros: number; pollMicros: number } {
    return { spinMicros: this.spinMicros, pollMicros: this.pollMs * 1000 };
  }

  /** Changes spinMicros and pollMicros (see RingReaderOptions); they apply from the loop's next look. */
  setWindows(options: { spinMicros: number; pollMicros: number }): void {
    this.spinMicros = options.spinMicros;
    this.pollMs = options.pollMicros / 1000;
  }

  /** Starts the async read loop; never blocks the event loop (waits with RingSignal#wait). */
  start(): void {
    if (this.running || this.stopped) return;
    this.running = true;
    this.loop().catch((err: unknown) => {
      this.stopped = true;
      if (this.handlers.onError) this.handlers.onError(err);
      else
        process.nextTick(() => {
          throw err;
        });
    });
  }

  /** Stops delivering (e.g. downstream is full); the writer then sees backpressure once the ring fills. Takes effect before the next message, also from inside onMessage. */
  pause(): void {
    this.paused = true;
  }

  /** Resumes delivering after pause(). */
  resume(): void {
    this.paused = false;
    const wake = this.resumeWake;
    if (wake !== null) {
      this.resumeWake = null;
      wake();
    }
  }

  /**
   * The writer is expected to write within `ms` (its thread was just handed something to answer):
   * until then the loop looks once per turn of the event loop instead of sleeping, and a loop
   * asleep now is woken to do so. A message that comes meanwhile costs neither side a wake-up:
   * the writer sees nobody asleep, so it does not notify.
   */
  expectWithin(ms: number): void {
    this.pollUntil = Math.max(this.pollUntil, performance.now() + ms);
    // Only this side waits on the tail word, so this notify can only wake our own parked loop.
    // Once: a ring shared by many connections hears from all of them before the loop wakes.
    if (this.sleeping && !this.wakeSent) {
      this.wakeSent = true;
      this.signal.notify(this.ctl, kTailIndex);
    }
  }

  /** Stops the loop for good (does not close the writer side; undelivered records stay in the ring). */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.resume();
    // Only this side waits on the tail word, so this notify can only wake our own parked loop.
    if (this.sleeping) this.signal.notify(this.ctl, kTailIndex);
  }

  /**
   * Delivers the records available now, up to `limit`, synchronously, then calls onBatch (if any
   * message was delivered) and onClose (if the close record was reached). Returns the number of
   * records consumed. The read loop calls it; so may a test, on a reader that was never started.
   */
  drain(limit: number = kBatchRecords): number {
    const ctl = this.ctl;
    const words = this.words;
    const bytes = this.bytes;
    const handlers = this.handlers;
    let head = this.head;
    let tail = this.tailCache;
    let next = head;
    let n = 0;
    let messages = 0;
    let closed = false;
    try {
      while (n < limit && !this.paused && !this.stopped) {
        if (head === tail) {
          // Acquire: the records up to this tail were fully written before the writer stored it.
          tail = this.tailCache = Atomics.load(ctl, kTailIndex);
          if (head === tail) break;
        }
        const off = head & this.mask;
        const w = off >> 2;
        const word0 = words[w];
        const kind = word0 & kKindMask;
        const len = word0 >>> kKindBits;
        n++;
        if (kind === kKindWhole) {
          if (len > this.maxWhole || kRecordHeaderBytes + len > this.capacity - off) throw corrupt(head, 'whole record too long');
          const start = off + kRecordHeaderBytes;
          next = (head + ((kRecordHeaderBytes + len + 7) & ~7)) | 0;
          messages++;
          handlers.onMessage(words[w + 1] >>> 0, bytes.subarray(start, start + len), false);
        } else if (kind === kKindCont) {
          const asm = this.asm;
          if (asm === null || len > this.maxCont || this.asmPos + len > asm.length) throw corrupt(head, 'stray continuation');
          const start = off + kRecordHeaderBytes;
          copyBytes(asm, this.asmPos, bytes, start, len);
          countCopied(len);
          this.asmPos += len;
          next = (head + ((kRecordHeaderBytes + len + 7) & ~7)) | 0;
          if (this.asmPos === asm.length) {
            this.asm = null;
            messages++;
            handlers.onMessage(this.asmTag, asm, true);
          }
        } else if (kind === kKindPad) {
          if (len !== this.capacity - off) throw corrupt(head, 'bad pad');
          next = (head + len) | 0;
        } else if (kind === kKindFirst) {
          const total = (words[w + 2] >>> 0) + (words[w + 3] >>> 0) * kTwo32;
          if (this.asm !== null || len > this.maxCont || len > total) throw corrupt(head, 'bad first fragment');
          const start = off + kFirstHeaderBytes;
          // One allocation per fragmented message: it must outlive the ring space it came in.
          const asm = bytesToFill(total);
          asm.set(bytes.subarray(start, start + len), 0);
          countCopied(len);
          this.asm = asm;
          this.asmPos = len;
          this.asmTag = words[w + 1] >>> 0;
          next = (head + ((kFirstHeaderBytes + len + 7) & ~7)) | 0;
        } else if (kind === kKindClose) {
          next = (head + kRecordHeaderBytes) | 0;
          closed = true;
        } else {
          throw corrupt(head, `unknown record kind ${kind}`);
        }
        // Publish only after onMessage returned: its view into the ring must stay intact until then.
        head = next;
        this.publish(head);
        if (closed) {
          this.stopped = true;
          break;
        }
      }
    } catch (err) {
      // A throwing handler still consumed its message; a corrupt record (next === head) did not.
      if (next !== head) this.publish(next);
      throw err;
    }
    if (messages > 0) handlers.onBatch?.();
    if (closed) {
      // Called from outside the read loop while that loop sleeps: wake it to see it has stopped
      // (only this side waits on the tail word), or it would sleep on, holding its thread alive.
      if (this.sleeping) this.signal.notify(this.ctl, kTailIndex);
      handlers.onClose?.();
    }
    return n;
  }

  private publish(head: number): void {
    const ctl = this.ctl;
    this.head = head;
    Atomics.store(ctl, kHeadIndex, head);
    // Dekker with the writer's "store waiting; load head" (RingWriter#pump), checked per record so
    // a blocked writer restarts as soon as the space it asked for is free. The word holds the head
    // position it waits for (| 1); until our head reaches it, leave it set: clearing it would lose
    // the wake-up the writer is owed when it does.
    const waiting = Atomics.load(ctl, kWriterWaitingIndex);
    if (waiting !== 0 && ((head - (waiting & ~1)) | 0) >= 0 && Atomics.compareExchange(ctl, kWriterWaitingIndex, waiting, 0) === waiting) {
      this.signal.notify(ctl, kHeadIndex);
    }
  }

  private async loop(): Promise<void> {
    const ctl = this.ctl;
    const alive = watchdog(() => {
      if (this.sleeping && Atomics.load(ctl, kTailIndex) !== this.head) this.signal.notify(ctl, kTailIndex);
    }, this.keepAlive);
    try {
      while (!this.stopped) {
        if (this.paused) {
          await new Promise<void>((resolve) => {
            this.resumeWake = resolve;
          });
          continue;
        }
        const n = this.drain(kBatchRecords);
        if (this.stopped || this.paused) continue;
        if (n > 0 && this.pollMs > 0) this.pollUntil = Math.max(this.pollUntil, performance.now() + this.pollMs);
        if (n > 0 || (this.pollUntil !== 0 && performance.now() < this.pollUntil)) {
          // Look again after one turn of this thread's event loop before sleeping: a writer in
          // the middle of a burst has usually added more by then, so we take it in one batch and
          // it pays no wake-up (measured: 2x calls/s with 64 in flight). A full batch yields here
          // too, so timers, I/O and microtasks of this thread run between batches. Within the
          // poll window we keep doing so: a sleep and a wake-up cost ~25 µs each way here.
          await new Promise<void>((resolve) => setImmediate(resolve));
          continue;
        }
        if (this.spinMicros > 0 && this.spin()) continue;
        // Going to sleep at head = this.head; announce it as head | 1 (positions are 8-aligned, so
        // never 0). Dekker with the writer, which stores tail and then loads this word: every
        // access is seq-cst, so in their single total order either our tail load below comes
        // after the writer's tail store (we see the new record and skip the sleep), or the
        // writer's load comes after our store (it sees a position behind its tail and notifies).
        // A notify that lands before wait() parks is not lost either: wait() compares the tail
        // word with `seen` atomically and returns at once when they differ.
        const head = this.head;
        Atomics.store(ctl, kReaderSleepingIndex, head | 1);
        const seen = Atomics.load(ctl, kTailIndex);
        if (seen === head) {
          this.#sleeps++;
          this.sleeping = true;
          this.wakeSent = false;
          await this.signal.wait(ctl, kTailIndex, seen, kWaitForever);
          this.sleeping = false;
        }
        // Usually the writer already cleared it when it notified; after a watchdog wake it did not.
        // Not once stopped: the ring may have a new reader by now (shm's direct path hands it to
        // another thread), whose own announcement this store would erase (a lost wake-up).
        if (!this.stopped) Atomics.store(ctl, kReaderSleepingIndex, 0);
      }
    } finally {
      clearInterval(alive);
      this.running = false;
    }
  }

  /** Busy-polls the tail word for up to spinMicros; true when a record arrived. */
  private spin(): boolean {
    this.#spins++;
    const end = performance.now() + this.spinMicros / 1000;
    do {
      if (Atomics.load(this.ctl, kTailIndex) !== this.head) return true;
    } while (performance.now() < end);
    return false;
  }
}

function corrupt(pos: number, what: string): RpcError {
  return new RpcError('PROTOCOL', `corrupt ring record at position ${pos >>> 0}: ${what}`);
}
