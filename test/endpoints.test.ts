/**
 * Several endpoints per service: serve() on several transports, records with several addresses,
 * several instances of a name (file and etcd backends, across processes), load spreading,
 * skipping a dead endpoint, retrying idempotent calls.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { EtcdDiscovery, FileDiscovery, Node, tcp, unix, type RunningNode } from '../src/index.js';
import { etcdInstalled, startEtcd, type EtcdServer } from './etcd-server.js';
import { killInstances, startInstance, waitUntil, type InstanceServer } from './endpoints-helpers.js';
import { rejectionOf, sleep, tempDir } from './helpers.js';

const run = promisify(execFile);
const cli = new URL('../src/cli.js', import.meta.url).pathname;
const fast = { initialDelayMs: 30, maxDelayMs: 300 };
type Tcp = { host: string; port: number };

/** An in-process server that answers with its own name and counts what it served. */
async function named(name: string, options: { hold?: boolean } = {}) {
  const served: unknown[] = [];
  const held: (() => void)[] = [];
  const node = await new Node()
    .serve(tcp('127.0.0.1:0'), {
      onRequest: async (req: unknown) => {
        served.push(req);
        if (options.hold && (req as { hold?: boolean })?.hold) await new Promise<void>((r) => held.push(r));
        return name;
      },
    })
    .start();
  return { node, served, release: () => held.splice(0).forEach((r) => r()), address: tcp(node.addresses[0] as Tcp) };
}

/** Calls `{ type: 'Pid' }` `n` times and counts the answering pids. */
async function pidsOf(node: RunningNode<any, any>, n: number, options = {}): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const { pid } = await node.client.call({ type: 'Pid' }, { timeoutMs: 5000, ...options });
    counts.set(pid, (counts.get(pid) ?? 0) + 1);
  }
  return counts;
}

