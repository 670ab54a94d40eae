/** The etcd discovery backend against a real etcd server (installed by .ci/run). */
import assert from 'node:assert/strict';
import os from 'node:os';
import { Etcd3 } from 'etcd3';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Node, tcp } from '../src/index.js';
import { EtcdDiscovery, type EtcdDiscoveryOptions } from '../src/discovery/etcd.js';
import { etcdInstalled, startEtcd, type EtcdServer } from './etcd-server.js';
import { rejectionOf, sleep, tempDir } from './helpers.js';
import { makeCa, makeLeaf, opensslInstalled, type Pem } from './tls-certs.js';

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

  it('a name another owner holds is refused (BUSY) and survives; an exclusive name and its instances exclude each other', async () => {
    const topology = (port: number) => ({ transport_kind: 'tcp' as const, codec_kind: 'msgpack' as const, map: { '0': `127.0.0.1:${port}` } });
    // Two backends, two etcd clients and leases: as two processes would be.
    const a = backend();
    const b = backend();
    const reader = backend();
    await a.publish('held', topology(1), { owner: 'node-1' });
    assert.equal((await rejectionOf(b.publish('held', topology(2)))).code, 'BUSY');
    assert.equal((await reader.lookup('held'))?.map['0'], '127.0.0.1:1', 'not overwritten');
    await b.unpublish('held');
    assert.equal((await reader.lookup('held'))?.map['0'], '127.0.0.1:1', 'not removed by the refused publisher');
    // Two nodes sharing one backend (one process): told apart by their owner tokens.
    assert.equal((await rejectionOf(a.publish('held', topology(3), { owner: 'another-node' }))).code, 'BUSY');
    // An exclusive name and instances of it exclude each other.
    assert.equal((await rejectionOf(b.publish('held', topology(4), { instance: 'i1' }))).code, 'BUSY');
    await a.publish('many', topology(5), { instance: 'i1' });
    await b.publish('many', topology(6), { instance: 'i2' });
    assert.equal((await rejectionOf(b.publish('many', topology(7)))).code, 'BUSY');
    assert.deepEqual((await reader.lookupAll('many')).map((e) => e.record.map['0']).sort(), ['127.0.0.1:5', '127.0.0.1:6']);
    // Only the owner lets go; then the name is free.
    await a.unpublish('held', { owner: 'another-node' });
    assert.equal((await reader.lookup('held'))?.map['0'], '127.0.0.1:1');
    await a.unpublish('held', { owner: 'node-1' });
    await b.publish('held', topology(8));
    assert.equal((await reader.lookup('held'))?.map['0'], '127.0.0.1:8');
  });

  it('a record a dead process of this host left (its lease not yet expired) is taken over; a foreign host\'s is not', async () => {
    const raw = new Etcd3({ hosts: etcd.url });
    try {
      const put = async (name: string, owner: object) => {
        // A long lease: as if its owner had died a moment ago, well within the TTL.
        const lease = raw.lease(60, { autoKeepAlive: false });
        await lease.put(`test-${process.pid}/${name}`).value(JSON.stringify({ transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': '127.0.0.1:1' }, owner }));
      };
      await put('restarted', { pid: 0x3fffff00, host: os.hostname() });
      await put('elsewhere', { pid: 0x3fffff00, host: 'another-machine' });
      const mine = backend();
      await mine.publish('restarted', { transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': '127.0.0.1:2' } });
      assert.equal((await backend().lookup('restarted'))?.map['0'], '127.0.0.1:2', 'the dead local owner\'s record was replaced');
      assert.equal((await rejectionOf(mine.publish('elsewhere', { transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': '127.0.0.1:3' } }))).code, 'BUSY');
    } finally {
      raw.close();
    }
  });

  it('waitFor started before publish resolves through the watch; a timeout gives UNAVAILABLE', async () => {
    const waiting = backend().waitFor('later', { timeoutMs: 10_000 });
    await sleep(200);
    await backend().publish('later', { transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': '127.0.0.1:9' } });
    assert.equal((await waiting).map['0'], '127.0.0.1:9');
    assert.equal((await rejectionOf(backend().waitFor('never', { timeoutMs: 200 }))).code, 'UNAVAILABLE');
  });

  it('waitFor against an etcd that is not there rejects with UNAVAILABLE at once (before: hung past its timeout)', async () => {
    const gone = new EtcdDiscovery({ hosts: 'http://127.0.0.1:1', prefix: `gone-${process.pid}/` });
    backends.push(gone);
    const t0 = Date.now();
    const err = await rejectionOf(gone.waitFor('svc', { timeoutMs: 20_000 }));
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /ECONNREFUSED/);
    assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
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

describe('etcd discovery backend over TLS', function () {
  this.timeout(30_000);
  let etcd: EtcdServer;
  let tmp: ReturnType<typeof tempDir>;
  let ca: Pem;
  let client: Pem;
  let stranger: Pem;
  const backends: EtcdDiscovery[] = [];
  const backend = (credentials: NonNullable<EtcdDiscoveryOptions['client']>['credentials']) => {
    const b = new EtcdDiscovery({ hosts: etcd.url, prefix: `tls-${process.pid}/`, client: { credentials, dialTimeout: 2000 } });
    backends.push(b);
    return b;
  };

  before(async function () {
    if (!etcdInstalled() || !opensslInstalled()) {
      if (process.env.CI) throw new Error('etcd and openssl are needed (.ci/run installs etcd-server; openssl is in the image)');
      this.skip();
    }
    tmp = tempDir();
    ca = makeCa(tmp.dir, 'ca');
    const server = makeLeaf(tmp.dir, ca, 'etcd', { ips: ['127.0.0.1'] });
    client = makeLeaf(tmp.dir, ca, 'client');
    stranger = makeLeaf(tmp.dir, makeCa(tmp.dir, 'other-ca'), 'stranger');
    etcd = await startEtcd({ tls: { certFile: server.certFile, keyFile: server.keyFile, clientCaFile: ca.certFile } });
  });
  after(async () => {
    for (const b of backends) await b.close().catch(() => {});
    await etcd?.stop();
    tmp?.remove();
  });

  it('with the CA and a client certificate (mutual TLS): publish -> waitFor -> call', async () => {
    const credentials = { rootCertificate: Buffer.from(ca.cert), certChain: Buffer.from(client.cert), privateKey: Buffer.from(client.key) };
    assert.match(etcd.url, /^https:/);
    const server = await new Node({ discovery: backend(credentials) }).serve(tcp('127.0.0.1:0'), { onRequest: () => 'via etcd over TLS' }).publish('secure').start();
    try {
      await using caller = await new Node({ discovery: backend(credentials) }).waitFor('secure', { timeoutMs: 5000 }).start();
      assert.equal(await caller.client.call(null), 'via etcd over TLS');
    } finally {
      await server.close();
    }
  });

  it('without a client certificate, or with one etcd does not trust: UNAVAILABLE, nothing published', async () => {
    const noCert = await rejectionOf(backend({ rootCertificate: Buffer.from(ca.cert) }).publish('refused', { transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': '127.0.0.1:9' } }));
    assert.equal(noCert.code, 'UNAVAILABLE');
    const untrusted = await rejectionOf(
      backend({ rootCertificate: Buffer.from(ca.cert), certChain: Buffer.from(stranger.cert), privateKey: Buffer.from(stranger.key) }).waitFor('refused', { timeoutMs: 3000 }),
    );
    assert.equal(untrusted.code, 'UNAVAILABLE');
    const good = backend({ rootCertificate: Buffer.from(ca.cert), certChain: Buffer.from(client.cert), privateKey: Buffer.from(client.key) });
    assert.equal(await good.lookup('refused'), undefined);
  });
});
