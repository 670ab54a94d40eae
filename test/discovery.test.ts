/** publish() and waitFor() through the builder, with the file backend, across processes. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { FileDiscovery, Node, json, tcp } from '../src/index.js';
import { rejectionOf, startServer, tempDir } from './helpers.js';

describe('discovery: publish and waitFor', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  let discovery: FileDiscovery;
  beforeEach(() => {
    tmp = tempDir();
    dir = path.join(tmp.dir, 'reg');
    discovery = new FileDiscovery({ dir });
  });
  afterEach(() => tmp.remove());

  it('publish -> waitFor -> call across two processes; the real bound port is published', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module', publish: 'echo', discoveryDir: dir });
    try {
      const record = JSON.parse(fs.readFileSync(path.join(dir, 'echo.json'), 'utf8'));
      assert.equal(record.transport_kind, 'tcp');
      assert.equal(record.codec_kind, 'msgpack');
      assert.equal(record.map['0'], `127.0.0.1:${(server.address as { port: number }).port}`);
      await using node = await new Node({ discovery }).waitFor<any, any>('echo', { timeoutMs: 5000 }).start();
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
      assert.equal((await node.client.call({ type: 'Pid' })).pid, server.pid);
    } finally {
      await server.kill('SIGKILL');
    }
    // Its owner is dead: the record counts as absent, and a new owner can publish the name.
    assert.equal(await discovery.lookup('echo'), undefined);
    const again = await new Node({ discovery }).serve(tcp('127.0.0.1:0'), { onRequest: () => 'new owner' }).publish('echo').start();
    await using client = await new Node({ discovery }).waitFor('echo', { timeoutMs: 5000 }).start();
    assert.equal(await client.client.call(null), 'new owner');
    await again.close();
    assert.equal(fs.existsSync(path.join(dir, 'echo.json')), false, 'close() removes the record');
  });

  it('waitFor started before publish resolves when the record appears', async () => {
    const waiting = new Node({ discovery }).waitFor<any, any>('late', { timeoutMs: 10_000 }).start();
    await new Promise((r) => setTimeout(r, 200));
    const server = await new Node({ discovery }).serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }).publish('late').start();
    const node = await waiting;
    assert.equal(await node.client.call('hello'), 'hello');
    await node.close();
    await server.close();
  });

  it('refuses a record of another transport or codec kind, and times out with UNAVAILABLE', async () => {
    const server = await new Node({ discovery }).serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }, { codec: json() }).publish('jsony').start();
    try {
      const codecErr = await rejectionOf(new Node({ discovery }).waitFor('jsony', { timeoutMs: 2000 }).start());
      assert.equal(codecErr.code, 'INVALID_ARGUMENT');
      assert.match(codecErr.message, /published as tcp\/json, but this client speaks tcp\/msgpack/);
      const kindErr = await rejectionOf(new Node({ discovery }).waitFor('jsony', { timeoutMs: 2000, transport: 'unix', codec: json() }).start());
      assert.match(kindErr.message, /published as tcp\/json, but this client speaks unix\/json/);
      await using ok = await new Node({ discovery }).waitFor('jsony', { codec: json(), timeoutMs: 2000 }).start();
      assert.equal(await ok.client.call('j'), 'j');
    } finally {
      await server.close();
    }
    assert.equal((await rejectionOf(new Node({ discovery }).waitFor('nobody', { timeoutMs: 200 }).start())).code, 'UNAVAILABLE');
  });

  it('two nodes each publish themselves and wait for the other, at once', async () => {
    const port = () => tcp('127.0.0.1:0');
    const [host, guest] = await Promise.all([
      new Node({ discovery }).serve(port(), { onRequest: () => 'host' }).publish('host').waitFor('guest', { timeoutMs: 10_000 }).start(),
      new Node({ discovery }).serve(port(), { onRequest: () => 'guest' }).publish('guest').waitFor('host', { timeoutMs: 10_000 }).start(),
    ]);
    assert.equal(await host.client.call(null), 'guest');
    assert.equal(await guest.client.call(null), 'host');
    await host.close();
    await guest.close();
    assert.deepEqual(fs.readdirSync(dir), []);
  });
});
