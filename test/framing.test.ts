/** The frame decoder and envelope parser, including property tests over random splits and random bytes. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RpcError } from '../src/index.js';
import { FrameDecoder, FrameWriter, encodeFrame } from '../src/protocol/framing.js';
import { Kind, OpenFlag, StreamDir, HeaderScratch, creditHeader, decodeEnvelope, openHeader, streamHeader, encodeCancel, encodeClose, encodeError, encodeEvent, encodePing, encodeRequest, encodeResponse } from '../src/protocol/envelope.js';

function decodeAll(chunks: Uint8Array[], max = 1 << 20): Uint8Array[] {
  const dec = new FrameDecoder(max);
  const out: Uint8Array[] = [];
  for (const c of chunks) dec.push(c, (b) => out.push(b.slice()));
  dec.end();
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** Splits `bytes` at the given cut points. */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  out.push(bytes.subarray(prev));
  return out;
}

describe('frame decoder', () => {
  it('decodes any split of a valid stream into the same frames (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 40 }), (bodies, cuts) => {
        const stream = concat(bodies.map(encodeFrame));
        const frames = decodeAll(split(stream, cuts));
        assert.deepEqual(frames.map((f) => Buffer.from(f).toString('hex')), bodies.map((b) => Buffer.from(b).toString('hex')));
      }),
      { numRuns: 500 },
    );
  });

  it('random bytes never throw anything but PROTOCOL, FRAME_TOO_LARGE or CLOSED (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 10 }), (chunks) => {
        const dec = new FrameDecoder(256);
        try {
          for (const c of chunks) {
            dec.push(c, (body) => {
              try {
                decodeEnvelope(body);
              } catch (err) {
                if (!(err instanceof RpcError) || err.code !== 'PROTOCOL') throw err;
              }
            });
          }
          dec.end();
        } catch (err) {
          assert.ok(err instanceof RpcError, `threw ${err}`);
          // CLOSED: the bytes ended inside a frame.
          assert.ok(['PROTOCOL', 'FRAME_TOO_LARGE', 'CLOSED'].includes(err.code), err.code);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('rejects a length prefix over the maximum with FRAME_TOO_LARGE before reading the body', () => {
    const dec = new FrameDecoder(100);
    const header = new Uint8Array([101, 0, 0, 0]);
    assert.throws(() => dec.push(header, () => assert.fail('no frame')), (e: RpcError) => e.code === 'FRAME_TOO_LARGE' && /101/.test(e.message));
  });

  it('reports a stream that ends inside a frame as CLOSED, with the stream error as its cause', () => {
    const dec = new FrameDecoder();
    dec.push(encodeFrame(new Uint8Array(10)).subarray(0, 7), () => assert.fail('no frame'));
    assert.throws(() => dec.end(), (e: RpcError) => e.code === 'CLOSED' && /ended inside a frame \(3 of 10 bytes\)/.test(e.message) && e.cause === undefined);
    const dec2 = new FrameDecoder();
    dec2.push(new Uint8Array([5, 0]), () => {});
    const reset = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    assert.throws(() => dec2.end(reset), (e: RpcError) => e.code === 'CLOSED' && e.cause === reset && /ECONNRESET/.test(e.message));
    const dec3 = new FrameDecoder();
    dec3.push(encodeFrame(new Uint8Array(3)), () => {});
    dec3.end(reset); // between frames: nothing to report
  });

  it('decodes frames of any size cut at every byte boundary, and at random ones into separate chunks (property)', () => {
    // Bodies up to 40 KiB take the paths a partial frame has: small pieces copied into a tail,
    // pieces of 16 KiB and more kept by reference, a tail sized to a small frame.
    const body = fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.integer({ min: 0, max: 40_000 }).map((n) => new Uint8Array(n).map((_, i) => (i * 7 + n) & 0xff)));
    fc.assert(
      fc.property(fc.array(body, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), (bodies, cuts, own) => {
        const stream = concat(bodies.map(encodeFrame));
        const hex = (frames: Uint8Array[]) => frames.map((f) => Buffer.from(f).toString('hex'));
        // As a socket delivers them: each chunk in its own memory, or views into one buffer.
        const chunks = split(stream, cuts).map((c) => (own ? c.slice() : c));
        assert.deepEqual(hex(decodeAll(chunks)), hex(bodies));
      }),
      { numRuns: 200 },
    );
    const bodies = [new Uint8Array(0), new Uint8Array([1, 2, 3]), new Uint8Array(5000).fill(9), new Uint8Array(20_000).map((_, i) => i & 0xff)];
    const stream = concat(bodies.map(encodeFrame));
    for (const own of [false, true]) {
      const bytes = Array.from(stream, (_, i) => (own ? stream.slice(i, i + 1) : stream.subarray(i, i + 1)));
      assert.deepEqual(decodeAll(bytes).map((f) => [...f]), bodies.map((b) => [...b]));
    }
  });

  it('holds what arrived of a frame, not the length it announced: 20 decoders told 64 MiB and given 10 bytes', () => {
    const decoders = Array.from({ length: 20 }, () => new FrameDecoder());
    const before = process.memoryUsage().arrayBuffers;
    for (const dec of decoders) {
      const chunk = new Uint8Array(14);
      chunk.set([0, 0, 0, 4]); // 64 MiB
      dec.push(chunk, () => assert.fail('no frame'));
    }
    const grown = process.memoryUsage().arrayBuffers - before;
    assert.ok(grown < 1024 * 1024, `${grown} bytes of ArrayBuffer for 20 partial frames of 10 bytes`);
    assert.ok(decoders.every((dec) => dec.pending));
  });

  it('hands out frames that lie inside one chunk without copying', () => {
    const chunk = concat([encodeFrame(new Uint8Array([1, 2])), encodeFrame(new Uint8Array([3]))]);
    const frames: Uint8Array[] = [];
    new FrameDecoder().push(chunk, (b) => frames.push(b));
    assert.equal(frames[0].buffer, chunk.buffer);
    assert.deepEqual([...frames[1]], [3]);
  });
});

