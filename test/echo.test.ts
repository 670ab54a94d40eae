/** Echo between two OS processes over tcp and unix, with a worker-module and a main-thread handler. */
import assert from 'node:assert/strict';
import path from 'node:path';
import { Node, json, tcp, unix, type RunningNode } from '../src/index.js';
import { startServer, tempDir, type ChildServer } from './helpers.js';

const transports = ['tcp', 'unix'] as const;
const handlers = ['module', 'main'] as const;
const sizes = [0, 1, 16, 4095, 65_536, 1024 * 1024 + 1, 16 * 1024 * 1024];

function pattern(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + 7) & 0xff;
  return b;
}

for (const kind of transports) {
  for (const handler of handlers) {
    describe(`echo over ${kind}, ${handler} handler, server in another process`, function () {
      this.timeout(60_000);
      let server: ChildServer;
      let node: RunningNode<any, any>;
      let tmp: ReturnType<typeof tempDir>;

      before(async () => {
        tmp = tempDir();
        server = await startServer({ transport: kind, path: path.join(tmp.dir, 's.sock'), handler });
        node = await new Node().connect(kind === 'tcp' ? tcp(server.address as any) : unix((server.address as any).path)).start();
      });

      after(async () => {
        await node?.close();
        await server?.kill('SIGTERM');
        tmp?.remove();
      });

      it('answers the documented Ping/Echo example', async () => {
        assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
        const res = await node.client.call({ type: 'Echo', text: 'hi' });
        assert.equal(res.text, 'hi');
      });

      for (const size of sizes) {
        it(`echoes a ${size}-byte payload byte for byte`, async () => {
          const sent = pattern(size);
          const got = await node.client.call(sent);
          assert.ok(got instanceof Uint8Array, 'a Uint8Array comes back as one');
          assert.equal(got.length, size);
          assert.ok(Buffer.from(got).equals(Buffer.from(sent)), 'bytes differ');
        });
      }

      it('hands the handler bytes as a plain Uint8Array, small or large, as on every other path', async () => {
        for (const n of [16, 100_000]) {
          assert.deepEqual(await node.client.call({ type: 'BytesType', data: new Uint8Array(n) }), { type: 'Uint8Array', length: n });
        }
      });

      it('keeps 500 pipelined calls apart', async () => {
        const calls = Array.from({ length: 500 }, (_, i) => node.client.call({ type: 'Echo', text: `m${i}` }));
        const results = await Promise.all(calls);
        results.forEach((r, i) => assert.equal(r.text, `m${i}`));
      });

      it('reports the peer process id and address to the handler', async () => {
        const res = await node.client.call({ type: 'Pid' });
        assert.equal(res.pid, server.pid, 'the handler runs in the server process');
        assert.equal(res.peer.transport, kind);
        assert.equal(res.peer.auth, 'none');
      });

      if (handler === 'module') {
        it('delivers one-way events to onEvent in order', async () => {
          for (let i = 0; i < 5; i++) await node.client.notify({ n: i });
          const seen = await node.client.call({ type: 'Events' });
          assert.deepEqual(seen.slice(-5), [0, 1, 2, 3, 4].map((n) => ({ n })));
        });
      }
    });
  }
}

describe('json codec', function () {
  this.timeout(30_000);
  it('carries values as JSON between two processes', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module', codec: 'json' });
    const node = await new Node().connect(tcp(server.address as any), { codec: json() }).start();
    try {
      assert.deepEqual(await node.client.call({ type: 'Echo', text: 'ü€😀' }), { type: 'Echo', text: 'ü€😀' });
      assert.deepEqual(await node.client.call([1, 'two', { three: null }]), [1, 'two', { three: null }]);
    } finally {
      await node.close();
      await server.kill();
    }
  });
});
