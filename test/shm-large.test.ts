/**
 * Large messages over shm (1-4 MiB): bytes arrive exact on both paths (a main-thread client
 * against a worker-module handler in another process; a main-thread client and a main-thread
 * handler, both on the direct path), what a receiver keeps stays intact while later messages
 * pass through the same ring slots, and each echo copies its payload no more often than the
 * path needs: once into each ring and once out of it at each end that keeps it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Node, shm } from '../src/index.js';
import { nativeAvailable } from '../src/native/addon.js';
import { bytesCopied } from '../src/observe.js';
import { startServer } from './helpers.js';

let serial = 0;
const uniqueName = () => `L${process.pid}-${++serial}`;
const ourSegments = () => fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`ogurpchik-L${process.pid}-`));

const kMiB = 1 << 20;
/** Sizes that fit a ring of kCapacity whole, with odd lengths (misaligned copies) among them. */
const kSizes = [kMiB, 2 * kMiB + 3, 3 * kMiB + 5, 4 * kMiB];
const kCapacity = 8 * kMiB;
/** Envelope, frame and record headers on top of the payload, per copy. */
const kHeaderSlack = 64;

function patterned(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + seed) & 0xff;
  return b;
}

function assertSame(got: unknown, want: Uint8Array, what: string): void {
  assert.ok(got instanceof Uint8Array, `${what}: a Uint8Array`);
  assert.equal(got.byteLength, want.byteLength, `${what}: length`);
  assert.ok(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(want.buffer, want.byteOffset, want.byteLength)), `${what}: bytes exact`);
}

/** Copies per echo made on this thread, in units of the payload's size, over `calls` echoes (after one untimed). */
async function copiesPerEcho(call: (b: Uint8Array) => Promise<unknown>, payload: Uint8Array, calls: number): Promise<number> {
  await call(payload);
  const before = bytesCopied();
  for (let i = 0; i < calls; i++) await call(payload);
  return (bytesCopied() - before) / calls;
}

describe('shm large messages (1-4 MiB)', function () {
  this.timeout(60_000);
  before(function () {
    if (!nativeAvailable()) throw new Error('the native addon is not built: npm run build:native');
  });
  afterEach(() => {
    assert.deepEqual(ourSegments(), [], 'a test left shared-memory segments behind');
  });

  it('main-thread client against a worker-module handler in another process: bytes exact, replies kept stay intact, the client copies each payload once in and once out', async () => {
    const name = uniqueName();
    const server = await startServer({ transport: 'shm', name, capacity: kCapacity, handler: 'module' });
    const client = await new Node().connect<Uint8Array, Uint8Array>(shm(name, { capacity: kCapacity })).start();
    try {
      assert.equal((await client.stats()).endpoints[0].direct, true, 'the client takes the direct path');
      const kept: Array<[Uint8Array, Uint8Array]> = [];
      for (const [i, size] of kSizes.entries()) {
        const payload = patterned(size, i);
        const reply = await client.client.call(payload);
        assertSame(reply, payload, `${size} bytes`);
        assert.ok(!(reply.buffer instanceof SharedArrayBuffer), 'a reply is memory of its own, not a view into a ring');
        kept.push([reply, payload]);
        const per = await copiesPerEcho((b) => client.client.call(b), payload, 4);
        assert.ok(per >= 2 * size && per <= 2 * (size + kHeaderSlack), `${size} bytes: the client copied ${per} bytes per echo, not 2 x ${size}`);
      }
      // Later echoes of other bytes went through the same ring space: what was kept is unchanged.
      for (const [i, [reply, payload]] of kept.entries()) assertSame(reply, payload, `kept reply ${i}`);
    } finally {
      await client.close();
      await server.kill('SIGTERM');
    }
  });

  it('main-thread client and main-thread handler (both direct): bytes exact, requests the handler keeps and replies stay intact, two copies per end', async () => {
    const name = uniqueName();
    const requests: Uint8Array[] = [];
    const server = await new Node().serve(shm(name, { capacity: kCapacity }), {
      onRequest: (req: unknown) => {
        requests.push(req as Uint8Array);
        return req;
      },
    }).start();
    const client = await new Node().connect<Uint8Array, Uint8Array>(shm(name, { capacity: kCapacity })).start();
    try {
      assert.equal((await client.stats()).endpoints[0].direct, true, 'the client takes the direct path');
      const kept: Array<[Uint8Array, Uint8Array]> = [];
      for (const [i, size] of kSizes.entries()) {
        const payload = patterned(size, 7 + i);
        const reply = await client.client.call(payload);
        assertSame(reply, payload, `${size} bytes`);
        const request = requests[requests.length - 1]!;
        assert.ok(!(request.buffer instanceof SharedArrayBuffer), "the handler's request is memory of its own, not a view into a ring");
        kept.push([reply, payload], [request, payload]);
        requests.length = 0;
        // Both ends are on this thread: each copies the payload once into its ring and once out.
        const per = await copiesPerEcho((b) => client.client.call(b), payload, 4);
        requests.length = 0;
        assert.ok(per >= 4 * size && per <= 4 * (size + kHeaderSlack), `${size} bytes: ${per} bytes copied per echo, not 4 x ${size}`);
      }
      for (const [i, [got, payload]] of kept.entries()) assertSame(got, payload, `kept ${i % 2 === 0 ? 'reply' : 'request'} ${i >> 1}`);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('messages larger than the ring arrive exact on both paths (1 MiB rings, 3 MiB + 5 and 4 MiB payloads)', async () => {
    const capacity = kMiB;
    const sizes = [3 * kMiB + 5, 4 * kMiB];
    for (const handler of ['module', 'main'] as const) {
      const name = uniqueName();
      const server = handler === 'module' ? await startServer({ transport: 'shm', name, capacity, handler }) : undefined;
      const local = handler === 'main' ? await new Node().serve(shm(name, { capacity }), { onRequest: (req: unknown) => req }).start() : undefined;
      const client = await new Node().connect<Uint8Array, Uint8Array>(shm(name, { capacity })).start();
      try {
        const replies = await Promise.all(sizes.map((size, i) => client.client.call(patterned(size, 40 + i))));
        replies.forEach((reply, i) => assertSame(reply, patterned(sizes[i]!, 40 + i), `${handler} handler, ${sizes[i]} bytes`));
      } finally {
        await client.close();
        await server?.kill('SIGTERM');
        await local?.close();
      }
    }
  });
});
