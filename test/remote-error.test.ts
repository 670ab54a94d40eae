/** A handler's throw reaches the caller with its name, message, stack, own properties and cause. */
import assert from 'node:assert/strict';
import { Node, RpcError, tcp } from '../src/index.js';
import { rejectionOf, startServer } from './helpers.js';

for (const handler of ['module', 'main'] as const) {
  it(`a remote error keeps its fields (${handler} handler)`, async function () {
    this.timeout(20_000);
    const server = await startServer({ transport: 'tcp', handler });
    const node = await new Node().connect(tcp(server.address as any)).start();
    try {
      const err: any = await rejectionOf(node.client.call({ type: "Throw", message: "teapot" }));
      assert.equal(err instanceof RpcError, true);
      assert.equal(err.code, 'REMOTE');
      assert.equal(err.message, 'teapot');
      assert.equal(err.remote.name, 'TypeError');
      assert.match(err.remote.stack, /TypeError: teapot/);
      assert.match(err.remote.stack, /echo-handler/, 'the stack is the remote one');
      assert.deepEqual(err.data, { statusCode: 418, details: { field: 'x' } });
      assert.ok(err.cause instanceof Error);
      assert.equal(err.cause.message, 'inner cause');
      // The connection survives a throwing handler.
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
    } finally {
      await node.close();
      await server.kill();
    }
  });
}
