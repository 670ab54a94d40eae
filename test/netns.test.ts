/**
 * Across real network hosts: network namespaces joined by a private bridge (test/netns/lab.ts),
 * etcd on one, TLS servers on others, a client on another, each a separate process. Needs root,
 * iproute2, etcd and openssl; skipped with the reason elsewhere, and a failure in CI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { NetnsLab, kIp, labUnavailable, removeStaleNamespaces } from './netns/lab.js';
import { tempDir } from './helpers.js';
import { makeCa, makeLeaf, opensslInstalled, type Pem } from './tls-certs.js';

const kServer = new URL('./fixtures/netns-server.js', import.meta.url);
const kClient = new URL('./fixtures/netns-client.js', import.meta.url);
const kPoolClient = new URL('./fixtures/netns-pool-client.js', import.meta.url);

function whyNot(): string | undefined {
  const lab = labUnavailable();
  if (lab) return lab;
  if (!fs.existsSync('/usr/bin/etcd') && spawnSync('etcd', ['--version'], { stdio: 'ignore' }).status !== 0) return 'etcd is not installed';
  if (!opensslInstalled()) return '/usr/bin/openssl is missing';
  return undefined;
}

describe('network hosts (namespaces): TLS and etcd discovery across machines', function () {
  this.timeout(30_000);
  let lab: NetnsLab;
  let dirs: ReturnType<typeof tempDir>;
  let etcdUrl: string;
  let ca: Pem;
  let rogueCa: Pem;
  let client: Pem;
  const serverTls = (host: string) => {
    const leaf = makeLeaf(dirs.dir, ca, `server-${host}`, { ips: [lab.host(host).address] });
    return { cert: leaf.cert, key: leaf.key, ca: ca.cert, requestCert: true };
  };
  const runClient = async (tls: object, name = 'svc', extra: object = {}) =>
    JSON.parse((await lab.runNode('client', kClient, { etcd: etcdUrl, name, tls, calls: 2, ...extra }))[0] ?? '{}');

  before(async function () {
    this.timeout(60_000);
    const reason = whyNot();
    if (reason) {
      // .ci/run runs as root and installs iproute2, etcd-server and openssl: there this must run.
      if (process.env.CI) throw new Error(`the network-namespace tests cannot run: ${reason}`);
      console.log(`      skipped: ${reason}`);
      this.skip();
    }
    lab = await NetnsLab.create(['etcd', 'server-a', 'server-b', 'client']);
    dirs = tempDir();
    ca = makeCa(dirs.dir, 'ca');
    rogueCa = makeCa(dirs.dir, 'rogue');
    client = makeLeaf(dirs.dir, ca, 'client', { cn: 'client-1' });
    etcdUrl = (await lab.startEtcd('etcd')).url;
    const server = await lab.startNode('server-a', kServer, { etcd: etcdUrl, name: 'svc', host: lab.host('server-a').address, label: 'a', tls: serverTls('server-a') });
    assert.deepEqual(JSON.parse(server.line).address, { kind: 'tcp', host: lab.host('server-a').address, port: JSON.parse(server.line).address.port, tls: true });
  });
  after(async () => {
    await lab?.destroy();
    dirs?.remove();
  });

  it('a client on its own host finds the server through etcd on a third and calls it over mutual TLS', async () => {
    const result = await runClient({ ca: ca.cert, cert: client.cert, key: client.key });
    assert.equal(result.error, undefined, JSON.stringify(result.error));
    assert.deepEqual(result.replies.map((r: any) => [r.from, r.req.n]), [['a', 0], ['a', 1]]);
    const peer = result.replies[0].peer;
    assert.match(peer.address, new RegExp(`^${lab.host('client').address.replaceAll('.', '\\.')}:\\d+$`), 'the server saw the client host address');
    assert.deepEqual(peer.tls, { ...peer.tls, authorized: true, subject: 'O=ogurpchik tests, CN=client-1', protocol: 'TLSv1.3' });
  });

  it('a client that trusts another CA is refused with HANDSHAKE_FAILED and the TLS reason', async () => {
    const result = await runClient({ ca: rogueCa.cert, cert: client.cert, key: client.key });
    assert.equal(result.error?.code, 'HANDSHAKE_FAILED');
    // The server sends its CA with its certificate (it has one configured, to check clients).
    assert.match(result.error.message, new RegExp(`TLS handshake with ${lab.host('server-a').address.replaceAll('.', '\\.')}:\\d+ failed: self-signed certificate in certificate chain`));
    assert.equal(result.error.data?.tlsCode, 'SELF_SIGNED_CERT_IN_CHAIN');
  });

  it('a client without a certificate is refused by the mutual-TLS server', async () => {
    const result = await runClient({ ca: ca.cert });
    assert.equal(result.error?.code, 'HANDSHAKE_FAILED');
    assert.match(result.error.message, /certificate required/);
  });

  it('a second instance on a fourth host serves; once killed by pid, its record expires', async () => {
    const b = await lab.startNode('server-b', kServer, { etcd: etcdUrl, name: 'svc-b', host: lab.host('server-b').address, label: 'b', tls: serverTls('server-b'), ttlSeconds: 1 });
    const served = await runClient({ ca: ca.cert, cert: client.cert, key: client.key }, 'svc-b');
    assert.deepEqual(served.replies?.map((r: any) => r.from), ['b', 'b'], JSON.stringify(served.error));
    await b.kill();
    const t0 = Date.now();
    for (;;) {
      const result = await runClient({ ca: ca.cert, cert: client.cert, key: client.key }, 'svc-b', { timeoutMs: 500 });
      if (result.error?.code === 'UNAVAILABLE' && /did not appear within 500 ms/.test(result.error.message)) break;
      // Until the lease expires the record is there, but nothing listens behind it.
      assert.equal(result.error?.code, 'UNAVAILABLE', JSON.stringify(result));
      assert.match(result.error.message, /cannot connect to/);
      assert.ok(Date.now() - t0 < 10_000, 'the killed server record did not expire within 10 s of a 1 s lease');
    }
  });

  it('two instances of one service on two hosts: calls spread over both; one killed with SIGKILL, calls keep succeeding and its record expires', async function () {
    this.timeout(45_000);
    const start = (host: string, label: string) =>
      lab.startNode(host, kServer, { etcd: etcdUrl, name: 'pool', host: lab.host(host).address, label, tls: serverTls(host), ttlSeconds: 1, shared: true });
    const a = await start('server-a', 'pool-a');
    const b = await start('server-b', 'pool-b');
    const poolClient = await lab.startNode('client', kPoolClient, { etcd: etcdUrl, name: 'pool', tls: { ca: ca.cert, cert: client.cert, key: client.key } });
    try {
      assert.deepEqual(JSON.parse(poolClient.line), { ready: 2 }, `the client did not connect to both instances: ${poolClient.stderr()}`);
      const ask = async (command: string) => {
        poolClient.child.stdin!.write(`${command}\n`);
        return JSON.parse(await poolClient.nextLine(20_000));
      };
      const before = await ask('calls 40');
      assert.deepEqual(before, { from: { 'pool-a': 20, 'pool-b': 20 }, errors: [] }, 'round-robin over the two hosts');
      assert.equal((await ask('status')).records, 2);

      await b.kill('SIGKILL');
      // Calls go on at once: the dead connection is skipped, a call caught on it is retried (idempotent).
      const after = await ask('calls 40');
      assert.deepEqual(after, { from: { 'pool-a': 40 }, errors: [] });

      // Its lease (1 s) lapses: the record goes, and the client drops that endpoint.
      const t0 = Date.now();
      let status = await ask('status');
      while (status.records !== 1 || status.endpoints.length !== 1) {
        assert.ok(Date.now() - t0 < 15_000, `the killed instance's record did not expire: ${JSON.stringify(status)}`);
        await new Promise((r) => setTimeout(r, 200));
        status = await ask('status');
      }
      assert.match(status.endpoints[0].endpoint, new RegExp(lab.host('server-a').address.replaceAll('.', '\\.')));
      assert.deepEqual(await ask('calls 10'), { from: { 'pool-a': 10 }, errors: [] });
    } finally {
      await poolClient.kill();
      await a.kill();
      await b.kill();
    }
  });

  it("the namespaces of a run whose process is gone are removed as stale", () => {
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const ns = `ogt-${dead.stdout}-leftover`;
    assert.equal(spawnSync(kIp, ['netns', 'add', ns]).status, 0);
    try {
      assert.ok(removeStaleNamespaces().includes(ns));
      assert.ok(!spawnSync(kIp, ['netns', 'list'], { encoding: 'utf8' }).stdout.includes(ns));
      // This run's own namespaces are not stale.
      assert.ok(spawnSync(kIp, ['netns', 'list'], { encoding: 'utf8' }).stdout.includes(lab.host('client').ns));
    } finally {
      spawnSync(kIp, ['netns', 'del', ns], { stdio: 'ignore' });
    }
  });
});