describe('several endpoints', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => (tmp = tempDir()));
  afterEach(async () => {
    await killInstances();
    tmp.remove();
  });

  it('serve() on several transports: each listens; publish() writes one map entry per address; a waitFor client connects to all', async () => {
    const dir = path.join(tmp.dir, 'reg');
    const discovery = new FileDiscovery({ dir });
    await using server = await new Node({ discovery }).serve([tcp('127.0.0.1:0'), tcp('127.0.0.1:0')], { onRequest: () => 'hi' }).publish('multi').start();
    assert.equal(server.addresses.length, 2);
    const [a, b] = server.addresses as Tcp[];
    const record = JSON.parse(fs.readFileSync(path.join(dir, 'multi.json'), 'utf8'));
    assert.deepEqual(record.map, { '0': `127.0.0.1:${a.port}`, '1': `127.0.0.1:${b.port}` });
    await using client = await new Node({ discovery }).waitFor('multi', { timeoutMs: 5000 }).start();
    assert.deepEqual(client.client.endpoints.map((e) => [e.endpoint, e.state]), [[`127.0.0.1:${a.port}`, 'ready'], [`127.0.0.1:${b.port}`, 'ready']]);
    assert.equal(await client.client.call(null), 'hi');

    // Several kinds at once are served, each reachable on its own; a record holds one kind, so they are not published.
    const sock = path.join(tmp.dir, 'm.sock');
    await using mixed = await new Node().serve([tcp('127.0.0.1:0'), unix(sock)], { onRequest: () => 'both' }).start();
    assert.deepEqual(mixed.addresses.map((x) => x.kind), ['tcp', 'unix']);
    await using viaUnix = await new Node().connect(unix(sock)).start();
    await using viaTcp = await new Node().connect(tcp(mixed.addresses[0] as Tcp)).start();
    assert.equal(await viaUnix.client.call(null), 'both');
    assert.equal(await viaTcp.client.call(null), 'both');
    const refused = await rejectionOf(new Node({ discovery }).serve([tcp('127.0.0.1:0'), unix(path.join(tmp.dir, 'n.sock'))], { onRequest: () => 0 }).publish('mixed').start());
    assert.equal(refused.code, 'INVALID_ARGUMENT');
    assert.match(refused.message, /one transport kind/);
    assert.equal(fs.existsSync(path.join(tmp.dir, 'n.sock')), false, 'a refused start cleans up its listeners');
  });

  it('round-robin spreads calls evenly over the ready endpoints (each server counts)', async () => {
    const [a, b, c] = await Promise.all([named('a'), named('b'), named('c')]);
    try {
      await using client = await new Node().connect([a.address, b.address, c.address]).start();
      const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => client.client.call(i)));
      assert.deepEqual([a.served.length, b.served.length, c.served.length], [10, 10, 10]);
      assert.deepEqual(new Set(answers), new Set(['a', 'b', 'c']));
    } finally {
      await Promise.all([a.node.close(), b.node.close(), c.node.close()]);
    }
  });

  it('least-in-flight sends calls to the endpoint with fewest calls pending; round-robin would not', async () => {
    const [slow, quick] = await Promise.all([named('slow', { hold: true }), named('quick')]);
    try {
      await using client = await new Node().connect([slow.address, quick.address], { balance: 'least-in-flight' }).start();
      const stuck = client.client.call({ hold: true });
      await waitUntil(() => slow.served.length === 1, 2000, 'the held call reaches the first endpoint');
      for (let i = 0; i < 6; i++) assert.equal(await client.client.call({ i }, { timeoutMs: 2000 }), 'quick');
      assert.equal(slow.served.length, 1);
      assert.equal(client.client.pending, 1);
      slow.release();
      assert.equal(await stuck, 'slow');

      // The same with round-robin: the second call goes to the busy endpoint and stays there.
      await using rr = await new Node().connect([slow.address, quick.address]).start();
      const held = rr.client.call({ hold: true });
      assert.equal(await rr.client.call({ i: 0 }, { timeoutMs: 2000 }), 'quick');
      const blocked = rejectionOf(rr.client.call({ hold: true }, { timeoutMs: 300 }));
      assert.equal((await blocked).code, 'TIMEOUT');
      slow.release();
      assert.equal(await held, 'slow');
    } finally {
      slow.release();
      await Promise.all([slow.node.close(), quick.node.close()]);
    }
  });

  for (const reconnect of [false, true]) {
    it(`one of two servers dies: calls continue on the other${reconnect ? ', and come back to it after its restart' : ''}`, async () => {
      const servers = [await startInstance({ transports: [{ kind: 'tcp', port: 0 }] }), await startInstance({ transports: [{ kind: 'tcp', port: 0 }] })];
      const [a, b] = servers.map((s) => s.addresses[0] as Tcp);
      await using client = await new Node().connect<any, any>([tcp(a), tcp(b)], { reconnect: reconnect && fast }).start();
      assert.deepEqual([...(await pidsOf(client, 10)).entries()].sort(), [[servers[0].pid, 5], [servers[1].pid, 5]].sort());
      await servers[0].kill();
      // Every idempotent call succeeds, on the survivor, including those sent before the death is noticed.
      const after = await pidsOf(client, 20, { idempotent: true });
      assert.deepEqual([...after.keys()], [servers[1].pid]);
      const dead = client.client.endpoints.find((e) => e.endpoint === `127.0.0.1:${a.port}`)!;
      assert.ok(reconnect ? dead.state !== 'ready' && dead.state !== 'closed' : dead.state === 'closed', dead.state);
      assert.equal(client.client.state, 'ready');
      if (reconnect) {
        const again = await startInstance({ transports: [{ kind: 'tcp', port: a.port }] });
        await waitUntil(() => client.client.endpoints.every((e) => e.state === 'ready'), 5000, 'the restarted endpoint is ready');
        assert.ok((await pidsOf(client, 10)).get(again.pid)! >= 4, 'calls go to the restarted server again');
      }
    });
  }

  it('a call in flight on a dying connection: CLOSED unless idempotent, which is retried on another endpoint', async () => {
    const servers = [await startInstance({ transports: [{ kind: 'tcp', port: 0 }] }), await startInstance({ transports: [{ kind: 'tcp', port: 0 }] })];
    const transports = servers.map((s) => tcp(s.addresses[0] as Tcp));
    await using plain = await new Node().connect<any, any>(transports).start();
    await using retrying = await new Node().connect<any, any>(transports).start();
    // Round-robin: of two calls in a row, one lands on each server; each waits 800 ms there.
    const plainCalls = [0, 1].map((i) => plain.client.call({ type: 'Wait', tag: `p${i}`, ms: 800 }).then((v) => v, (e) => e));
    const retried = [0, 1].map((i) => retrying.client.call({ type: 'Wait', tag: `r${i}`, ms: 800 }, { idempotent: true, timeoutMs: 10_000 }).then((v) => v, (e) => e));
    await sleep(200);
    await servers[0].kill();
    const plainResults = await Promise.all(plainCalls);
    assert.deepEqual(plainResults.map((r) => r.code ?? r.type).sort(), ['CLOSED', 'Waited']);
    assert.deepEqual(await Promise.all(retried), [
      { type: 'Waited', aborted: false },
      { type: 'Waited', aborted: false },
    ]);
    // With no other endpoint to go to, an idempotent call fails with why it failed.
    await using single = await new Node().connect<any, any>(transports[1]).start();
    const lone = rejectionOf(single.client.call({ type: 'Wait', ms: 5000 }, { idempotent: true }));
    await sleep(200);
    await servers[1].kill();
    assert.equal((await lone).code, 'CLOSED');
  });

  it('the file backend: two processes publish one name as instances; a client spreads over both; a killed one disappears', async () => {
    const dir = path.join(tmp.dir, 'reg');
    const discovery = new FileDiscovery({ dir });
    const one = await startInstance({ transports: [{ kind: 'tcp', port: 0 }], publish: 'pool', shared: true, dir });
    const two = await startInstance({ transports: [{ kind: 'tcp', port: 0 }, { kind: 'tcp', port: 0 }], publish: 'pool', shared: true, instance: 'second', dir });
    assert.deepEqual(fs.readdirSync(dir).sort(), [`pool@${await instanceOf(discovery, one)}.json`, 'pool@second.json'].sort());
    // Each record keeps the original's shape; `two` serves two addresses, so its map has two entries.
    assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(path.join(dir, 'pool@second.json'), 'utf8')).map), ['0', '1']);
    assert.equal((await rejectionOf(discovery.publish('pool', { transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': '127.0.0.1:1' } }))).code, 'BUSY', 'an exclusive publish of a shared name');
    const ls = await run(process.execPath, [cli, 'ls', '--dir', dir]);
    assert.match(ls.stdout, /^pool@second\s+alive\s+tcp\/msgpack\s+\S+ \S+\s+\d+$/m);

    await using client = await new Node({ discovery }).waitFor<any, any>('pool', { timeoutMs: 5000, reconnect: fast }).start();
    assert.equal(client.client.endpoints.length, 3);
    const counts = await pidsOf(client, 12);
    assert.deepEqual([counts.get(one.pid), counts.get(two.pid)], [4, 8], 'round-robin over three endpoints, two of them in one process');

    await two.kill();
    assert.deepEqual([...(await pidsOf(client, 10, { idempotent: true })).keys()], [one.pid], 'calls keep succeeding on the live instance');
    await waitUntil(() => client.client.endpoints.length === 1, 5000, "the killed instance's endpoints are dropped");
    assert.deepEqual((await discovery.lookupAll('pool')).map((e) => e.record.owner?.pid), [one.pid]);

    // A third instance appears: the client sees it without being asked.
    const three = await startInstance({ transports: [{ kind: 'tcp', port: 0 }], publish: 'pool', shared: true, dir });
    await waitUntil(() => client.client.endpoints.filter((e) => e.state === 'ready').length === 2, 5000, 'the new instance is connected');
    assert.ok((await pidsOf(client, 10)).get(three.pid)! >= 4);
    // The dead instance's file is cleaned up by the next publisher; a closing one removes its own.
    assert.equal(fs.existsSync(path.join(dir, 'pool@second.json')), false);
    await three.kill('SIGTERM');
    assert.deepEqual(fs.readdirSync(dir), [`pool@${await instanceOf(discovery, one)}.json`]);
  });

  describe('with etcd', function () {
    let etcd: EtcdServer;
    const backends: EtcdDiscovery[] = [];
    const prefix = `endpoints-${process.pid}/`;
    before(async function () {
      if (!etcdInstalled()) {
        if (process.env.CI) throw new Error('etcd is not installed (.ci/run installs Debian etcd-server)');
        this.skip();
      }
      etcd = await startEtcd();
    });
    after(async () => {
      for (const b of backends) await b.close().catch(() => {});
      await etcd?.stop();
    });

    it('two processes publish instances of one name (a key and a lease each); the client spreads over both; a SIGKILLed one expires and calls go on', async () => {
      const etcdOptions = { url: etcd.url, prefix, ttlSeconds: 2 };
      const one = await startInstance({ transports: [{ kind: 'tcp', port: 0 }], publish: 'svc', shared: true, instance: 'one', etcd: etcdOptions });
      const two = await startInstance({ transports: [{ kind: 'tcp', port: 0 }], publish: 'svc', shared: true, instance: 'two', etcd: etcdOptions });
      const discovery = new EtcdDiscovery({ hosts: etcd.url, prefix });
      backends.push(discovery);
      assert.deepEqual((await discovery.list()).map((e) => [e.name, e.instance]), [['svc', 'one'], ['svc', 'two']]);
      await using client = await new Node({ discovery }).waitFor<any, any>('svc', { timeoutMs: 5000, reconnect: fast }).start();
      assert.equal(client.client.endpoints.length, 2);
      assert.deepEqual([...(await pidsOf(client, 10)).values()], [5, 5]);

      await one.kill();
      const t0 = Date.now();
      let calls = 0;
      // Calls keep succeeding on the other while the killed one's record expires (its lease: 2 s).
      while (client.client.endpoints.length > 1) {
        assert.ok(Date.now() - t0 < 10_000, 'the killed instance was not dropped within 10 s');
        assert.equal((await client.client.call({ type: 'Pid' }, { timeoutMs: 5000, idempotent: true })).pid, two.pid);
        calls++;
        await sleep(20);
      }
      assert.ok(calls > 10, `${calls} calls made while the record expired`);
      assert.deepEqual((await discovery.lookupAll('svc')).map((e) => e.instance), ['two']);
      assert.deepEqual(client.client.endpoints.map((e) => e.state), ['ready']);
    });
  });
});

/** The instance id a server process published under (the file backend names it). */
async function instanceOf(discovery: FileDiscovery, server: InstanceServer): Promise<string | undefined> {
  return (await discovery.list()).find((e) => e.record.owner?.pid === server.pid)?.instance;
}
