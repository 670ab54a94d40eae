/** A server killed with SIGKILL: every in-flight call rejects with a code within 2 s. */
import assert from 'node:assert/strict';
import { Node, tcp, unix } from '../src/index.js';
import { rejectionOf, startServer, tempDir } from './helpers.js';
import path from 'node:path';

for (const kind of ['tcp', 'unix'] as const) {
  for (const handler of ['module', 'main'] as const) {
    it(`in-flight calls reject within 2 s when the ${kind} server (${handler} handler) is killed`, async function () {
      this.timeout(20_000);
      const tmp = tempDir();
      const server = await startServer({ transport: kind, path: path.join(tmp.dir, 's.sock'), handler });
      const node = await new Node().connect(kind === 'tcp' ? tcp(server.address as any) : unix((server.address as any).path)).start();
      try {
        assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
        const calls = Array.from({ length: 20 }, (_, i) => rejectionOf(node.client.call({ type: 'Wait', tag: i })));
        const t0 = Date.now();
        await server.kill('SIGKILL');
        const errors = await Promise.all(calls);
        const took = Date.now() - t0;
        assert.ok(took < 2000, `took ${took} ms`);
        for (const err of errors) assert.equal(err.code, 'CLOSED');
        // Later calls fail at once with the same reason, never hang.
        const later = await rejectionOf(node.client.call({ type: 'Ping' }));
        assert.equal(later.code, 'CLOSED');
      } finally {
        await node.close();
        tmp.remove();
      }
    });
  }
}
