/** The msgpack codec's direct path for byte payloads: the same bytes and values as Packr's, faster. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { createCodec, json, msgpack, sharedCodec, view } from '../src/codec/index.js';
import { RpcError } from '../src/errors.js';
import { encodeRequest, encodeResponse } from '../src/protocol/envelope.js';
import { Session } from '../src/session/session.js';

// The codec's own Packr settings: the reference every byte payload must match.
const reference = new Packr({ useRecords: false, copyBuffers: true, largeBigIntToFloat: false });
const referenceAliasing = new Packr({ useRecords: false, copyBuffers: false, largeBigIntToFloat: false });

/** Lengths around every msgpack bin header boundary, and past the direct path's 4 KiB limit. */
const kEdgeLengths = [0, 1, 31, 32, 33, 255, 256, 4095, 4096, 4097, 65535, 65536, 70000];

function bytesOf(n: number, seed: number, asBuffer: boolean): Uint8Array {
  const b = asBuffer ? Buffer.alloc(n) : new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe('msgpack codec: byte payloads', function () {
  this.timeout(30_000);

  it('encodes a Uint8Array or Buffer of any length to exactly the bytes Packr writes, and decodes it back to an equal copy of the type Packr returns', () => {
    const codec = createCodec(msgpack());
    const check = (value: Uint8Array) => {
      const encoded = codec.encode(value);
      const expected = reference.pack(value);
      assert.deepEqual(Buffer.from(encoded), Buffer.from(expected), `length ${value.length}`);
      // Decoded from a plain Uint8Array (a ring view) and from a Buffer (a socket frame).
      for (const source of [new Uint8Array(encoded), Buffer.from(encoded)]) {
        const got = codec.decode(source) as Uint8Array;
        const want = reference.unpack(source instanceof Buffer ? Buffer.from(source) : new Uint8Array(source)) as Uint8Array;
        assert.equal(got.constructor, want.constructor, `decoded type, length ${value.length}`);
        assert.deepEqual(Buffer.from(got), Buffer.from(value));
        // Not owned: a copy, whatever happens to the source afterwards.
        if (source.length > 0) source.fill(0xee);
        assert.deepEqual(Buffer.from(got), Buffer.from(value), 'a decoded value does not alias its source');
      }
    };
    // The direct path writes its own buffer (Packr would hand back a Buffer).
    assert.ok(!(codec.encode(new Uint8Array(16)) instanceof Buffer), 'bytes take the direct path');
    for (const n of kEdgeLengths) {
      check(bytesOf(n, n, false));
      check(bytesOf(n, n + 1, true));
    }
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 5000 }), fc.boolean(), (raw, asBuffer) => {
        check(asBuffer ? Buffer.from(raw) : raw);
      }),
      { numRuns: 300 },
    );
  });

  it('decodeFrom(bytes, start) is decode(bytes.subarray(start)) for every codec', () => {
    for (const kind of ['msgpack', 'json'] as const) {
      const codec = createCodec({ kind });
      for (const value of [new Uint8Array([1, 2, 3]), { a: 1, b: 'x' }, 'text', 42, null]) {
        if (kind === 'json' && value instanceof Uint8Array) continue;
        const body = new Uint8Array([9, 9, 9, ...codec.encode(value)]);
        assert.deepEqual(codec.decodeFrom(body, 3), codec.decode(body.subarray(3)), `${kind} ${JSON.stringify(value)}`);
      }
    }
    const view = createCodec({ kind: 'view' });
    const body = new Uint8Array([9, 9, 9, ...view.encode(new Uint8Array([5, 6]))]);
    assert.deepEqual((view.decodeFrom(body, 3) as { bytes: Uint8Array }).bytes, (view.decode(body.subarray(3)) as { bytes: Uint8Array }).bytes);
  });

  it('owned bytes decode to a view into them, as Packr does without copyBuffers', () => {
    const codec = createCodec(msgpack());
    for (const n of [0, 16, 300, 70000]) {
      const encoded = new Uint8Array(codec.encode(bytesOf(n, 7, false)));
      const got = codec.decode(encoded, true) as Uint8Array;
      const want = referenceAliasing.unpack(encoded) as Uint8Array;
      assert.deepEqual(Buffer.from(got), Buffer.from(want));
      assert.equal(got.buffer, encoded.buffer, 'the same memory');
      assert.equal(got.byteOffset, want.byteOffset);
    }
  });

  it('an encoding stays valid after any number of later encodes (never rewritten, as Packr keeps its own)', () => {
    const codec = createCodec(msgpack());
    const kept: Array<[Uint8Array, Uint8Array]> = [];
    for (let i = 0; i < 20_000; i++) {
      const value = bytesOf(i % 700, i, i % 2 === 0);
      kept.push([value, codec.encode(value)]);
    }
    for (const [value, encoded] of kept) assert.deepEqual(Buffer.from(encoded), Buffer.from(reference.pack(value)));
  });

  it('anything else takes Packr\'s path: other typed arrays, a bin followed by more bytes, truncated bins', () => {
    const codec = createCodec(msgpack());
    for (const value of [new Uint16Array([1, 2, 3]), new Uint8ClampedArray([1, 2]), { bytes: new Uint8Array([1]) }, [new Uint8Array(2)], 'text']) {
      assert.deepEqual(Buffer.from(codec.encode(value)), Buffer.from(reference.pack(value)));
      const encoded = codec.encode(value);
      assert.deepEqual(codec.decode(new Uint8Array(encoded)), reference.unpack(new Uint8Array(encoded)));
    }
    // Each of these is what Packr makes of it, result or PROTOCOL error alike.
    for (const bytes of [
      [0xc4, 2, 1, 2, 0x05], // a bin, then a fixint
      [0xc4, 3, 1, 2], // a bin shorter than its header says
      [0xc5, 0], // a bin 16 header cut short
      [0xc6, 0, 0, 0, 1], // a bin 32 with its byte missing
    ]) {
      let expected: unknown;
      try {
        expected = reference.unpack(new Uint8Array(bytes));
      } catch {
        expected = 'throws';
      }
      let got: unknown;
      try {
        got = codec.decode(new Uint8Array(bytes));
      } catch (err) {
        assert.equal((err as { code?: string }).code, 'PROTOCOL');
        got = 'throws';
      }
      assert.deepEqual(got, expected, JSON.stringify(bytes));
    }
  });
});

