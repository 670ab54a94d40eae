import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { RpcError } from '../src/errors.js';
import { kClosedIndex, kHeadIndex, kReaderSleepingIndex, kTailIndex, kVersionIndex } from '../src/shm/layout.js';
import {
  atomicsSignal,
  createRing,
  kRingHeaderBytes,
  RingReader,
  RingWriter,
  kBatchRecords,
  type RingHandlers,
  type RingSignal,
} from '../src/shm/ring.js';

const kWorkerUrl = new URL('./fixtures/ring-echo-worker.js', import.meta.url);

/** Deterministic content for message `tag` of `size` bytes; the `i >>> 8` term catches whole-block shifts. */
function pattern(tag: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  const seed = Math.imul(tag, 2654435761) >>> 0;
  for (let i = 0; i < size; i++) out[i] = (seed + i * 7 + (i >>> 8)) & 255;
  return out;
}

/** Throws unless `bytes` is exactly pattern(tag, size). */
function checkPattern(tag: number, size: number, bytes: Uint8Array): void {
  if (bytes.length !== size) throw new Error(`message ${tag}: length ${bytes.length}, expected ${size}`);
  const seed = Math.imul(tag, 2654435761) >>> 0;
  for (let i = 0; i < size; i++) {
    if (bytes[i] !== ((seed + i * 7 + (i >>> 8)) & 255)) throw new Error(`message ${tag}: byte ${i} differs`);
  }
}

/** Small seeded PRNG (mulberry32) so a failing size sequence can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(1);
  }
}

/** The same-process signal, counting how often a side went to sleep (waits) and woke the other (notifies). */
function countingSignal(): { signal: RingSignal; counts: { waits: number; notifies: number } } {
  const counts = { waits: 0, notifies: 0 };
  const signal: RingSignal = {
    wait(view, index, expected, timeoutMs) {
      counts.waits++;
      return atomicsSignal.wait(view, index, expected, timeoutMs);
    },
    notify(view, index) {
      counts.notifies++;
      atomicsSignal.notify(view, index);
    },
  };
  return { signal, counts };
}

/** Main-thread ends of an echo worker: `writer` feeds it, `handlers` receive its echoes. */
function startEcho(capacity: number, handlers: RingHandlers, writerSignal?: RingSignal) {
  const input = createRing(capacity);
  const output = createRing(capacity);
  const worker = new Worker(kWorkerUrl, { workerData: { input, output } });
  const exited = once(worker, 'exit') as Promise<[number]>;
  const failed = once(worker, 'error').then(([err]) => Promise.reject(err as Error));
  failed.catch(() => {});
  const writer = new RingWriter(input, { signal: writerSignal });
  const reader = new RingReader(output, handlers);
  reader.start();
  return { writer, reader, worker, exited, failed };
}

