/** Worker-isolate plugins: calls both ways, and a misbehaving plugin never takes the host down. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Node, isolate, tcp } from '../src/index.js';
import { poolHolders } from '../src/main/pool.js';
import { rejectionOf } from './helpers.js';

const plugin = new URL('./fixtures/plugin.js', import.meta.url);

describe('isolate() plugins', function () {
  this.timeout(30_000);

  it('the host calls the plugin, and the plugin calls the host back', async () => {
    const events: unknown[] = [];
    await using node = await new Node()
      .connect<any, any>(isolate(plugin), {
        handler: {
          onRequest: (req: any) => ({ doubled: req.n * 2 }),
          onEvent: (e: unknown) => void events.push(e),
        },
      })
      .start();
    assert.deepEqual(await node.client.call({ type: 'Echo', text: 'hi' }), { type: 'Echo', text: 'hi' });
    assert.deepEqual(await node.client.call({ type: 'CallHost', n: 21 }), { type: 'HostSaid', value: { doubled: 42 } });
    const results = await Promise.all(Array.from({ length: 1000 }, (_, i) => node.client.call({ type: 'Echo', text: String(i) })));
    results.forEach((r, i) => assert.equal(r.text, String(i)));
    assert.deepEqual(events, [{ type: 'hello', from: 'plugin' }], 'onConnect greeted the host');
    const err = await rejectionOf(node.client.call({ type: 'Throw' }));
    assert.equal(err.code, 'REMOTE');
    assert.equal(err.remote.name, 'RangeError');
  });

  it('a node with only isolate plugins starts no connection-worker pool; one with a listener does', async () => {
    const before = poolHolders();
    {
      await using node = await new Node().connect<any, any>(isolate(plugin)).start();
      assert.deepEqual(await node.client.call({ type: 'Echo', text: 'x' }), { type: 'Echo', text: 'x' });
      assert.equal(poolHolders(), before, 'the isolate-only node holds no pool');
    }
    {
      await using _server = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }).start();
      assert.equal(poolHolders(), before + 1, 'a node with a listener holds the pool');
    }
    assert.equal(poolHolders(), before, 'and lets it go on close');
  });

  it('a plugin that throws at load rejects start() with UNAVAILABLE', async () => {
    const err = await rejectionOf(new Node().connect(isolate(new URL('./fixtures/plugin-broken.js', import.meta.url))).start());
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /failed to initialise/);
  });

  it('a plugin that exits rejects pending calls with CLOSED', async () => {
    const node = await new Node().connect<any, any>(isolate(plugin)).start();
    const pending = rejectionOf(node.client.call({ type: 'Exit' }));
    const err = await pending;
    assert.equal(err.code, 'CLOSED');
    assert.match(err.message, /exited with code 5/);
    assert.equal((await rejectionOf(node.client.call({ type: 'Echo', text: 'x' }))).code, 'CLOSED');
    await node.close();
  });

  it('a plugin that runs out of memory is contained: CLOSED, and the host goes on', async () => {
    const node = await new Node().connect<any, any>(isolate(plugin, { resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 8 } })).start();
    const err = await rejectionOf(node.client.call({ type: 'Oom' }));
    assert.equal(err.code, 'CLOSED');
    assert.match(err.message, /memory/);
    await node.close();
    // The host still works: a fresh plugin answers.
    await using again = await new Node().connect<any, any>(isolate(plugin)).start();
    assert.deepEqual(await again.client.call({ type: 'Echo', text: 'alive' }), { type: 'Echo', text: 'alive' });
  });

  it('close() terminates a plugin stuck in while(true) after its close timeout', async () => {
    const node = await new Node().connect<any, any>(isolate(plugin, { closeTimeoutMs: 300 })).start();
    const stuck = rejectionOf(node.client.call({ type: 'Spin' }));
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await node.close();
    const took = Date.now() - t0;
    assert.ok(took >= 250 && took < 5000, `close took ${took} ms`);
    assert.equal((await stuck).code, 'CLOSED');
  });

  it('loads from a file path with "#", "%" and a space in it, and from a relative path', async () => {
    // A path is a name, not a URL: '#' once started a fragment and '%20' an escape.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ogurpchik-iso #1 %20-'));
    try {
      const file = path.join(dir, 'plugin.js');
      fs.copyFileSync(fileURLToPath(plugin), file);
      for (const where of [file, path.relative(process.cwd(), file)]) {
        await using node = await new Node().connect<any, any>(isolate(where)).start();
        assert.deepEqual(await node.client.call({ type: 'Echo', text: where }), { type: 'Echo', text: where });
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('cannot be served', () => {
    assert.throws(() => new Node().serve(isolate(plugin), { onRequest: () => 1 }), /only be connected to/);
  });
});
