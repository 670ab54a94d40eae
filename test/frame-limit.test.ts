/**
 * A body over this end's maxFrameBytes fails on its own (FRAME_TOO_LARGE, "not sent") instead of
 * going out: a peer with the same limit would otherwise close the whole connection over it, and
 * every other call on it would fail too.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { Node, unix, type Handler } from '../src/index.js';
import { echo } from './fixtures/echo-handler.js';
import { rejectionOf, tempDir } from './helpers.js';

const kMax = 64 * 1024;

describe('maxFrameBytes on what this end sends', function () {
  this.timeout(20_000);
  for (const where of ['main', 'module'] as const) {
    it(`${where === 'main' ? 'main-thread' : 'worker-module'} handler: an oversize request, answer or event fails alone; the connection goes on`, async () => {
      const tmp = tempDir();
      const socket = path.join(tmp.dir, 's.sock');
      const handler: Handler | URL = where === 'main' ? { onRequest: echo, onEvent: () => {} } : new URL('./fixtures/echo-handler.js', import.meta.url);
      const server = await new Node({ maxFrameBytes: kMax }).serve(unix(socket), handler).start();
      const node = await new Node({ maxFrameBytes: kMax }).connect<any, any>(unix(socket)).start();
      try {
        const waiting = node.client.call({ type: 'Wait', ms: 300 });

        const request = await rejectionOf(node.client.call(new Uint8Array(kMax + 1)));
        assert.equal(request.code, 'FRAME_TOO_LARGE');
        assert.match(request.message, /a request of \d+ bytes exceeds maxFrameBytes \(65536\): not sent/);
        assert.equal((await rejectionOf(node.client.call({ text: 'x'.repeat(kMax) }))).code, 'FRAME_TOO_LARGE');

        const answer = await rejectionOf(node.client.call({ type: 'Blob', n: kMax + 1 }));
        assert.equal(answer.code, 'FRAME_TOO_LARGE');
        assert.match(answer.message, /the handler's answer of \d+ bytes exceeds maxFrameBytes/);

        assert.equal((await rejectionOf(node.client.notify(new Uint8Array(kMax + 1)))).code, 'FRAME_TOO_LARGE');

        // Nothing else was touched: the call in flight, and later ones, complete.
        assert.deepEqual(await waiting, { type: 'Waited', aborted: false });
        assert.equal((await node.client.call({ type: 'Blob', n: kMax - 64 })).length, kMax - 64);
        assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
      } finally {
        await node.close();
        await server.close();
        tmp.remove();
      }
    });
  }

  it('an oversize stream item fails its stream alone', async () => {
    const tmp = tempDir();
    const socket = path.join(tmp.dir, 's.sock');
    const server = await new Node({ maxFrameBytes: kMax })
      .serve(unix(socket), {
        async *onRequest(req: any) {
          if (req === 'ping') return;
          yield 1;
          yield new Uint8Array(kMax + 1);
        },
      })
      .start();
    const node = await new Node({ maxFrameBytes: kMax }).connect<any, any>(unix(socket)).start();
    try {
      const got: unknown[] = [];
      const err = await rejectionOf(
        (async () => {
          for await (const item of node.client.stream('go')) got.push(item);
        })(),
      );
      assert.equal(err.code, 'FRAME_TOO_LARGE');
      assert.deepEqual(got, [1]);
      const again: unknown[] = [];
      for await (const item of node.client.stream('ping')) again.push(item);
      assert.deepEqual(again, []);
    } finally {
      await node.close();
      await server.close();
      tmp.remove();
    }
  });
});