describe('shm ring', function () {
  this.timeout(20000);

  it('createRing rounds capacity up to a power of two >= 4096 and rejects unusable values', function () {
    this.timeout(2000);
    assert.equal(createRing(1).byteLength, kRingHeaderBytes + 4096);
    assert.equal(createRing(4096).byteLength, kRingHeaderBytes + 4096);
    assert.equal(createRing(5000).byteLength, kRingHeaderBytes + 8192);
    for (const bad of [0, -1, 1.5, NaN, Infinity, 2 ** 31]) {
      assert.throws(() => createRing(bad), (e: unknown) => RpcError.is(e) && e.code === 'INVALID_ARGUMENT', String(bad));
    }
    assert.throws(() => new RingWriter(new SharedArrayBuffer(kRingHeaderBytes + 4096)), (e: unknown) => RpcError.is(e) && e.code === 'INVALID_ARGUMENT');
  });

  it('echoes 20,000 messages of random sizes through 4 KiB rings to a worker and back, in order and intact', async function () {
    this.timeout(60000);
    const cap = 4096;
    const rnd = prng(0x5eed);
    const sizes: number[] = [0, 1, 7, 8, 9, cap - 1, cap, cap + 1, 1015, 1016, 1017, 1008, 1009, 3 * cap + 5, 5 * cap];
    while (sizes.length < 20000) {
      const r = rnd();
      sizes.push(r < 0.7 ? Math.floor(rnd() * 64) : r < 0.9 ? Math.floor(rnd() * 2048) : Math.floor(rnd() * 5 * cap));
    }
    let received = 0;
    let last = performance.now();
    let worstGap = 0;
    let closed!: () => void;
    const closedP = new Promise<void>((resolve) => (closed = resolve));
    const echo = startEcho(cap, {
      onMessage(tag, bytes) {
        assert.equal(tag, received, 'messages out of order');
        checkPattern(tag, sizes[tag], bytes);
        received++;
        const now = performance.now();
        worstGap = Math.max(worstGap, now - last);
        last = now;
      },
      onClose: () => closed(),
    });
    let queuedWrites = 0;
    let split = 0;
    for (let i = 0; i < sizes.length; i++) {
      const msg = pattern(i, sizes[i]);
      let wrote: boolean;
      if (i % 3 === 0) {
        const k = Math.floor(rnd() * (msg.length + 1));
        wrote = echo.writer.write2(i, msg.subarray(0, k), msg.subarray(k));
        split++;
      } else {
        wrote = echo.writer.write(i, msg);
      }
      if (!wrote) queuedWrites++;
      // Mostly let the queue grow; sometimes let it empty so direct writes follow queued ones.
      if (i % 2500 === 2499) await echo.writer.flushed();
    }
    echo.writer.close();
    await Promise.race([closedP, echo.failed]);
    assert.equal(received, sizes.length);
    assert.ok(queuedWrites > 1000, `backpressure was exercised (${queuedWrites} writes queued)`);
    assert.ok(split > 6000);
    assert.equal(echo.writer.queuedBytes, 0);
    // A lost wake-up (of either side, the writer blocked on space included) shows as a stall
    // until the watchdog wakes it (1 s).
    assert.ok(worstGap < 500, `longest pause between deliveries ${worstGap.toFixed(0)} ms`);
    assert.deepEqual(await echo.exited, [0]);
  });

  it('keeps 64 calls in flight for 2 s with no wake-up lost (no stall until the watchdog)', async function () {
    this.timeout(20000);
    const pending = new Map<number, () => void>();
    const echo = startEcho(4096, {
      onMessage(tag, bytes) {
        checkPattern(tag & 0xff, 16, bytes);
        const resolve = pending.get(tag);
        assert.ok(resolve, `reply ${tag} matches a call`);
        pending.delete(tag);
        resolve();
      },
    });
    let nextId = 0;
    let calls = 0;
    let worst = 0;
    const end = performance.now() + 2000;
    const lane = async () => {
      while (performance.now() < end) {
        const id = nextId++;
        const t0 = performance.now();
        await new Promise<void>((resolve) => {
          pending.set(id, resolve);
          echo.writer.write(id, pattern(id & 0xff, 16));
        });
        worst = Math.max(worst, performance.now() - t0);
        calls++;
      }
    };
    await Promise.race([Promise.all(Array.from({ length: 64 }, lane)), echo.failed]);
    echo.writer.close();
    echo.reader.stop();
    await echo.exited;
    assert.equal(pending.size, 0);
    assert.ok(calls > 20000, `${calls} calls in 2 s`);
    assert.ok(worst < 500, `slowest call ${worst.toFixed(0)} ms`);
  });

  it('wakes the sleeping side by notify, never by the watchdog (3,000 sequential round trips)', async function () {
    this.timeout(30000);
    let resolveOne: (() => void) | null = null;
    const echo = startEcho(4096, {
      onMessage(tag, bytes) {
        checkPattern(tag, 16, bytes);
        resolveOne!();
      },
    });
    let worst = 0;
    const started = performance.now();
    for (let i = 0; i < 3000; i++) {
      const t0 = performance.now();
      const p = new Promise<void>((resolve) => (resolveOne = resolve));
      echo.writer.write(i, pattern(i, 16));
      await p;
      worst = Math.max(worst, performance.now() - t0);
    }
    const total = performance.now() - started;
    echo.writer.close();
    echo.reader.stop();
    await echo.exited;
    // A lost wake-up would stall one round trip until the watchdog (1 s).
    assert.ok(worst < 500, `worst round trip ${worst.toFixed(1)} ms`);
    assert.ok(total < 15000, `3000 round trips took ${total.toFixed(0)} ms`);
  });

  it('carries a 64 MiB message through a 64 KiB ring to a worker and back intact', async function () {
    this.timeout(60000);
    const size = 64 * 1024 * 1024;
    const msg = pattern(7, size);
    let got: Uint8Array | undefined;
    let count = 0;
    const echo = startEcho(65536, {
      onMessage(tag, bytes) {
        count++;
        assert.equal(tag, 7);
        got = bytes;
      },
    });
    assert.equal(echo.writer.write(7, msg), false, 'a message larger than the ring queues');
    assert.ok(echo.writer.queuedBytes > size / 2, 'most of it waits in memory for ring space');
    await Promise.race([until(() => count > 0, 50000, 'the echo'), echo.failed]);
    checkPattern(7, size, got!);
    assert.equal(echo.writer.queuedBytes, 0);
    echo.writer.close();
    echo.reader.stop();
    assert.deepEqual(await echo.exited, [0]);
    assert.equal(count, 1);
  });

  it('delivers any interleaving of writes, partial drains and queue flushes in order (fast-check)', function () {
    this.timeout(60000);
    const cap = 4096;
    const size = fc.oneof(
      fc.integer({ min: 0, max: 64 }),
      fc.integer({ min: 0, max: 1100 }),
      fc.constantFrom(0, 1007, 1008, 1009, 1015, 1016, 1017, cap - 1, cap, cap + 1),
      fc.integer({ min: 0, max: 3 * cap }),
    );
    const op = fc.oneof(
      fc.record({ op: fc.constant('write' as const), size, split: fc.double({ min: 0, max: 1, noNaN: true }) }),
      fc.record({ op: fc.constant('drain' as const), limit: fc.integer({ min: 1, max: 40 }) }),
      fc.record({ op: fc.constant('flush' as const) }),
    );
    let totalMessages = 0;
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300, size: 'max' }), fc.boolean(), (ops, close) => {
        const sab = createRing(cap);
        const writer = new RingWriter(sab);
        const sizes: number[] = [];
        let received = 0;
        let closedAt = -1;
        const reader = new RingReader(sab, {
          onMessage(tag, bytes) {
            assert.equal(tag, received);
            checkPattern(tag, sizes[tag], bytes);
            received++;
          },
          onClose() {
            assert.equal(closedAt, -1, 'onClose twice');
            closedAt = received;
          },
        });
        for (const o of ops) {
          if (o.op === 'write') {
            const tag = sizes.length;
            sizes.push(o.size);
            const msg = pattern(tag, o.size);
            const k = Math.floor(o.split * o.size);
            if (tag % 2 === 0) writer.write(tag, msg);
            else writer.write2(tag, msg.subarray(0, k), msg.subarray(k));
          } else if (o.op === 'drain') {
            reader.drain(o.limit);
          } else {
            writer.flushQueue();
          }
        }
        if (close) writer.close();
        for (let i = 0; i < 100000 && (writer.queuedBytes > 0 || received < sizes.length || (close && closedAt < 0)); i++) {
          writer.flushQueue();
          reader.drain(17);
        }
        assert.equal(received, sizes.length);
        assert.equal(writer.queuedBytes, 0);
        assert.equal(closedAt, close ? sizes.length : -1);
        assert.equal(reader.drain(), 0, 'nothing left over');
        writer.destroy();
        totalMessages += sizes.length;
      }),
      { numRuns: 150 },
    );
    assert.ok(totalMessages > 2000, `the property saw ${totalMessages} messages`);
  });

  it('close() delivers onClose once, after every queued message; writes after close throw CLOSED', async function () {
    this.timeout(10000);
    const sab = createRing(4096);
    const writer = new RingWriter(sab);
    const got: number[] = [];
    let closes = 0;
    let closedAfter = -1;
    const reader = new RingReader(sab, {
      onMessage(tag, bytes) {
        checkPattern(tag, 1000, bytes);
        got.push(tag);
      },
      onClose() {
        closes++;
        closedAfter = got.length;
      },
    });
    reader.start();
    let queued = 0;
    for (let i = 0; i < 100; i++) if (!writer.write(i, pattern(i, 1000))) queued++;
    assert.ok(queued > 90, 'most messages wait behind a full ring');
    writer.close();
    writer.close(); // idempotent
    assert.throws(() => writer.write(1, new Uint8Array(1)), (e: unknown) => RpcError.is(e) && e.code === 'CLOSED');
    assert.throws(() => writer.write2(1, new Uint8Array(1), new Uint8Array(1)), (e: unknown) => e instanceof RpcError && e.code === 'CLOSED');
    await until(() => closes > 0, 5000, 'onClose');
    await writer.flushed();
    await delay(20);
    assert.equal(closes, 1);
    assert.equal(closedAfter, 100);
    assert.deepEqual(got, Array.from({ length: 100 }, (_, i) => i));
    assert.equal(new Int32Array(sab)[kClosedIndex], 1);
    assert.equal(reader.drain(), 0);
  });

  it('pause() applies backpressure to the writer and resume() recovers without loss', async function () {
    this.timeout(10000);
    const sab = createRing(4096);
    const writer = new RingWriter(sab);
    const got: number[] = [];
    const reader = new RingReader(sab, {
      onMessage(tag, bytes) {
        checkPattern(tag, 300, bytes);
        got.push(tag);
        if (tag === 4) reader.pause(); // also from inside a delivery
      },
    });
    reader.start();
    reader.pause();
    const results: boolean[] = [];
    for (let i = 0; i < 60; i++) results.push(writer.write(i, pattern(i, 300)));
    assert.equal(results[0], true);
    assert.ok(results.includes(false), 'the paused reader made the ring fill');
    const queuedWhilePaused = writer.queuedBytes;
    assert.ok(queuedWhilePaused > 0);
    await delay(50);
    assert.equal(got.length, 0, 'nothing delivered while paused');
    assert.equal(writer.queuedBytes, queuedWhilePaused, 'the writer stays blocked while paused');
    reader.resume();
    await until(() => got.length === 5, 2000, 'the pause inside onMessage');
    await delay(30);
    assert.equal(got.length, 5, 'pause() from onMessage stops before the next message');
    reader.resume();
    await writer.flushed();
    await until(() => got.length === 60, 2000, 'every message');
    assert.deepEqual(got, Array.from({ length: 60 }, (_, i) => i));
    assert.equal(writer.queuedBytes, 0);
    reader.stop();
  });

  it('notifies once per burst, and only a sleeping reader', async function () {
    this.timeout(5000);
    const { signal, counts } = countingSignal();
    const sab = createRing(1 << 16);
    const ctl = new Int32Array(sab);
    const writer = new RingWriter(sab, { signal });
    let got = 0;
    let batches = 0;
    const reader = new RingReader(sab, { onMessage: () => void got++, onBatch: () => void batches++ }, { signal });
    reader.start();
    assert.equal(ctl[kReaderSleepingIndex], 0 | 1, 'an idle reader sleeps at once, at head 0');
    for (let burst = 1; burst <= 3; burst++) {
      for (let i = 0; i < 100; i++) writer.write(i, pattern(i, 16));
      assert.equal(counts.notifies, burst, 'one notify for 100 writes');
      await until(() => got === burst * 100, 2000, 'the burst');
      await until(() => ctl[kReaderSleepingIndex] === (ctl[kTailIndex] | 1), 2000, 'the reader to sleep again');
    }
    // Each burst is drained in batches of at most kBatchRecords, with a loop turn between them.
    const perBurst = Math.ceil(100 / kBatchRecords);
    assert.ok(batches >= 3 * perBurst && batches <= 6 * perBurst, `batches: ${batches}`);
    assert.equal(counts.waits, 4);
    reader.stop();
  });

  it('holdWake(): records are published at once, but a sleeping reader is woken only at releaseWake(), once', async function () {
    this.timeout(5000);
    const { signal, counts } = countingSignal();
    const sab = createRing(1 << 16);
    const ctl = new Int32Array(sab);
    const writer = new RingWriter(sab, { signal });
    let got = 0;
    const reader = new RingReader(sab, { onMessage: () => void got++ }, { signal });
    reader.start();
    assert.equal(ctl[kReaderSleepingIndex], 0 | 1, 'an idle reader sleeps at once');
    writer.holdWake();
    for (let i = 0; i < 10; i++) writer.write(i, pattern(i, 16));
    assert.equal(Atomics.load(ctl, kTailIndex) > 0, true, 'the records are published');
    assert.equal(counts.notifies, 0, 'no wake-up while held');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(got, 0, 'the sleeping reader was not woken');
    writer.releaseWake();
    assert.equal(counts.notifies, 1, 'one wake-up at the release');
    await until(() => got === 10, 2000, 'every record');
    await until(() => ctl[kReaderSleepingIndex] === (ctl[kTailIndex] | 1), 2000, 'the reader to sleep again');
    // Held with nothing written, or with the reader awake for it: the release owes nothing.
    writer.holdWake();
    writer.releaseWake();
    assert.equal(counts.notifies, 1);
    // A close while held is delivered at the release too.
    let closed = false;
    const sab2 = createRing(1 << 16);
    const writer2 = new RingWriter(sab2, { signal });
    new RingReader(sab2, { onMessage: () => {}, onClose: () => void (closed = true) }, { signal }).start();
    writer2.holdWake();
    writer2.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(closed, false);
    writer2.releaseWake();
    await until(() => closed, 2000, 'the close');
    reader.stop();
  });

  it('holdWakeForTurn(): one wake-up at the end of the event-loop turn for everything written in it', async function () {
    this.timeout(5000);
    const { signal, counts } = countingSignal();
    const sab = createRing(1 << 16);
    const writer = new RingWriter(sab, { signal });
    let got = 0;
    const reader = new RingReader(sab, { onMessage: () => void got++ }, { signal });
    reader.start();
    for (let i = 0; i < 10; i++) {
      writer.holdWakeForTurn();
      writer.write(i, pattern(i, 16));
    }
    assert.equal(counts.notifies, 0, 'no wake-up within the turn');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(counts.notifies, 1, 'one wake-up at its end');
    await until(() => got === 10, 2000, 'every record');
    reader.stop();
  });

  it('tells onMessage whether it may keep the bytes: a message that fits in the ring is a view into it, a larger one is reassembled, its own', () => {
    const cap = 4096;
    const sab = createRing(cap);
    const writer = new RingWriter(sab);
    const got: Array<{ owned: boolean; shared: boolean; length: number }> = [];
    const reader = new RingReader(sab, {
      onMessage(tag, bytes, owned) {
        checkPattern(tag, bytes.length, bytes);
        got.push({ owned, shared: bytes.buffer === sab, length: bytes.length });
      },
    });
    // Larger than a quarter of the ring (once the largest record), then the largest whole record,
    // then one byte more than that, which must go in fragments.
    const sizes = [100, 3000, cap - 8, cap - 7];
    for (const [tag, size] of sizes.entries()) {
      writer.write(tag, pattern(tag, size));
      // Alternate until it is through (bounded: a bug must fail, not spin).
      for (let i = 0; i < 100 && got.length <= tag; i++) {
        reader.drain();
        writer.flushQueue();
      }
    }
    assert.deepEqual(got, [
      { owned: false, shared: true, length: 100 },
      { owned: false, shared: true, length: 3000 },
      { owned: false, shared: true, length: cap - 8 },
      { owned: true, shared: false, length: cap - 7 },
    ]);
  });

  it('a whole record too large for the room behind its pad waits for the reader to pass the pad, then goes in place', () => {
    const cap = 4096;
    const sab = createRing(cap);
    const ctl = new Int32Array(sab);
    const writer = new RingWriter(sab);
    const got: Array<{ tag: number; owned: boolean }> = [];
    const reader = new RingReader(sab, {
      onMessage(tag, bytes, owned) {
        checkPattern(tag, bytes.length, bytes);
        got.push({ tag, owned });
      },
    });
    // Tail just past the middle: 2104 bytes of room before the end, 2048 behind it once read.
    assert.equal(writer.write(0, pattern(0, 2040)), true);
    assert.equal(reader.drain(), 1);
    assert.equal(Atomics.load(ctl, kTailIndex), 2048);
    // 3000 bytes fit neither before the end nor behind the pad: only the pad goes now.
    assert.equal(writer.write(1, pattern(1, 3000)), false);
    assert.equal(Atomics.load(ctl, kTailIndex), cap, 'the pad alone is published');
    assert.equal(writer.flushQueue(), false, 'the record waits while the reader has not passed the pad');
    assert.equal(reader.drain(), 1, 'the reader passes the pad');
    assert.equal(writer.flushQueue(), true);
    assert.equal(reader.drain(), 1);
    assert.deepEqual(got, [
      { tag: 0, owned: false },
      { tag: 1, owned: false },
    ]);
  });

  it('messages of random sizes up to 3x the ring arrive byte-exact and in order under a slow reader, each one that fits as a view (fast-check)', async function () {
    this.timeout(60000);
    const cap = 4096;
    const maxWhole = cap - 8;
    const size = fc.oneof(
      fc.integer({ min: 0, max: 3 * cap }),
      fc.integer({ min: 0, max: 600 }),
      fc.constantFrom(0, 1, cap / 4 - 8, cap / 4 - 7, cap / 2 - 8, cap / 2 + 1, maxWhole - 1, maxWhole, maxWhole + 1, cap, 2 * cap + 3, 3 * cap),
    );
    const message = fc.record({ size, split: fc.double({ min: 0, max: 1, noNaN: true }), stall: fc.constantFrom(0, 0, 0, 1, 2) });
    let fragmented = 0;
    let inPlace = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 40 }), async (messages) => {
        const sab = createRing(cap);
        const writer = new RingWriter(sab);
        let received = 0;
        let failure: unknown;
        let closed = false;
        const reader = new RingReader(sab, {
          onMessage(tag, bytes, owned) {
            try {
              assert.equal(tag, received, 'in order');
              const m = messages[tag];
              checkPattern(tag, m.size, bytes);
              assert.equal(owned, m.size > maxWhole, `message ${tag} of ${m.size} bytes: owned ${owned}`);
              if (owned) fragmented++;
              else inPlace++;
            } catch (err) {
              failure ??= err;
            }
            received++;
            // A slow reader: it stops for a timer or a loop turn now and then, while the writer is blocked.
            if (messages[tag].stall !== 0) {
              reader.pause();
              if (messages[tag].stall === 1) setTimeout(() => reader.resume(), 1);
              else setImmediate(() => reader.resume());
            }
          },
          onClose: () => void (closed = true),
          onError: (err) => void (failure ??= err),
        });
        reader.start();
        for (const [tag, m] of messages.entries()) {
          const msg = pattern(tag, m.size);
          const k = Math.floor(m.split * m.size);
          writer.write2(tag, msg.subarray(0, k), msg.subarray(k));
          // The writer's caller reuses its buffers at once: what was queued must have been copied.
          msg.fill(0xee);
        }
        writer.close();
        await writer.flushed();
        await until(() => closed || failure !== undefined, 10000, 'every message and the close record');
        reader.stop();
        if (failure !== undefined) throw failure;
        assert.equal(received, messages.length);
      }),
      { numRuns: 40 },
    );
    assert.ok(fragmented > 10 && inPlace > 100, `fragmented ${fragmented}, in place ${inPlace}`);
  });

  it('a writer blocked on a full ring is woken once half the ring is free, not at each record the reader frees', async function () {
    this.timeout(5000);
    const { signal, counts } = countingSignal();
    const cap = 4096;
    const sab = createRing(cap);
    const writer = new RingWriter(sab);
    const got: number[] = [];
    const reader = new RingReader(sab, { onMessage: (tag) => void got.push(tag) }, { signal });
    // 16 records of 256 bytes fill the ring; the 17th waits.
    for (let i = 0; i < 16; i++) assert.equal(writer.write(i, pattern(i, 248)), true);
    assert.equal(writer.write(16, pattern(16, 248)), false);
    for (let i = 0; i < 7; i++) assert.equal(reader.drain(1), 1);
    assert.equal(counts.notifies, 0, 'seven records freed, under half the ring: the writer sleeps on');
    assert.equal(reader.drain(1), 1);
    assert.equal(counts.notifies, 1, 'the eighth frees half the ring: one wake-up');
    await writer.flushed();
    while (reader.drain() > 0);
    assert.deepEqual(got, Array.from({ length: 17 }, (_, i) => i));
    assert.equal(counts.notifies, 1);
  });

  it('streams a message 16x the ring to a worker with a writer wake-up per half ring, not per fragment', async function () {
    this.timeout(10000);
    const cap = 1 << 16;
    const size = 16 * cap;
    let received: Uint8Array | undefined;
    const { signal, counts } = countingSignal();
    const echo = startEcho(cap, { onMessage: (_tag, bytes) => void (received = bytes) }, signal);
    const writer = echo.writer;
    writer.write(7, pattern(7, size));
    await writer.flushed();
    await until(() => received !== undefined, 5000, 'the echo');
    checkPattern(7, size, received!);
    // Fragments are a quarter of the ring (64 of them); half-ring strides are 32.
    assert.ok(counts.waits <= 34, `the writer slept ${counts.waits} times`);
    writer.close();
    assert.deepEqual(await echo.exited, [0]);
    echo.reader.stop();
  });

  it('pollMicros: a message within the window after the last one costs no sleep; the event loop keeps turning; then it sleeps', async function () {
    this.timeout(5000);
    const run = async (pollMicros: number) => {
      const { signal, counts } = countingSignal();
      const sab = createRing(1 << 12);
      const ctl = new Int32Array(sab);
      const writer = new RingWriter(sab, { signal });
      let got = 0;
      const reader = new RingReader(sab, { onMessage: () => void got++ }, { signal, pollMicros });
      reader.start();
      await until(() => ctl[kReaderSleepingIndex] !== 0, 1000, 'the idle reader to sleep');
      const first = counts.waits;
      // One message, then nine more, each sent a loop turn after the previous one arrived.
      for (let i = 0; i < 10; i++) {
        writer.write(i, pattern(i, 8));
        await until(() => got === i + 1, 1000, `message ${i}`);
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      // A timer due meanwhile still fires while the reader polls: nothing holds the loop.
      const fired = await new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 0));
      await until(() => ctl[kReaderSleepingIndex] === (ctl[kTailIndex] | 1), 1000, 'the reader to sleep after the window');
      reader.stop();
      return { sleeps: counts.waits - first, fired };
    };
    const polling = await run(200_000);
    assert.equal(polling.sleeps, 1, 'within the window: only the final sleep after the last message');
    assert.ok(polling.fired);
    const blocking = await run(0);
    assert.ok(blocking.sleeps >= 10, `without a window it sleeps after every message (${blocking.sleeps})`);
  });

  it('a drain() from outside that reaches the close record wakes the sleeping read loop, which ends', async function () {
    this.timeout(5000);
    const sab = createRing(1 << 12);
    const ctl = new Int32Array(sab);
    // The writer's notifies go nowhere, so the loop sleeps on past the message and the close record.
    const writer = new RingWriter(sab, { signal: { wait: atomicsSignal.wait, notify: () => {} } });
    const got: number[] = [];
    let closed = 0;
    const reader = new RingReader(sab, { onMessage: (tag) => void got.push(tag), onClose: () => void closed++ });
    reader.start();
    try {
      await until(() => ctl[kReaderSleepingIndex] !== 0, 1000, 'the idle reader to sleep');
      writer.write(7, pattern(7, 8));
      writer.close();
      assert.equal(reader.drain(), 2);
      assert.deepEqual(got, [7]);
      assert.equal(closed, 1);
      await until(() => !(reader as unknown as { running: boolean }).running, 1000, 'the read loop to end');
    } finally {
      reader.stop();
    }
  });

  it('expectWithin() wakes a sleeping reader to look until the window ends: messages meanwhile cost the writer no notify; then it sleeps', async function () {
    this.timeout(5000);
    // Each side its own signal: the reader's waits, and the writer's notifies alone.
    const reading = countingSignal();
    const writing = countingSignal();
    const readerSignal = reading.signal;
    const writerSignal = writing.signal;
    const sab = createRing(1 << 12);
    const ctl = new Int32Array(sab);
    const writer = new RingWriter(sab, { signal: writerSignal });
    let got = 0;
    const reader = new RingReader(sab, { onMessage: () => void got++ }, { signal: readerSignal });
    reader.start();
    try {
      await until(() => ctl[kReaderSleepingIndex] !== 0, 1000, 'the idle reader to sleep');
      const waits = reading.counts.waits;
      reader.expectWithin(300);
      await until(() => ctl[kReaderSleepingIndex] === 0, 1000, 'the reader to wake and look');
      for (let i = 0; i < 10; i++) {
        writer.write(i, pattern(i, 8));
        await until(() => got === i + 1, 1000, `message ${i}`);
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      assert.equal(writing.counts.notifies, 0, 'the writer found the reader awake every time');
      assert.equal(reading.counts.waits, waits, 'the reader did not sleep within the window');
      await until(() => ctl[kReaderSleepingIndex] !== 0, 2000, 'the reader to sleep once the window has passed');
      writer.write(10, pattern(10, 8));
      await until(() => got === 11, 1000, 'the message after the window');
      assert.equal(writing.counts.notifies, 1, 'after the window, the writer wakes the sleeping reader');
    } finally {
      reader.stop();
    }
  });

  it('recovers from lost notifies through the watchdog (safety net), on both the reader and the writer side', async function () {
    this.timeout(10000);
    let dropped = 0;
    const lossy: RingSignal = { wait: atomicsSignal.wait, notify: () => void dropped++ };
    // Reader side: the writer's notifies go nowhere, so only the reader's watchdog can wake it.
    const a = createRing(4096);
    const got: number[] = [];
    const reader = new RingReader(a, { onMessage: (tag) => void got.push(tag) });
    const writer = new RingWriter(a, { signal: lossy });
    reader.start();
    const t0 = performance.now();
    writer.write(1, pattern(1, 16));
    await until(() => got.length === 1, 3000, 'the watchdog to wake the reader');
    const readerRecovery = performance.now() - t0;
    assert.ok(dropped >= 1, 'the wake-up was really lost');
    reader.stop();
    // Writer side: the reader's notifies go nowhere, so only the pump's watchdog can wake it.
    const b = createRing(4096);
    const got2: number[] = [];
    const reader2 = new RingReader(b, { onMessage: (tag) => void got2.push(tag) }, { signal: lossy });
    const writer2 = new RingWriter(b);
    for (let i = 0; i < 5; i++) writer2.write(i, pattern(i, 1000)); // four fit, the fifth queues
    assert.equal(writer2.queuedBytes, 1000);
    const before = dropped;
    reader2.drain(); // frees the space; its notify to the parked pump is dropped
    assert.equal(dropped, before + 1, 'the pump was parked and its wake-up lost');
    const t1 = performance.now();
    await writer2.flushed();
    const writerRecovery = performance.now() - t1;
    reader2.drain();
    assert.deepEqual(got2, [0, 1, 2, 3, 4]);
    assert.ok(writerRecovery > 200 && writerRecovery < 2500, `writer recovered after ${writerRecovery.toFixed(0)} ms`);
    assert.ok(readerRecovery > 200 && readerRecovery < 2500, `reader recovered after ${readerRecovery.toFixed(0)} ms`);
  });

  it('rejects a corrupt record with PROTOCOL instead of delivering garbage', function () {
    this.timeout(2000);
    const sab = createRing(4096);
    const ctl = new Int32Array(sab);
    new Int32Array(sab, kRingHeaderBytes)[0] = (16 << 3) | 7; // no such record kind
    Atomics.store(ctl, kTailIndex, 24);
    let delivered = 0;
    const reader = new RingReader(sab, { onMessage: () => void delivered++ });
    assert.throws(() => reader.drain(), (e: unknown) => RpcError.is(e) && e.code === 'PROTOCOL');
    assert.equal(delivered, 0);
  });

  it('rejects with PROTOCOL a whole record that would run past the end of the data area, or is longer than the ring', function () {
    for (const { at, len } of [
      { at: 4000, len: 200 },
      { at: 0, len: 4096 },
    ]) {
      const sab = createRing(4096);
      const ctl = new Int32Array(sab);
      new Int32Array(sab, kRingHeaderBytes)[at >> 2] = (len << 3) | 1;
      Atomics.store(ctl, kHeadIndex, at);
      Atomics.store(ctl, kTailIndex, at + 8 + len);
      let delivered = 0;
      const reader = new RingReader(sab, { onMessage: () => void delivered++ });
      assert.throws(() => reader.drain(), (e: unknown) => RpcError.is(e) && e.code === 'PROTOCOL' && /whole record too long/.test(e.message), `at ${at}, ${len} bytes`);
      assert.equal(delivered, 0);
    }
  });

  it('refuses a ring laid out by the previous ring version (its reader would refuse whole records over a quarter of the ring)', function () {
    const sab = createRing(4096);
    new Int32Array(sab)[kVersionIndex] = 1;
    for (const make of [() => new RingWriter(sab), () => new RingReader(sab, { onMessage() {} })]) {
      assert.throws(make, (e: unknown) => RpcError.is(e) && e.code === 'INVALID_ARGUMENT' && /version/.test(e.message));
    }
  });
});
