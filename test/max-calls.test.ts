/** serve({ maxConcurrentCalls }): a connection's calls beyond the limit get BUSY; nothing else is affected. */
import assert from 'node:assert/strict';
import net from 'node:net';
import { Node, RpcError, tcp, type RunningNode } from '../src/index.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { Kind, decodeEnvelope, encodeRequest } from '../src/protocol/envelope.js';
import { createCodec } from '../src/codec/index.js';
import { waitUntil } from './endpoints-helpers.js';
import { rejectionOf, sleep, startServer, type ChildServer } from './helpers.js';

const codec = createCodec();
const hold = (key: string) => ({ type: 'Hold', key });
const release = (key: string) => ({ type: 'Release', key });
const echo = { type: 'Echo', text: 'x' };

/** Calls `echo` until it is answered (up to 5 s): a slot frees once its handler has finished, which the caller cannot see. */
async function answeredSoon(node: RunningNode<any, any>): Promise<void> {
  await waitUntil(
    async () => {
      try {
        assert.deepEqual(await node.client.call(echo), { type: 'Echo', text: 'x' });
        return true;
      } catch (err) {
        if ((err as RpcError).code !== 'BUSY') throw err;
        return false;
      }
    },
    5000,
    'a call is answered once a place is free',
  );
}

for (const handler of ['module', 'main'] as const) {
  describe(`serve({ maxConcurrentCalls }) (${handler} handler)`, function () {
    this.timeout(20_000);
    let server: ChildServer;
    let a: RunningNode<any, any>;
    let b: RunningNode<any, any>;

    before(async () => {
      server = await startServer({ transport: 'tcp', handler, maxConcurrentCalls: 2 });
      a = await new Node().connect(tcp(server.address as any)).start();
      b = await new Node().connect(tcp(server.address as any)).start();
    });
    after(async () => {
      await a?.close();
      await b?.close();
      await server?.kill();
    });

    it('a call beyond the limit is answered at once with BUSY; the held calls, the connection and other connections carry on', async () => {
      const first = a.client.call(hold('a1'));
      const second = a.client.call(hold('a2'));
      const err = await rejectionOf(a.client.call(echo, { timeoutMs: 5000 }));
      assert.ok(RpcError.is(err), String(err));
      assert.equal(err.code, 'BUSY');
      assert.match(err.message, /maxConcurrentCalls/);
      assert.deepEqual(err.data, { max: 2 });
      // Another connection has its own count: two held calls of its own, and answers meanwhile.
      const other = b.client.call(hold('b1'));
      assert.deepEqual(await b.client.call(echo), { type: 'Echo', text: 'x' });
      // Events are not calls: they get through to release the held ones.
      await a.client.notify(release('a1'));
      assert.deepEqual(await first, { type: 'Released', key: 'a1' });
      // Its handler has finished (the answer came after it): the place is free again.
      assert.deepEqual(await a.client.call(echo), { type: 'Echo', text: 'x' });
      await a.client.notify(release('a2'));
      await b.client.notify(release('b1'));
      assert.deepEqual(await second, { type: 'Released', key: 'a2' });
      assert.deepEqual(await other, { type: 'Released', key: 'b1' });
      assert.equal(a.client.closedWith, undefined);
    });

    it('a cancelled call keeps its place until its handler has finished', async () => {
      const first = a.client.call(hold('c1'));
      const abort = new AbortController();
      const second = a.client.call(hold('c2'), { signal: abort.signal });
      abort.abort();
      assert.equal((await rejectionOf(second)).code, 'CANCELLED');
      // The cancel went out before this call; the held handler ignores it and still runs.
      assert.equal((await rejectionOf(a.client.call(echo))).code, 'BUSY');
      await a.client.notify(release('c2'));
      await answeredSoon(a);
      await a.client.notify(release('c1'));
      assert.deepEqual(await first, { type: 'Released', key: 'c1' });
    });

    it('a call answered with a stream counts until its stream has ended', async () => {
      const first = a.client.call(hold('s1'));
      const items = a.client.stream<number>({ type: 'Count', n: 20 }); // one every 10 ms
      // Its handler has returned the stream, and the stream is still going: it counts.
      const seen = [(await items.next()).value];
      assert.equal((await rejectionOf(a.client.call(echo))).code, 'BUSY');
      for await (const n of items) seen.push(n);
      assert.deepEqual(seen, Array.from({ length: 20 }, (_, i) => i + 1));
      // Its End came after the place was freed.
      assert.deepEqual(await a.client.call(echo), { type: 'Echo', text: 'x' });
      await a.client.notify(release('s1'));
      assert.deepEqual(await first, { type: 'Released', key: 's1' });
    });

    it('a peer that reuses the id of a call being served gets no handler past the limit', async () => {
      const socket = net.connect((server.address as any).port, '127.0.0.1');
      socket.on('error', () => {});
      try {
        const reply = new Promise<{ kind: number; id: number; value: any }>((resolve) => {
          const dec = new FrameDecoder();
          socket.on('data', (chunk) =>
            dec.push(chunk, (body) => {
              const env = decodeEnvelope(body);
              if (env.kind === Kind.Error || env.kind === Kind.Response) resolve({ kind: env.kind, id: (env as { id: number }).id, value: codec.decode(env.payload) });
            }),
          );
        });
        for (const key of ['d1', 'd2', 'd3']) socket.write(encodeFrame(encodeRequest(7, 0, codec.encode(hold(key)))));
        const timeout = sleep(5000).then(() => undefined);
        const first = await Promise.race([reply, timeout]);
        assert.ok(first !== undefined, 'no answer within 5 s: all three requests were let in');
        assert.equal(first.kind, Kind.Error);
        assert.equal(first.id, 7);
        assert.equal(first.value.code, 'BUSY');
      } finally {
        socket.destroy();
        // Their handlers run on: release them (events reach every connection's handler alike).
        for (const key of ['d1', 'd2', 'd3']) await a.client.notify(release(key));
      }
    });
  });
}

