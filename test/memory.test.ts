/**
 * Closed connections give their memory back: each connection's two main <-> worker rings
 * (2 x ringBytes of SharedArrayBuffer) are released once it closes. They used to stay reachable
 * through a comlink call the closed worker never answered, 2 MiB per connection for good.
 */
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Node, tcp } from '../src/index.js';
import { killAllChildren, startServer } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

async function arrayBuffersAfterGc(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return process.memoryUsage().arrayBuffers;
}

describe('memory', function () {
  this.timeout(60_000);
  after(killAllChildren);

  it('100 connections opened and closed leave the rings of none of them behind', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    const transport = tcp(server.address as { host: string; port: number });
    const cycle = async () => {
      const node = await new Node().connect(transport).start();
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
      await node.close();
    };
    for (let i = 0; i < 10; i++) await cycle();
    const before = await arrayBuffersAfterGc();
    for (let i = 0; i < 100; i++) await cycle();
    const grown = (await arrayBuffersAfterGc()) - before;
    // Leaking, 100 connections keep 100 x 2 MiB; released, at most the last few are still held.
    assert.ok(grown < 20 * 2 ** 20, `ArrayBuffer memory grew by ${(grown / 2 ** 20).toFixed(1)} MiB over 100 closed connections`);
    await server.kill('SIGTERM');
  });
});
