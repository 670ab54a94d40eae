/** The etcd discovery backend against a real etcd server (installed by .ci/run). */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Node, tcp } from '../src/index.js';
import { EtcdDiscovery } from '../src/discovery/etcd.js';
import { etcdInstalled, startEtcd, type EtcdServer } from './etcd-server.js';
import { rejectionOf, sleep } from './helpers.js';

describe('etcd discovery backend', function () {
  this.timeout(30_000);
  let etcd: EtcdServer;
  const backends: EtcdDiscovery[] = [];
  const backend = (ttlSeconds = 5) => {
    const b = new EtcdDiscovery({ hosts: etcd.url, ttlSeconds, prefix: `test-${process.pid}/`, hostsPrefix: `test-${process.pid}-hosts/` });
    backends.push(b);
    return b;
  };

  before(async function () {
    if (!etcdInstalled()) {
      // CI installs etcd-server; there a missing binary is a failure, elsewhere a skip.
      if (process.env.CI) throw new Error('etcd is not installed (.ci/run installs Debian etcd-server)');
      this.skip();
    }
    etcd = await startEtcd();
  });
  after(async () => {
    for (const b of backends) await b.close().catch(() => {});
    await etcd?.stop();
  });

  it('publish -> waitFor -> call through the builder; close() removes the record', async () => {
    const server = await new Node({ discovery: backend() }).serve(tcp('127.0.0.1:0'), { onRequest: () => 'via etcd' }).publish('svc').start();
    const reader = backend();
    const record = await reader.lookup('svc');
    assert.equal(record?.map['0'], `127.0.0.1:${(server.addresses[0] as { port: number }).port}`);
    assert.equal(record?.owner?.pid, process.pid);
    await using client = await new Node({ discovery: reader }).waitFor('svc', { timeoutMs: 5000 }).start();
    assert.equal(await client.client.call(null), 'via etcd');
    assert.deepEqual((await reader.list()).map((e) => [e.name, e.alive]), [['svc', true]]);
    await server.close();
    assert.equal(await reader.lookup('svc'), undefined, 'the record went with the lease');
  });

  it('waitFor started before publish resolves through the watch; a timeout gives UNAVAILABLE', async () => {
    const waiting = backend().waitFor('later', { timeoutMs: 10_000 });
    await sleep(200);
    await backend().publish('later', { transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': '127.0.0.1:9' } });
    assert.equal((await waiting).map['0'], '127.0.0.1:9');
    assert.equal((await rejectionOf(backend().waitFor('never', { timeoutMs: 200 }))).code, 'UNAVAILABLE');
  });

  it('host entries: registerHost -> lookupHost (what a self-managed vsock({ vm }) client reads) -> unregisterHost', async () => {
    const writer = backend();
    const reader = backend();
    assert.equal(await reader.lookupHost('guest vm'), undefined);
    await writer.registerHost('guest vm', 7);
    assert.equal(await reader.lookupHost('guest vm'), 7);
    assert.ok(!(await reader.list()).some((e) => e.name.includes('guest')), 'host entries are not services');
    await writer.unregisterHost('guest vm');
    assert.equal(await reader.lookupHost('guest vm'), undefined);
    assert.equal((await rejectionOf(writer.registerHost('vm', -1))).code, 'INVALID_ARGUMENT');
    assert.equal((await rejectionOf(reader.lookupHost('a\\b'))).code, 'INVALID_ARGUMENT');
  });

  it("a killed owner's record expires after its lease", async () => {
    const script = new URL('./fixtures/etcd-publish-child.js', import.meta.url).pathname;
    const child = spawn(process.execPath, [script, JSON.stringify({ url: etcd.url, name: 'mortal', ttlSeconds: 2, prefix: `test-${process.pid}/` })], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', () => resolve());
        child.once('exit', (code) => reject(new Error(`publisher exited with ${code}`)));
      });
      const reader = backend();
      assert.ok(await reader.lookup('mortal'), 'published while its owner lives');
      const exited = new Promise((r) => child.once('exit', r));
      process.kill(child.pid!, 'SIGKILL');
      await exited;
      const t0 = Date.now();
      while ((await reader.lookup('mortal')) !== undefined) {
        assert.ok(Date.now() - t0 < 8000, 'the record did not expire within 8 s of a 2 s lease');
        await sleep(200);
      }
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
    }
  });
});
