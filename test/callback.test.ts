/** Both sides can call: a handler calls the client back over the same connection. */
import assert from 'node:assert/strict';
import { Node, tcp, type CallContext } from '../src/index.js';
import { startServer } from './helpers.js';

for (const handler of ['module', 'main'] as const) {
  it(`a ${handler} handler calls the client back through ctx.client`, async function () {
    this.timeout(20_000);
    const server = await startServer({ transport: 'tcp', handler });
    const seen: unknown[] = [];
    const node = await new Node()
      .connect(tcp(server.address as any), {
        handler: {
          onRequest(req: unknown, ctx: CallContext) {
            seen.push({ req, transport: ctx.peer.transport });
            return { type: 'Echo', text: 'client answered' };
          },
        },
      })
      .start();
    try {
      const res = await node.client.call({ type: 'CallBack' });
      assert.deepEqual(res, { type: 'Echo', text: 'client answered' });
      assert.deepEqual(seen, [{ req: { type: 'Echo', text: 'from server' }, transport: 'tcp' }]);
    } finally {
      await node.close();
      await server.kill();
    }
  });
}

it('a client without a handler answers a callback with UNIMPLEMENTED', async function () {
  this.timeout(20_000);
  const server = await startServer({ transport: 'tcp', handler: 'module' });
  const node = await new Node().connect(tcp(server.address as any)).start();
  try {
    const err: any = await node.client.call({ type: "CallBack" }).catch((e) => e);
    assert.equal(err.code, 'REMOTE');
    assert.equal(err.remote.code, 'UNIMPLEMENTED');
  } finally {
    await node.close();
    await server.kill();
  }
});
