/**
 * Values a codec cannot carry: a request is refused on the caller's side before anything is sent,
 * a handler's answer reaches the caller as an error saying it was the answer; either way the
 * connection goes on.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { Node, json, msgpack, unix, type Handler } from '../src/index.js';
import { rejectionOf, tempDir } from './helpers.js';
import { echo } from './fixtures/echo-handler.js';

function circular(): unknown {
  const c: Record<string, unknown> = { name: 'loop' };
  c.self = c;
  return c;
}

describe('values a codec cannot encode', function () {
  this.timeout(20_000);
  for (const [codecName, codec] of [['msgpack', msgpack()], ['json', json()]] as const) {
    for (const where of ['main', 'module'] as const) {
      it(`${codecName}, ${where === 'main' ? 'main-thread' : 'worker-module'} handler: a bad request fails locally, a bad answer names itself; the connection goes on`, async () => {
        const tmp = tempDir();
        const socket = path.join(tmp.dir, 's.sock');
        const handler: Handler | URL = where === 'main' ? { onRequest: echo } : new URL('./fixtures/echo-handler.js', import.meta.url);
        const server = await new Node().serve(unix(socket), handler, { codec }).start();
        const node = await new Node().connect<any, any>(unix(socket), { codec }).start();
        try {
          const bad = await rejectionOf(node.client.call(circular()));
          assert.equal(bad.code, 'INVALID_ARGUMENT');
          assert.match(bad.message, new RegExp(`cannot be encoded as ${codecName === 'json' ? 'JSON' : 'msgpack'}`));
          assert.doesNotMatch(bad.message, /answer/);
          if (codecName === 'json') assert.equal((await rejectionOf(node.client.call({ n: 1n }))).code, 'INVALID_ARGUMENT');
          else assert.equal((await rejectionOf(node.client.call(Symbol('s')))).code, 'INVALID_ARGUMENT');
          // An un-awaited request or a function would go out as {} or nil: refused, naming the mistake.
          const promised = await rejectionOf(node.client.call(Promise.resolve({ type: 'Ping' })));
          assert.equal(promised.code, 'INVALID_ARGUMENT');
          assert.match(promised.message, /a Promise \(or another thenable\) cannot be encoded as .*: await it first/);
          assert.equal((await rejectionOf(node.client.notify({ then: () => {} }))).code, 'INVALID_ARGUMENT');
          assert.match((await rejectionOf(node.client.call(() => 1))).message, /a function cannot be encoded/);

          const answer = await rejectionOf(node.client.call({ type: 'Circular' }));
          assert.equal(answer.code, 'INVALID_ARGUMENT');
          assert.match(answer.message, /the handler's answer cannot be sent/);
          assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
        } finally {
          await node.close();
          await server.close();
          tmp.remove();
        }
      });
    }
  }
});
