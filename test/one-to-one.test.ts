/** A one-to-one server refuses a second client with BUSY while it serves the first. */
import assert from 'node:assert/strict';
import { Node, tcp } from '../src/index.js';
import { waitUntil } from './endpoints-helpers.js';
import { refusalOf, sleep, startServer } from './helpers.js';

it('one-to-one rejects a second client with BUSY and keeps serving the first', async function () {
  this.timeout(20_000);
  const server = await startServer({ transport: 'tcp', handler: 'module', oneToOne: true });
  const first = await new Node().connect(tcp(server.address as any)).start();
  try {
    assert.deepEqual(await first.client.call({ type: 'Ping' }), { type: 'Pong' });
    // Without a handshake the refusal comes after the connection: start() rejects with it when it
    // arrives first (now and then), else the client learns it from its calls.
    const second = await refusalOf(new Node().connect(tcp(server.address as any)).start(), async (node) => {
      // Let the refusal and the close that follows it both arrive: the reason must outlive the connection.
      for (let i = 0; i < 100 && node.client.closedWith === undefined; i++) await sleep(20);
      await sleep(50);
      return node.client.call({ type: 'Ping' }, { timeoutMs: 5000 });
    });
    assert.equal(second.err.code, 'BUSY');
    assert.match(second.err.message, /one-to-one/);
    if (second.started) assert.equal(second.closedWith?.code, 'BUSY');
    assert.deepEqual(await first.client.call({ type: 'Echo', text: 'still here' }), { type: 'Echo', text: 'still here' });
    await first.close();
    // Once the first client is gone, another one is served.
    await sleep(50);
    const third = await new Node().connect(tcp(server.address as any)).start();
    assert.deepEqual(await third.client.call({ type: 'Ping' }), { type: 'Pong' });
    await third.close();
  } finally {
    await first.close();
    await server.kill();
  }
});

describe('serve({ maxConnections })', function () {
  this.timeout(20_000);

  it('refuses one client more than the limit with BUSY, keeps serving the others, and serves the next once one has gone', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module', maxConnections: 2 });
    const clients = [await new Node().connect(tcp(server.address as any)).start(), await new Node().connect(tcp(server.address as any)).start()];
    try {
      for (const c of clients) assert.deepEqual(await c.client.call({ type: 'Ping' }), { type: 'Pong' });
      const third = await refusalOf(new Node().connect(tcp(server.address as any)).start(), async (node) => {
        for (let i = 0; i < 100 && node.client.closedWith === undefined; i++) await sleep(20);
        await sleep(50);
        return node.client.call({ type: 'Ping' }, { timeoutMs: 5000 });
      });
      assert.equal(third.err.code, 'BUSY');
      assert.match(third.err.message, /already serves 2 clients \(its maxConnections\)/);
      for (const c of clients) assert.deepEqual(await c.client.call({ type: 'Echo', text: 'still here' }), { type: 'Echo', text: 'still here' });
      await clients.pop()!.close();
      // The freed place goes to the next client (the close may take a moment to reach the server).
      await waitUntil(
        async () => {
          const next = await new Node().connect(tcp(server.address as any)).start();
          try {
            assert.deepEqual(await next.client.call({ type: 'Ping' }, { timeoutMs: 5000 }), { type: 'Pong' });
            return true;
          } catch (err) {
            if ((err as { code?: string }).code !== 'BUSY') throw err;
            return false;
          } finally {
            await next.close();
          }
        },
        5000,
        'the next client is served',
      );
    } finally {
      for (const c of clients) await c.close();
      await server.kill();
    }
  });

  it('takes an integer from 1 up, or Infinity; anything else is INVALID_ARGUMENT', () => {
    const handler = { onRequest: (r: unknown) => r };
    for (const bad of [0, -1, 2.5, Number.NaN, '3']) {
      assert.throws(() => new Node().serve(tcp('127.0.0.1:0'), handler, { maxConnections: bad as number }), (e: any) => e.code === 'INVALID_ARGUMENT' && /maxConnections/.test(e.message), String(bad));
    }
    for (const good of [1, 64, Infinity, undefined]) new Node().serve(tcp('127.0.0.1:0'), handler, { maxConnections: good });
  });
});
