/**
 * Decoding is budgeted (NodeOptions.decodeLimits): a frame under maxFrameBytes builds at most
 * maxExpansion bytes of values per byte of payload beyond 1 MiB, or fails alone, and its decoding
 * does not hold up other connections. Before the budget, a frame of 0x80 bytes (empty msgpack
 * maps) under an array32 header built ~64 bytes of heap per byte.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { Node, json, msgpack, unix, type Handler } from '../src/index.js';
import { createCodec, type Codec, type DecodeLimits } from '../src/codec/index.js';
import { kDefaultDecodeLimits, kExpansionSlack } from '../src/codec/budget.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { Kind, decodeEnvelope, encodeRequest } from '../src/protocol/envelope.js';
import { echo } from './fixtures/echo-handler.js';
import { tempDir } from './helpers.js';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
v8.setFlagsFromString('--no-expose-gc');

const kExpansion = kDefaultDecodeLimits.maxExpansion;
/** What a heap measurement may be off by (other work of this process, a GC's timing). */
const kNoise = 512 * 1024;

function u32(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

/** An msgpack array32 of `count` copies of `item`. */
function msgpackArrayOf(item: readonly number[], count: number): Uint8Array {
  const out = new Uint8Array(5 + item.length * count);
  out.set([0xdd, ...u32(count)]);
  for (let i = 0, at = 5; i < count; i++, at += item.length) out.set(item, at);
  return out;
}

const utf8 = new TextEncoder();

/** The scaled-down shape of issue #21: one array32 of empty maps, `bytes` long. */
function emptyMaps(bytes: number): Uint8Array {
  return msgpackArrayOf([0x80], bytes - 5);
}

/** Hostile msgpack payloads, from hundreds of KiB to a few MiB: tiny containers, binaries and strings in bulk, deep nesting, lying lengths. */
function hostileMsgpack(): fc.Arbitrary<Uint8Array> {
  const count = fc.integer({ min: 200_000, max: 2_500_000 });
  return fc.oneof(
    fc.tuple(fc.constantFrom([0x80], [0x90], [0xc4, 0x00], [0xa2, 0x61, 0x62], [0x81, 0xa0, 0x80], [0x91, 0x90], [0xd6, 0xff, 0, 0, 0, 1], [0xd4, 0x73, 0x00, 0x90]), count).map(([item, n]) =>
      msgpackArrayOf(item, Math.floor(n / item.length)),
    ),
    // Deep: nested fixarrays around nil, then filler to make it large.
    fc.integer({ min: 50, max: 5000 }).map((depth) => Uint8Array.from([...new Array(depth).fill(0x91), 0xc0])),
    // Lengths that claim far more than follows.
    fc.tuple(fc.constantFrom(0xdd, 0xdf, 0xc6, 0xdb, 0xc9), fc.integer({ min: 1 << 20, max: 0xffffffff }), fc.integer({ min: 0, max: 64 })).map(([t, n, tail]) =>
      Uint8Array.from([t, ...u32(n), ...(t === 0xc9 ? [1] : []), ...new Array(tail).fill(0x80)]),
    ),
  );
}

/** Hostile JSON payloads of the same kinds. */
function hostileJson(): fc.Arbitrary<Uint8Array> {
  const count = fc.integer({ min: 100_000, max: 800_000 });
  return fc.oneof(
    fc.tuple(fc.constantFrom('{}', '[]', '"ab"', '{"":{}}', '[[]]', '0'), count).map(([item, n]) => utf8.encode('[' + new Array(n).fill(item).join(',') + ']')),
    fc.integer({ min: 50, max: 5000 }).map((depth) => utf8.encode('['.repeat(depth) + ']'.repeat(depth))),
    count.map((n) => utf8.encode('{' + Array.from({ length: n >> 2 }, (_, i) => `"k${i}":{}`).join(',') + '}')),
  );
}

/** The heap and array buffers this thread holds after a full GC. */
function heldBytes(): number {
  gc();
  gc();
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
}

/**
 * Decodes `payload` and returns what the decoded value holds (0 when decoding refused it, which
 * must be with FRAME_TOO_LARGE or PROTOCOL).
 */
function decodeCost(codec: Codec, payload: Uint8Array): number {
  const before = heldBytes();
  let value: unknown;
  try {
    value = codec.decode(payload);
  } catch (err) {
    assert.ok(['FRAME_TOO_LARGE', 'PROTOCOL'].includes((err as { code?: string }).code!), `refused with ${(err as Error).message}`);
    return 0;
  }
  const grown = heldBytes() - before;
  assert.notEqual(value, undefined);
  return grown;
}

describe('decodeLimits: what one payload may build', function () {
  this.timeout(60_000);

  it('holds for hostile msgpack and JSON: a payload costs at most maxExpansion bytes per byte beyond 1 MiB, or is refused (property)', function () {
    this.timeout(120_000);
    const codecs = { msgpack: createCodec(msgpack()), json: createCodec(json()) };
    fc.assert(
      fc.property(fc.oneof(hostileMsgpack().map((p) => ['msgpack', p] as const), hostileJson().map((p) => ['json', p] as const)), ([kind, payload]) => {
        const grown = decodeCost(codecs[kind], payload);
        const bound = kExpansion * payload.length + kExpansionSlack + kNoise;
        assert.ok(grown <= bound, `${kind} payload of ${payload.length} bytes built ${grown} bytes (bound ${bound})`);
      }),
      // Issue #21's shape, scaled down, is always among the runs.
      { numRuns: 16, examples: [[['msgpack', emptyMaps(3 << 20)]]] },
    );
  });

  it('refuses issue #21 scaled down (3 MiB of empty maps) with FRAME_TOO_LARGE naming maxExpansion, before building it', () => {
    const codec = createCodec(msgpack());
    const err = (() => {
      try {
        codec.decode(emptyMaps(3 << 20));
      } catch (e) {
        return e as { code: string; message: string; data: { limit: string } };
      }
      assert.fail('decoded');
    })();
    assert.equal(err.code, 'FRAME_TOO_LARGE');
    assert.match(err.message, /decodeLimits\.maxExpansion/);
    assert.equal(err.data.limit, 'maxExpansion');
  });

  describe('each limit fails its payload with a code and a message that names it', () => {
    const m = createCodec(msgpack());
    const j = createCodec(json());
    const cases: { limits: DecodeLimits; value: unknown; code: string; name: string }[] = [
      { limits: { maxDepth: 3 }, value: [[[[1]]]], code: 'PROTOCOL', name: 'maxDepth' },
      { limits: { maxArrayLength: 2 }, value: { a: [1, 2, 3] }, code: 'FRAME_TOO_LARGE', name: 'maxArrayLength' },
      { limits: { maxMapSize: 2 }, value: [{ a: 1, b: 2, c: 3 }], code: 'FRAME_TOO_LARGE', name: 'maxMapSize' },
      { limits: { maxStringBytes: 4 }, value: ['hello'], code: 'FRAME_TOO_LARGE', name: 'maxStringBytes' },
      { limits: { maxElements: 5 }, value: [1, 2, 3, 4, 5], code: 'FRAME_TOO_LARGE', name: 'maxElements' },
      { limits: { maxExpansion: 1 }, value: new Array(100_000).fill({ id: 1000, name: 'abcdefgh' }), code: 'FRAME_TOO_LARGE', name: 'maxExpansion' },
    ];
    for (const { limits, value, code, name } of cases) {
      for (const [kind, encoder] of [['msgpack', m], ['json', j]] as const) {
        it(`${name} (${kind})`, () => {
          const payload = encoder.encode(value).slice();
          assert.throws(() => createCodec({ kind }, limits).decode(payload), (err: any) => err.code === code && new RegExp(`decodeLimits\\.${name}`).test(err.message));
          // Within the default limits, the same payload decodes as it did.
          assert.deepEqual(createCodec({ kind }).decode(payload), JSON.parse(JSON.stringify(value)));
        });
      }
    }

    it('maxBinaryBytes (msgpack: a lone bin, and one inside a value)', () => {
      const codec = createCodec(msgpack(), { maxBinaryBytes: 8 });
      for (const value of [new Uint8Array(9), { blob: new Uint8Array(9) }]) {
        assert.throws(() => codec.decode(m.encode(value).slice()), (err: any) => err.code === 'FRAME_TOO_LARGE' && /decodeLimits\.maxBinaryBytes \(8\)/.test(err.message));
      }
      assert.equal((codec.decode(m.encode(new Uint8Array(8)).slice()) as Uint8Array).length, 8);
    });

    it('a length that claims more than the payload holds is PROTOCOL, before anything is allocated for it', () => {
      // Past the size below which no scan runs, so this is the scan's refusal.
      const lie = Uint8Array.from([0x92, 0xdc, 0xff, 0xff, ...new Array(300).fill(0xc0)]);
      assert.throws(() => m.decode(lie), (err: any) => err.code === 'PROTOCOL' && /runs past the end/.test(err.message));
    });

    it("msgpackr's records, bundled strings and references (never sent by ogurpchik) are PROTOCOL", () => {
      const record = Uint8Array.from([0x91, 0xd4, 0x72, 0x40, 0x90, ...new Array(300).fill(0x40)]);
      assert.throws(() => m.decode(record), (err: any) => err.code === 'PROTOCOL' && /extension 0x72/.test(err.message));
    });

    it('legitimate values of every kind msgpack carries still decode', () => {
      const value = { n: [1, -1, 300, -40000, 2 ** 40, 1.5], s: ['', 'é', 'x'.repeat(300)], b: new Uint8Array(300), d: new Date(5), nested: [[[{ a: null, t: true }]]] };
      const payload = new Uint8Array(m.encode(value));
      assert.deepEqual(createCodec(msgpack()).decode(payload), value);
    });

    it('bad decodeLimits are INVALID_ARGUMENT when the node is made', () => {
      for (const decodeLimits of [{ maxDepth: 0 }, { maxDepth: 1e6 }, { maxArrayLength: -1 }, { maxExpansion: 1.5 }, { maxElements: Number.NaN }, 5] as DecodeLimits[]) {
        assert.throws(() => new Node({ decodeLimits }), (err: any) => err.code === 'INVALID_ARGUMENT' && /decodeLimits/.test(err.message));
      }
    });
  });

  describe('end to end: a hostile request fails alone, and other connections are answered meanwhile', () => {
    const kFrame = 8 << 20;
    for (const where of ['main', 'module'] as const) {
      for (const kind of ['msgpack', 'json'] as const) {
        it(`${where === 'main' ? 'main-thread' : 'worker-module'} handler, ${kind}`, async () => {
          const tmp = tempDir();
          const socket = path.join(tmp.dir, 's.sock');
          const codec = kind === 'json' ? json() : msgpack();
          const handler: Handler | URL = where === 'main' ? { onRequest: echo } : new URL('./fixtures/echo-handler.js', import.meta.url);
          const server = await new Node({ maxFrameBytes: kFrame }).serve(unix(socket), handler, { codec }).start();
          const good = await new Node({ maxFrameBytes: kFrame }).connect<any, any>(unix(socket), { codec }).start();
          const raw = net.connect(socket);
          try {
            const c = createCodec(codec);
            // ~4 MiB of tiny containers: what built ~64 bytes of heap per byte and took seconds.
            const hostile = kind === 'json' ? utf8.encode('[' + new Array(1_400_000).fill('{}').join(',') + ']') : emptyMaps(4 << 20);
            const replies: { id: number; kind: number; value: any }[] = [];
            const dec = new FrameDecoder(kFrame);
            let onReply = () => {};
            raw.on('data', (chunk) =>
              dec.push(chunk, (body) => {
                const env = decodeEnvelope(body);
                if (env.kind === Kind.Error || env.kind === Kind.Response) replies.push({ id: env.id, kind: env.kind, value: c.decode(env.payload.slice()) });
                onReply();
              }),
            );
            await new Promise((resolve) => raw.once('connect', resolve));

            // The other connection calls all along; the slowest answer is what a stall would show.
            let slowest = 0;
            let answered = 0;
            let stop = false;
            const pinging = (async () => {
              while (!stop) {
                const t0 = performance.now();
                assert.deepEqual(await good.client.call({ type: 'Ping' }, { timeoutMs: 10_000 }), { type: 'Pong' });
                slowest = Math.max(slowest, performance.now() - t0);
                answered++;
              }
            })();
            await good.client.call({ type: 'Ping' });

            raw.write(encodeFrame(encodeRequest(1, 0, hostile)));
            raw.write(encodeFrame(encodeRequest(2, 0, c.encode({ type: 'Ping' }))));
            await new Promise<void>((resolve) => {
              onReply = () => replies.length === 2 && resolve();
              onReply();
            });
            stop = true;
            await pinging;

            const [first, second] = replies.sort((a, b) => a.id - b.id);
            assert.equal(first.kind, Kind.Error, 'the hostile request was answered with an error');
            assert.equal(first.value.code, 'FRAME_TOO_LARGE');
            assert.match(first.value.message, /decodeLimits\.maxExpansion/);
            // The same connection goes on.
            assert.deepEqual(second, { id: 2, kind: Kind.Response, value: { type: 'Pong' } });
            assert.ok(answered > 0);
            assert.ok(slowest < 1000, `another connection waited ${slowest.toFixed(0)} ms for an answer`);
          } finally {
            raw.destroy();
            await good.close();
            await server.close();
            tmp.remove();
          }
        });
      }
    }
  });
});
