/** A one-to-one server refuses a second client with BUSY while it serves the first. */
import assert from 'node:assert/strict';
import { Node, tcp } from '../src/index.js';
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