describe('frame writer', () => {
  it('batches small frames into one write and passes large owned ones by reference', () => {
    const writes: Uint8Array[] = [];
    const w = new FrameWriter((c) => writes.push(c));
    for (let i = 0; i < 100; i++) w.push(new Uint8Array([i]), false);
    w.flush();
    assert.equal(writes.length, 1, 'one write for 100 small frames');
    const big = new Uint8Array(100_000).fill(7);
    w.push(big, true);
    w.flush();
    assert.ok(writes.includes(big), 'the large body is written by reference');
    const frames = decodeAll(writes);
    assert.equal(frames.length, 101);
    assert.deepEqual([...frames[42]], [42]);
    assert.equal(frames[100].length, 100_000);
  });

  it('writes any sequence of frames and flushes as the same frames, a turn of small ones up to 64 KiB in one write (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.oneof(fc.integer({ min: 0, max: 3000 }), fc.constant(-1)), { maxLength: 60 }), { maxLength: 8 }),
        (turns) => {
          const writes: Uint8Array[] = [];
          const w = new FrameWriter((c) => writes.push(c));
          const sent: number[] = [];
          for (const turn of turns) {
            const before = writes.length;
            let bytes = 0;
            for (const size of turn) {
              if (size < 0) {
                w.flush(); // a flush mid-turn
                continue;
              }
              const body = new Uint8Array(size).fill(sent.length & 0xff);
              sent.push(size);
              bytes += 4 + size;
              if (sent.length % 2) w.push(body, false);
              else w.push2(body.subarray(0, Math.min(3, size)), body.subarray(Math.min(3, size)));
            }
            w.flush();
            if (!turn.includes(-1) && bytes > 0 && bytes <= 64 * 1024) assert.equal(writes.length - before, 1, `${bytes} bytes of frames in one write`);
          }
          const frames = decodeAll(writes);
          assert.deepEqual(frames.map((f) => f.length), sent);
          frames.forEach((f, i) => assert.ok(f.every((b) => b === (i & 0xff)), `frame ${i} intact`));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('writes small batches as views into a shared pool, each keeping its own bytes', () => {
    const chunks: Uint8Array[] = [];
    const w = new FrameWriter((c) => chunks.push(c));
    for (let i = 0; i < 10; i++) {
      w.push(new Uint8Array([i, i + 1, i + 2]), false);
      w.flush();
    }
    // Ten small writes, at most two pool buffers: not an ArrayBuffer of its own per write.
    assert.ok(new Set(chunks.map((c) => c.buffer)).size <= 2);
    assert.deepEqual(decodeAll(chunks).map((f) => [...f]), Array.from({ length: 10 }, (_, i) => [i, i + 1, i + 2]));
  });

  it('copies bodies it does not own, so reusing the source buffer is safe', () => {
    const writes: Uint8Array[] = [];
    const w = new FrameWriter((c) => writes.push(c));
    const src = new Uint8Array(50_000).fill(1);
    w.push(src, false);
    src.fill(2);
    w.flush();
    assert.ok(decodeAll(writes)[0].every((b) => b === 1));
  });

  it('copies a large body it does not own once, into a chunk of its own', () => {
    const writes: Uint8Array[] = [];
    const w = new FrameWriter((c) => writes.push(c));
    w.push(new Uint8Array([5]), false);
    const src = new Uint8Array(40_000).fill(3);
    w.push(src, false);
    w.push2(new Uint8Array([1, 2]), src);
    src.fill(9);
    w.flush();
    assert.deepEqual(writes.map((c) => c.length), [5, 40_004, 40_006], 'the batch so far, then each large frame whole');
    const frames = decodeAll(writes);
    assert.ok(frames[1].every((b) => b === 3));
    assert.deepEqual([...frames[2].subarray(0, 3)], [1, 2, 3]);
  });

  it('hands large frames to a copying stream as they are, in order with the batch, and the batch itself', () => {
    const writes: Uint8Array[] = [];
    const chunks: Uint8Array[] = [];
    const copied: Array<[Uint8Array, Uint8Array]> = [];
    const w = new FrameWriter(
      (c) => chunks.push(c),
      (head, body) => {
        copied.push([head.slice(), body]);
        writes.push(new Uint8Array([...head, ...body]));
      },
    );
    const big = new Uint8Array(30_000).fill(4);
    w.push(new Uint8Array([7]), false);
    w.push(big, false);
    w.push2(new Uint8Array([8, 9]), big);
    w.flush();
    assert.equal(chunks.length, 0, 'a copying stream needs no chunk of its own');
    assert.equal(copied.length, 3);
    assert.deepEqual([...copied[0][0], ...copied[0][1]], [1, 0, 0, 0, 7]);
    assert.equal(copied[1][1], big, 'the body itself, not a copy of it');
    assert.deepEqual([...copied[1][0]], [0x30, 0x75, 0, 0]);
    assert.deepEqual([...copied[2][0]], [0x32, 0x75, 0, 0, 8, 9]);
    const frames = decodeAll(writes);
    assert.deepEqual(frames.map((f) => f.length), [1, 30_000, 30_002]);
  });
});

describe('envelope', () => {
  it('round-trips every kind', () => {
    const p = new Uint8Array([9, 8, 7]);
    const big = 2 ** 53 - 1;
    assert.deepEqual(decodeEnvelope(encodeRequest(big, 1500, p)), { kind: Kind.Request, id: big, deadlineMs: 1500, payload: p });
    assert.deepEqual(decodeEnvelope(encodeResponse(7, p)), { kind: Kind.Response, id: 7, payload: p });
    assert.deepEqual(decodeEnvelope(encodeError(8, p)), { kind: Kind.Error, id: 8, payload: p });
    assert.deepEqual(decodeEnvelope(encodeEvent(p)), { kind: Kind.Event, payload: p });
    assert.deepEqual(decodeEnvelope(encodeCancel(2 ** 40)), { kind: Kind.Cancel, id: 2 ** 40 });
    assert.deepEqual(decodeEnvelope(encodePing(Kind.Ping, 3)), { kind: Kind.Ping, token: 3n });
    assert.deepEqual(decodeEnvelope(encodePing(Kind.Pong, 2n ** 64n - 1n)), { kind: Kind.Pong, token: 2n ** 64n - 1n });
    assert.deepEqual(decodeEnvelope(encodeClose(p)), { kind: Kind.Close, payload: p });
    const s = new HeaderScratch();
    const cat = (head: Uint8Array, payload = new Uint8Array(0)) => new Uint8Array([...head, ...payload]);
    assert.deepEqual(decodeEnvelope(cat(openHeader(s, big, 250, OpenFlag.ResultStream | OpenFlag.RequestStream, 32), p)), {
      kind: Kind.Open,
      id: big,
      deadlineMs: 250,
      flags: 3,
      credit: 32,
      payload: p,
    });
    assert.deepEqual(decodeEnvelope(cat(streamHeader(s, Kind.Item, 9, StreamDir.Down), p)), { kind: Kind.Item, id: 9, dir: 1, payload: p });
    assert.deepEqual(decodeEnvelope(cat(streamHeader(s, Kind.End, 9, StreamDir.Up))), { kind: Kind.End, id: 9, dir: 0 });
    assert.deepEqual(decodeEnvelope(cat(creditHeader(s, 9, StreamDir.Up, 0xfffffffe))), { kind: Kind.Credit, id: 9, dir: 0, credit: 0xfffffffe });
  });

  it('lays stream envelopes out as documented', () => {
    const s = new HeaderScratch();
    assert.deepEqual([...openHeader(s, 5, 0x0a0b0c0d, 1, 0x20)], [9, 5, 0, 0, 0, 0, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a, 1, 0x20, 0, 0, 0]);
    assert.deepEqual([...streamHeader(s, Kind.Item, 5, StreamDir.Up)], [10, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual([...creditHeader(s, 5, StreamDir.Down, 3)], [12, 5, 0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 0, 0]);
  });

  it('lays a request out as documented: kind, u64 LE id, u32 LE relative deadline, payload', () => {
    const b = encodeRequest(0x0102030405, 0x0a0b0c0d, new Uint8Array([0xee]));
    assert.deepEqual([...b], [1, 0x05, 0x04, 0x03, 0x02, 0x01, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a, 0xee]);
  });

  it('refuses unknown kinds, short headers, trailing bytes and ids past 2^53 with PROTOCOL', () => {
    const bad = [new Uint8Array([]), new Uint8Array([0]), new Uint8Array([0x80, 1]), new Uint8Array([1, 1, 2]), new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0, 0, 1]), new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0x20, 0]),
      // stream kinds: unknown Open flags, a direction other than 0/1, an End or Credit with trailing bytes
      new Uint8Array([9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0]),
      new Uint8Array([10, 1, 0, 0, 0, 0, 0, 0, 0, 2]),
      new Uint8Array([11, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7]),
      new Uint8Array([12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
      new Uint8Array([12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
    ];
    for (const b of bad) assert.throws(() => decodeEnvelope(b), (e: RpcError) => e instanceof RpcError && e.code === 'PROTOCOL', `accepted ${[...b]}`);
  });
});
