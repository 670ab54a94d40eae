/** Deadlines and cancellation: the caller rejects at once, and the handler's ctx.signal fires. */
import assert from 'node:assert/strict';
import { Node, tcp, type RunningNode } from '../src/index.js';
import { createCodec, msgpack } from '../src/codec/index.js';
import { Session } from '../src/session/session.js';
import { Kind } from '../src/protocol/envelope.js';
import { rejectionOf, sleep, startServer, type ChildServer } from './helpers.js';

for (const handler of ['module', 'main'] as const) {
  describe(`cancellation and deadlines (${handler} handler)`, function () {
    this.timeout(20_000);
    let server: ChildServer;
    let node: RunningNode<any, any>;
    before(async () => {
      server = await startServer({ transport: 'tcp', handler });
      node = await new Node().connect(tcp(server.address as any)).start();
    });
    after(async () => {
      await node?.close();
      await server?.kill();
    });

    async function seenBy(tag: string) {
      // The cancel frame races our next call; poll briefly for the handler's record.
      for (let i = 0; i < 50; i++) {
        const seen = await node.client.call({ type: 'Seen', tag });
        if (seen.length > 0) return seen;
        await sleep(20);
      }
      return [];
    }

    it('a timeout rejects with TIMEOUT on time and aborts the handler with TIMEOUT', async () => {
      const t0 = Date.now();
      const err = await rejectionOf(node.client.call({ type: 'Wait', tag: `t-${handler}` }, { timeoutMs: 150 }));
      const took = Date.now() - t0;
      assert.equal(err.code, 'TIMEOUT');
      assert.ok(took >= 140 && took < 2000, `rejected after ${took} ms`);
      const seen = await seenBy(`t-${handler}`);
      assert.equal(seen.length, 1, 'the handler saw its signal abort');
      assert.equal(seen[0].deadline, true, 'the handler saw the deadline');
      // Whichever came first at the server, the cancel frame or its own deadline timer:
      assert.ok(['TIMEOUT', 'CANCELLED'].includes(seen[0].reason), `reason ${seen[0].reason}`);
    });

    it('an AbortSignal rejects with CANCELLED at once and the handler sees CANCELLED', async () => {
      const ac = new AbortController();
      const p = node.client.call({ type: 'Wait', tag: `c-${handler}` }, { signal: ac.signal });
      await sleep(50);
      const t0 = Date.now();
      ac.abort();
      const err = await rejectionOf(p);
      assert.equal(err.code, 'CANCELLED');
      assert.ok(Date.now() - t0 < 100, 'rejected locally, without waiting for the server');
      const seen = await seenBy(`c-${handler}`);
      assert.deepEqual(seen, [{ id: `c-${handler}`, reason: 'CANCELLED', deadline: false }]);
    });

    it('an already-aborted signal rejects without sending', async () => {
      const err = await rejectionOf(node.client.call({ type: 'Ping' }, { signal: AbortSignal.abort() }));
      assert.equal(err.code, 'CANCELLED');
    });

    it('a call that finishes before its deadline resolves normally', async () => {
      assert.deepEqual(await node.client.call({ type: 'Wait', ms: 20, tag: 'fast' }, { timeoutMs: 5000 }), { type: 'Waited', aborted: false });
    });

    it('timeoutMs Infinity means no time limit, and one no timer can hold is refused', async () => {
      // A timer fires a delay over 2^31-1 ms after 1 ms: such a call used to time out at once.
      assert.deepEqual(await node.client.call({ type: 'Wait', ms: 30, tag: 'inf' }, { timeoutMs: Infinity }), { type: 'Waited', aborted: false });
      let items = 0;
      for await (const _ of node.client.stream({ type: 'Count', n: 3 }, { timeoutMs: Infinity })) items++;
      assert.equal(items, 3);
      for (const timeoutMs of [2 ** 31, 1e12, -1, NaN, '50']) {
        const err = await rejectionOf(node.client.call({ type: 'Ping' }, { timeoutMs: timeoutMs as number }));
        assert.equal(err.code, 'INVALID_ARGUMENT', `timeoutMs ${String(timeoutMs)}`);
        assert.match(err.message, /timeoutMs must be a number of ms from 0 to 2\^31-1/);
        const streamErr = await rejectionOf(node.client.stream({ type: 'Count', n: 1 }, { timeoutMs: timeoutMs as number })[Symbol.asyncIterator]().next());
        assert.equal(streamErr.code, 'INVALID_ARGUMENT', `stream timeoutMs ${String(timeoutMs)}`);
      }
      // The connection is unharmed.
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
    });
  });
}

describe('a call whose set-up throws', function () {
  this.timeout(5000);

  it('rejects (never throws) and leaves nothing pending', async () => {
    const sent: Uint8Array[] = [];
    const session = new Session({
      codec: createCodec(msgpack()),
      peer: { transport: 'test', auth: 'none', connectionId: 1 },
      send: (head) => void sent.push(head.slice()),
    });
    // Something that passes for an AbortSignal until it is listened to.
    const signal = { aborted: false, addEventListener: () => { throw new TypeError('not a real signal'); } } as unknown as AbortSignal;
    let result: Promise<unknown> | undefined;
    assert.doesNotThrow(() => (result = session.call('x', { signal })));
    const err = await rejectionOf(result!);
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.equal(session.pendingCount, 0);
    assert.equal(sent.length, 0, 'nothing was sent');
    // The next call still works its way out.
    void session.call('y');
    assert.equal(sent.length, 1);
  });
});

describe('a deadline longer than a timer holds', function () {
  this.timeout(5000);

  it('from a peer (the wire allows 2^32-1 ms) does not abort the handler at once', async () => {
    const answers: Uint8Array[] = [];
    let signal: AbortSignal | undefined;
    const server = new Session({
      codec: createCodec(msgpack()),
      peer: { transport: 'test', auth: 'none', connectionId: 1 },
      send: (head, payload) => void answers.push(Buffer.concat([head, payload])),
      handler: {
        async onRequest(_req: unknown, ctx) {
          signal = ctx.signal;
          await sleep(50);
          return { aborted: ctx.signal.aborted, deadline: ctx.deadline !== undefined };
        },
      },
    });
    const client = new Session({
      codec: createCodec(msgpack()),
      peer: { transport: 'test', auth: 'none', connectionId: 2 },
      send: (head, payload) => {
        const body = Buffer.concat([head, payload]);
        // The longest deadline the envelope carries, as another implementation may send it.
        if (body[0] === Kind.Request) body.writeUInt32LE(0xffffffff, 9);
        server.receive(body);
      },
    });
    const answer = client.call('x');
    await sleep(60);
    for (const a of answers) client.receive(a);
    assert.deepEqual(await answer, { aborted: false, deadline: true });
    assert.equal(signal?.aborted, false);
  });
});
