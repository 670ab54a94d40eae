/** Keepalive: a peer that stops answering is detected; a quiet but healthy one is not. */
import assert from 'node:assert/strict';
import { Node, tcp } from '../src/index.js';
import { rejectionOf, sleep, startServer } from './helpers.js';

describe('keepalive', function () {
  this.timeout(20_000);

  it('a server process that stops answering (SIGSTOP) is detected within the interval', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    const node = await new Node({ keepAliveMs: 200 }).connect<any, any>(tcp(server.address as any)).start();
    try {
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
      process.kill(server.pid, 'SIGSTOP'); // the kernel keeps the socket open; nobody answers
      const t0 = Date.now();
      const err = await rejectionOf(node.client.call({ type: 'Ping' }));
      const took = Date.now() - t0;
      assert.equal(err.code, 'CLOSED');
      assert.match(err.message, /did not answer a keepalive ping within 200 ms/);
      assert.ok(took < 1500, `detected after ${took} ms`);
    } finally {
      process.kill(server.pid, 'SIGCONT');
      await node.close();
      await server.kill();
    }
  });

  it('an idle, healthy connection stays open across many intervals (pings are answered)', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    const node = await new Node({ keepAliveMs: 50 }).connect<any, any>(tcp(server.address as any)).start();
    try {
      await sleep(600);
      assert.equal(node.client.closedWith, undefined);
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
    } finally {
      await node.close();
      await server.kill();
    }
  });

  it('rejects a bad interval', () => {
    assert.throws(() => new Node({ keepAliveMs: -1 }), (e: any) => e.code === 'INVALID_ARGUMENT');
  });
});