describe('bytes sent as they are', function () {
  this.timeout(10_000);
  const peer = { transport: 'test', auth: 'none' as const, connectionId: 1 };
  const cat = (a: Uint8Array, b: Uint8Array) => Buffer.concat([a, b]);

  it('a call with bytes sends the caller\'s own array behind the envelope and bin headers: the same body as with the encoded payload', async () => {
    for (const n of [0, 16, 255, 256, 65535, 65536, 1 << 20]) {
      const sent: Array<{ body: Buffer; payload: Uint8Array }> = [];
      const session = new Session({ codec: createCodec(msgpack()), peer, send: (head, payload) => void sent.push({ body: cat(head, payload), payload }) });
      const value = bytesOf(n, n, n % 2 === 0);
      void session.call(value).catch(() => {});
      assert.equal(sent.length, 1);
      assert.equal(sent[0].payload, value, 'the payload handed to send is the caller\'s array itself');
      assert.deepEqual(sent[0].body, Buffer.from(encodeRequest(1, 0, reference.pack(value))), `length ${n}`);
      session.close(new RpcError('CLOSED', 'done'));
    }
  });

  it('a handler\'s bytes go back the same way, and the caller decodes them intact', async () => {
    const value = bytesOf(70_000, 3, false);
    const replies: Buffer[] = [];
    const server = new Session({ codec: createCodec(msgpack()), peer, send: (head, payload) => void replies.push(cat(head, payload)), handler: { onRequest: () => value } });
    server.receive(encodeRequest(7, 0, reference.pack('ask')));
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(replies, [Buffer.from(encodeResponse(7, reference.pack(value)))]);
    // And through a pair of sessions: the reply decodes to equal bytes.
    let client!: Session;
    const back = new Session({ codec: createCodec(msgpack()), peer, send: (head, payload) => void queueMicrotask(() => client.receive(cat(head, payload))), handler: { onRequest: (req: Uint8Array) => req } });
    client = new Session({ codec: createCodec(msgpack()), peer, send: (head, payload) => void queueMicrotask(() => back.receive(cat(head, payload))) });
    assert.deepEqual(Buffer.from((await client.call(value)) as Uint8Array), Buffer.from(value));
  });
});

describe('sharedCodec: one codec per kind and limits on a thread', function () {
  this.timeout(20_000);

  it('the same kind and limits (by value) share one instance; another kind, other limits or createCodec get their own', () => {
    const a = sharedCodec(msgpack());
    assert.equal(sharedCodec(msgpack()), a);
    assert.equal(sharedCodec(), a);
    assert.equal(sharedCodec(msgpack(), {}), a);
    assert.notEqual(createCodec(msgpack()), a);
    assert.notEqual(sharedCodec(json()), a);
    assert.notEqual(sharedCodec(view()), a);
    assert.notEqual(sharedCodec(json()), sharedCodec(view()));
    const limited = sharedCodec(msgpack(), { maxBinaryBytes: 4 });
    assert.notEqual(limited, a);
    assert.equal(sharedCodec(msgpack(), { maxBinaryBytes: 4 }), limited);
    assert.notEqual(sharedCodec(msgpack(), { maxBinaryBytes: 5 }), limited);
    // Each keeps its own limits.
    const bin = reference.pack(new Uint8Array(8));
    assert.throws(() => limited.decode(bin), (err: unknown) => RpcError.is(err) && err.code === 'FRAME_TOO_LARGE');
    assert.equal((a.decode(bin) as Uint8Array).length, 8);
  });

  it('an unknown kind is refused and not cached', () => {
    for (let i = 0; i < 2; i++) {
      assert.throws(() => sharedCodec({ kind: 'nope' } as never), (err: unknown) => RpcError.is(err) && err.code === 'INVALID_ARGUMENT');
    }
  });

  it('sessions sharing it keep nothing of one another: encodings interleaved across users stay intact, and a peer\'s msgpack records do not carry into the next payload', () => {
    const shared = sharedCodec(msgpack());
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.jsonValue()), fc.boolean()), { minLength: 1, maxLength: 40 }), (items) => {
        const kept = items.map(([value]) => [value, shared.encode(value)] as const);
        for (const [value, encoded] of kept) assert.deepEqual(Buffer.from(encoded), Buffer.from(reference.pack(value)));
        for (const [, encoded] of kept) assert.deepEqual(shared.decode(encoded), reference.unpack(encoded));
      }),
      { numRuns: 200 },
    );
    // A peer that packs with records defines structures in its payload: they must not outlive it.
    const withRecords = new Packr({ useRecords: true });
    const recordPayload = withRecords.pack([{ a: 1, b: 2 }, { a: 3, b: 4 }]);
    assert.deepEqual(shared.decode(recordPayload), [{ a: 1, b: 2 }, { a: 3, b: 4 }]);
    // 0x40: a positive fixint (64) to a reader without structures, a record reference to one that kept them.
    assert.equal(shared.decode(Uint8Array.of(0x40)), 64);
  });
});