describe('serve({ maxConcurrentCalls }) options', function () {
  this.timeout(10_000);

  it('takes an integer from 1 up, or Infinity; anything else is INVALID_ARGUMENT', () => {
    const handler = { onRequest: (r: unknown) => r };
    for (const bad of [0, -1, 1.5, Number.NaN, '2', 2 ** 31]) {
      assert.throws(
        () => new Node().serve(tcp('127.0.0.1:0'), handler, { maxConcurrentCalls: bad as number }),
        (err: unknown) => RpcError.is(err) && err.code === 'INVALID_ARGUMENT' && /maxConcurrentCalls/.test(err.message),
        String(bad),
      );
    }
    for (const good of [1, 1000, Infinity, undefined]) new Node().serve(tcp('127.0.0.1:0'), handler, { maxConcurrentCalls: good });
  });

  it('1 on a main-thread handler: calls take turns', async () => {
    let release!: () => void;
    const server = await new Node()
      .serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => (r === 'hold' ? new Promise((resolve) => (release = () => resolve('held'))) : r) }, { maxConcurrentCalls: 1 })
      .start();
    const client = await new Node().connect(tcp(server.addresses[0] as any)).start();
    try {
      const held = client.client.call('hold');
      assert.equal((await rejectionOf(client.client.call('x'))).code, 'BUSY');
      release();
      assert.equal(await held, 'held');
      assert.equal(await client.client.call('x'), 'x');
    } finally {
      await client.close();
      await server.close();
    }
  });
});

describe('serve({ maxConcurrentCalls }) with several endpoints', function () {
  this.timeout(15_000);

  it('an idempotent call refused with BUSY goes to another endpoint; with none ready the caller gets BUSY', async () => {
    const releases: Array<() => void> = [];
    const a = await new Node()
      .serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => (r === 'hold' ? new Promise((resolve) => releases.push(() => resolve('held'))) : 'A') }, { maxConcurrentCalls: 1 })
      .start();
    const b = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => (r === 'hold' ? 'B held' : 'B') }).start();
    const both = await new Node().connect([tcp(a.addresses[0] as any), tcp(b.addresses[0] as any)]).start();
    const onlyA = await new Node().connect(tcp(a.addresses[0] as any)).start();
    try {
      // Round-robin: one of the two lands on A, whose connection then serves its one call.
      const held = [both.client.call('hold'), both.client.call('hold'), onlyA.client.call('hold')];
      await waitUntil(() => releases.length >= 2, 5000, 'a hold from each client lands on A');
      for (let i = 0; i < 10; i++) assert.equal(await both.client.call('x', { idempotent: true }), 'B');
      // A's other connection is full too, and it has nowhere else to go.
      const err = await rejectionOf(onlyA.client.call('x', { idempotent: true }));
      assert.equal(err.code, 'BUSY');
      for (const release of releases) release();
      assert.deepEqual((await Promise.all(held)).sort(), ['B held', 'held', 'held']);
    } finally {
      await onlyA.close();
      await both.close();
      await a.close();
      await b.close();
    }
  });
});
