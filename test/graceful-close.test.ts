/** close({ graceMs }): stop listening, refuse new calls, answer the ones being served, then close. */
import assert from 'node:assert/strict';
import { Node, RpcError, tcp, type Handler, type RunningNode } from '../src/index.js';
import { echo, releaseHeld } from './fixtures/echo-handler.js';
import { waitUntil } from './endpoints-helpers.js';
import { rejectionOf, sleep } from './helpers.js';

const moduleUrl = new URL('./fixtures/echo-handler.js', import.meta.url);
const hold = (key: string) => ({ type: 'Hold', key });
const release = (key: string) => ({ type: 'Release', key });

/** Calls until the server refuses as a closing server does (up to 5 s); returns that refusal. */
async function refusal(node: RunningNode<any, any>): Promise<RpcError> {
  let err: RpcError | undefined;
  await waitUntil(
    async () => (err = await node.client.call({ type: 'Echo', text: 'late' }).then(() => undefined, (e: RpcError) => e)) !== undefined,
    5000,
    'the closing server refuses a new call',
  );
  return err!;
}

for (const kind of ['module', 'main'] as const) {
  describe(`close({ graceMs }) (${kind} handler)`, function () {
    this.timeout(15_000);
    const handler: URL | Handler = kind === 'module' ? moduleUrl : { onRequest: echo, onEvent: releaseHeld };
    let server: RunningNode<any, any>;
    let client: RunningNode<any, any>;

    beforeEach(async () => {
      server = await new Node().serve(tcp('127.0.0.1:0'), handler).start();
      client = await new Node().connect(tcp(server.addresses[0] as any)).start();
    });
    afterEach(async () => {
      await client?.close();
      await server?.close();
    });

    it('answers the call being served, refuses new calls with UNAVAILABLE (not run), accepts no connection, then closes that connection', async () => {
      const held = client.client.call(hold('g1'));
      assert.deepEqual(await client.client.call({ type: 'Echo', text: 'before' }), { type: 'Echo', text: 'before' });
      const closing = server.close({ graceMs: 10_000 });
      const err = await refusal(client);
      assert.equal(err.code, 'UNAVAILABLE');
      assert.deepEqual(err.data, { closing: true });
      assert.match(err.message, /not run/);
      // It no longer listens, while the held call is still being served.
      let late: RpcError | undefined;
      await waitUntil(
        async () => (late = await new Node().connect(tcp(server.addresses[0] as any)).start().then((n) => n.close().then(() => undefined), (e: RpcError) => e)) !== undefined,
        5000,
        'the closing server refuses a new connection',
      );
      assert.equal(late!.code, 'UNAVAILABLE');
      // Events still reach the handler: this one lets the held call finish, and its answer arrives.
      await client.client.notify(release('g1'));
      assert.deepEqual(await held, { type: 'Released', key: 'g1' });
      await closing;
      assert.equal(client.client.closedWith?.code, 'CLOSED');
      assert.match(client.client.closedWith!.message, /the server closed/);
    });

    it('after graceMs, a call still being served is cut off with CLOSED', async () => {
      const held = rejectionOf(client.client.call(hold('g2'))); // caught now: it rejects during close()
      await client.client.call(null); // the Hold is being served
      await server.close({ graceMs: 200 });
      assert.equal((await held).code, 'CLOSED');
    });

    it('a close() without graceMs cuts a graceful one short', async function () {
      this.timeout(10_000); // the graceful one alone would take a minute
      const held = rejectionOf(client.client.call(hold('g3'))); // caught now: it rejects during close()
      await client.client.call(null);
      const graceful = server.close({ graceMs: 60_000 });
      await refusal(client);
      await server.close();
      await graceful;
      assert.equal((await held).code, 'CLOSED');
    });

    it('a server with nothing to answer closes at once', async function () {
      this.timeout(10_000); // not the minute of grace
      assert.equal(await client.client.call('x'), 'x');
      await server.close({ graceMs: 60_000 });
      assert.equal(client.client.closedWith?.code, 'CLOSED');
    });

    it("the node's own client: its calls in flight settle within the grace", async () => {
      const other = await new Node().connect(tcp(server.addresses[0] as any)).start();
      try {
        const held = client.client.call(hold('g4'));
        await client.client.call(null);
        const closing = client.close({ graceMs: 10_000 });
        await sleep(50);
        assert.equal(client.client.closedWith, undefined, 'closed before its call settled');
        await other.client.notify(release('g4'));
        assert.deepEqual(await held, { type: 'Released', key: 'g4' });
        await closing;
        assert.equal((client.client.closedWith as RpcError | undefined)?.code, 'CLOSED');
      } finally {
        await other.close();
      }
    });
  });
}

describe('close({ graceMs }) with several endpoints', function () {
  this.timeout(15_000);

  it('an idempotent call that a closing server refused is sent to another endpoint; others get UNAVAILABLE', async () => {
    let releaseA!: () => void;
    const a = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => (r === 'hold' ? new Promise((resolve) => (releaseA = () => resolve('held'))) : 'A') }).start();
    const b = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => (r === 'hold' ? 'B held' : 'B') }).start();
    const client = await new Node().connect([tcp(a.addresses[0] as any), tcp(b.addresses[0] as any)]).start();
    try {
      // Round-robin: one of the two lands on A and is held there, keeping that connection open.
      const first = client.client.call('hold');
      const second = client.client.call('hold');
      await waitUntil(() => releaseA !== undefined, 5000, 'a hold lands on A');
      const closing = a.close({ graceMs: 10_000 });
      const refused = await refusal(client);
      assert.equal(refused.code, 'UNAVAILABLE');
      for (let i = 0; i < 10; i++) assert.equal(await client.client.call('x', { idempotent: true }), 'B');
      releaseA();
      assert.deepEqual([await first, await second].sort(), ['B held', 'held']);
      await closing;
    } finally {
      await client.close();
      await a.close();
      await b.close();
    }
  });

  it('graceMs must be an integer from 0 up to 2^31-1: INVALID_ARGUMENT, and the node stays open', async () => {
    const server = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }).start();
    const client = await new Node().connect(tcp(server.addresses[0] as any)).start();
    try {
      for (const bad of [-1, 1.5, Number.NaN, '100', 2 ** 31]) {
        const err = await rejectionOf(server.close({ graceMs: bad as number }));
        assert.equal(err.code, 'INVALID_ARGUMENT', String(bad));
        assert.match(err.message, /graceMs/);
      }
      assert.equal(await client.client.call('still open'), 'still open');
    } finally {
      await client.close();
      await server.close();
    }
  });
});
