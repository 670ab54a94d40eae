import assert from 'node:assert/strict';
import fc from 'fast-check';
import { createCodec } from '../src/codec/index.js';
import { copyBytes, copyOut } from '../src/shm/copy.js';
import { createRing, RingReader, RingWriter } from '../src/shm/ring.js';

/** Calls of Uint8Array#slice on views into shared memory while `run` runs (V8's slow path for them). */
function sharedSlices(run: () => void): number {
  const slice = Uint8Array.prototype.slice;
  let count = 0;
  Uint8Array.prototype.slice = function (this: Uint8Array, ...args: [number?, number?]) {
    if (this.buffer instanceof SharedArrayBuffer) count++;
    return slice.apply(this, args);
  } as typeof slice;
  try {
    run();
  } finally {
    Uint8Array.prototype.slice = slice;
  }
  return count;
}

/**
 * Large copies to or from shared memory whose source and target disagree modulo 8 while `run` runs:
 * V8 makes those byte by byte.
 */
function misalignedSharedCopies(run: () => void): number {
  const set = Uint8Array.prototype.set;
  let count = 0;
  Uint8Array.prototype.set = function (this: Uint8Array, source: ArrayLike<number>, offset = 0) {
    if (source instanceof Uint8Array && source.length >= 4096 && (this.buffer instanceof SharedArrayBuffer || source.buffer instanceof SharedArrayBuffer)) {
      if (((this.byteOffset + offset - source.byteOffset) & 7) !== 0) count++;
    }
    return set.call(this, source, offset);
  } as typeof set;
  try {
    run();
  } finally {
    Uint8Array.prototype.set = set;
  }
  return count;
}

describe('copies into and out of ring memory', function () {
  this.timeout(10000);

  it('a large binary payload read from a ring view is copied out with set(), intact, never aliasing the ring and never by slice()', function () {
    const cap = 1 << 16;
    const sab = createRing(cap);
    const writer = new RingWriter(sab);
    const payload = new Uint8Array(40000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31 + 7) & 255;
    const values: unknown[] = [];
    for (const kind of ['msgpack', 'json'] as const) {
      const codec = createCodec({ kind });
      const header = new Uint8Array(8);
      const n = codec.bytesHeader(payload, header, 0);
      if (n > 0) writer.write2(1, header.subarray(0, n), payload);
      else writer.write(1, codec.encode(Array.from(payload.subarray(0, 5000))));
      const reader = new RingReader(sab, {
        onMessage(_tag, bytes, owned) {
          assert.equal(owned, false);
          assert.ok(bytes.buffer instanceof SharedArrayBuffer, 'a view into the ring');
          let value: unknown;
          assert.equal(
            sharedSlices(() => (value = codec.decode(bytes, false))),
            0,
            `${kind}: shared memory was sliced`,
          );
          // The ring's bytes are reused once this returns: the value must not see that.
          bytes.fill(0);
          values.push(value);
        },
      });
      assert.equal(reader.drain(), 1);
    }
    const [bin, list] = values as [Uint8Array, number[]];
    assert.ok(bin instanceof Uint8Array && !(bin.buffer instanceof SharedArrayBuffer));
    assert.deepEqual(bin, payload);
    assert.deepEqual(list, Array.from(payload.subarray(0, 5000)));
  });

  it('a payload behind an odd-length header goes into the ring and out of it by aligned copies only', function () {
    const sab = createRing(1 << 20);
    const writer = new RingWriter(sab);
    const payload = new Uint8Array(300000);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 13 + 1) & 255;
    const codec = createCodec({ kind: 'msgpack' });
    const header = new Uint8Array(8);
    let value: unknown;
    // The tag says how many bytes of other headers precede the codec's.
    const reader = new RingReader(sab, { onMessage: (tag, bytes, owned) => void (value = codec.decodeFrom(bytes, tag, owned)) });
    for (const head of [1, 3, 5, 7]) {
      const n = codec.bytesHeader(payload, header, 0);
      // A frame's length prefix and envelope header before the codec's, as the framing writes them.
      const prefix = new Uint8Array(head + n);
      prefix.set(header.subarray(0, n), head);
      assert.equal(
        misalignedSharedCopies(() => {
          value = undefined;
          assert.equal(writer.write2(head, prefix, payload), true);
          while (reader.drain() > 0);
        }),
        0,
        `header of ${n} bytes`,
      );
      assert.deepEqual(value, payload);
      // And through fragments: larger than this ring, reassembled.
      const big = new Uint8Array((1 << 20) + 4097).fill(head);
      big.set(prefix.subarray(0, head + n));
      let got: Uint8Array | undefined;
      const small = createRing(1 << 16);
      const w2 = new RingWriter(small);
      const r2 = new RingReader(small, { onMessage: (_tag, bytes) => void (got = bytes) });
      assert.equal(
        misalignedSharedCopies(() => {
          w2.write2(head, big.subarray(0, head), big.subarray(head));
          for (let i = 0; i < 200 && got === undefined; i++) {
            r2.drain();
            w2.flushQueue();
          }
        }),
        0,
      );
      assert.deepEqual(got, big);
    }
  });

  it('copyBytes copies any range between shared and plain memory at any alignment, touching nothing else (fast-check)', function () {
    const kinds = ['plain', 'shared'] as const;
    const make = (kind: (typeof kinds)[number], size: number) => new Uint8Array(kind === 'shared' ? new SharedArrayBuffer(size) : new ArrayBuffer(size));
    fc.assert(
      fc.property(
        fc.constantFrom(...kinds),
        fc.constantFrom(...kinds),
        fc.oneof(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 0, max: 700000 }), fc.constantFrom(4095, 4096, 262144, 262145, 524288 + 3)),
        fc.integer({ min: 0, max: 15 }),
        fc.integer({ min: 0, max: 15 }),
        fc.integer({ min: 0, max: 15 }),
        (srcKind, dstKind, n, srcView, from, at) => {
          const srcAll = make(srcKind, n + 40);
          for (let i = 0; i < srcAll.length; i++) srcAll[i] = (i * 7 + 3) & 255;
          const src = srcAll.subarray(srcView);
          const dst = make(dstKind, n + 40).fill(0xee);
          copyBytes(dst, at, src, from, n);
          for (let i = 0; i < dst.length; i++) {
            const want = i >= at && i < at + n ? src[from + i - at] : 0xee;
            if (dst[i] !== want) throw new Error(`${srcKind} -> ${dstKind}, ${n} bytes from ${srcView}+${from} to ${at}: byte ${i} is ${dst[i]}, expected ${want}`);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('copyOut copies any range of a shared or plain view into memory of its own', function () {
    for (const buffer of [new SharedArrayBuffer(10000), new ArrayBuffer(10000)]) {
      const all = new Uint8Array(buffer);
      for (let i = 0; i < all.length; i++) all[i] = i & 255;
      const view = all.subarray(100, 9100);
      for (const [start, end] of [
        [0, view.length],
        [5, 17],
        [4000, 9000],
        [9000, 9000],
      ]) {
        const expected = Array.from(view.subarray(start, end));
        const out = copyOut(view, start, end);
        assert.ok(!(out.buffer instanceof SharedArrayBuffer));
        view.fill(0);
        assert.deepEqual(Array.from(out), expected, 'a copy, not a view');
        for (let i = 0; i < all.length; i++) all[i] = i & 255;
      }
    }
  });
});
