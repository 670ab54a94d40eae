/** Reconnecting clients: restart on the same address, state events, fail-fast vs waitForReady, backoff, re-resolving through discovery with a handshake. */
import assert from 'node:assert/strict';
import path from 'node:path';
import { FileDiscovery, Node, RpcError, isolate, tcp, unix, type ClientStateEvent, type RunningNode, type TransportDescriptor } from '../src/index.js';
import { backoffDelay, reconnectOptions } from '../src/main/reconnect.js';
import { freePort, killInstances, startInstance, waitUntil } from './endpoints-helpers.js';
import { rejectionOf, sleep, tempDir } from './helpers.js';

const fast = { initialDelayMs: 30, maxDelayMs: 300 };

/** Endpoint states in the order the client reported them. */
function recordStates(node: RunningNode<any, any>): ClientStateEvent[] {
  const events: ClientStateEvent[] = [];
  node.client.on('state', (e) => events.push(e));
  return events;
}

describe('reconnect', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => (tmp = tempDir()));
  afterEach(async () => {
    await killInstances();
    tmp.remove();
  });

  it('backoff: exponential from initialDelayMs, capped at maxDelayMs, jitter within its fraction', () => {
    const o = reconnectOptions({ initialDelayMs: 100, maxDelayMs: 1000, multiplier: 2, jitter: 0 })!;
    assert.deepEqual([1, 2, 3, 4, 5, 6, 20].map((n) => backoffDelay(n, o)), [100, 200, 400, 800, 1000, 1000, 1000]);
    const j = reconnectOptions({ initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.2 })!;
    assert.equal(backoffDelay(1, j, () => 0), 80);
    assert.equal(backoffDelay(1, j, () => 1), 120);
    assert.equal(backoffDelay(9, j, () => 1), 1000, 'jitter never goes past the cap');
    assert.deepEqual(reconnectOptions(true), { initialDelayMs: 100, maxDelayMs: 5000, multiplier: 2, jitter: 0.2, waitForReady: false });
    assert.equal(reconnectOptions(false), undefined);
  });

  it('bad reconnect, balance and transport-list options are refused with INVALID_ARGUMENT', () => {
    const t = tcp('127.0.0.1:1');
    const bad = [
      () => new Node().connect(t, { reconnect: { initialDelayMs: -1 } }),
      () => new Node().connect(t, { reconnect: { initialDelayMs: 500, maxDelayMs: 100 } }),
      () => new Node().connect(t, { reconnect: { multiplier: 0.5 } }),
      () => new Node().connect(t, { reconnect: { jitter: 2 } }),
      () => new Node().connect(t, { reconnect: 'yes' as never }),
      () => new Node().connect(t, { balance: 'random' as never }),
      () => new Node().waitFor('svc', { reconnect: { maxDelayMs: NaN } }),
      () => new Node().connect([]),
    ];
    for (const f of bad) assert.throws(f, (e: RpcError) => e instanceof RpcError && e.code === 'INVALID_ARGUMENT');
  });

  for (const kind of ['tcp', 'unix'] as const) {
    it(`a ${kind} server restarted on the same address is reconnected to; state events tell the story; calls succeed after`, async () => {
      const spec = kind === 'tcp' ? { kind, port: await freePort() } : { kind, path: path.join(tmp.dir, 'r.sock') };
      const transport: TransportDescriptor = kind === 'tcp' ? tcp({ port: spec.port! }) : unix(spec.path!);
      const first = await startInstance({ transports: [spec] });
      await using node = await new Node().connect<any, any>(transport, { reconnect: fast }).start();
      assert.equal(node.client.state, 'ready');
      const events = recordStates(node);
      assert.equal((await node.client.call({ type: 'Pid' })).pid, first.pid);

      const inFlight = rejectionOf(node.client.call({ type: 'Wait', tag: 1 }));
      await first.kill();
      assert.equal((await inFlight).code, 'CLOSED', 'a call in flight when the connection dies rejects with CLOSED');
      await waitUntil(() => node.client.state !== 'ready', 2000, 'the client notices');
      // While down: fail fast by default; a waitForReady call waits.
      const fastFail = await rejectionOf(node.client.call({ type: 'Ping' }));
      assert.equal(fastFail.code, 'UNAVAILABLE');
      assert.match(fastFail.message, /no connection is ready/);
      const waiting = node.client.call({ type: 'Pid' }, { waitForReady: true, timeoutMs: 15_000 });
      await sleep(300); // a few failed attempts while nothing listens

      const second = await startInstance({ transports: [spec] });
      assert.equal((await waiting).pid, second.pid, 'the waiting call went to the restarted server');
      assert.equal((await node.client.call({ type: 'Pid' })).pid, second.pid);
      assert.equal(node.client.state, 'ready');

      const endpoint = kind === 'tcp' ? `127.0.0.1:${spec.port}` : spec.path;
      assert.ok(events.every((e) => e.endpoint === endpoint));
      const sequence = events.map((e) => e.state).join(' ');
      assert.match(sequence, /^transient-failure connecting( transient-failure connecting)+ ready$/, sequence);
      const failures = events.filter((e) => e.state === 'transient-failure');
      assert.equal(failures[0].error?.code, 'CLOSED', 'the drop says why');
      assert.ok(failures.slice(1).every((e) => e.error?.code === 'UNAVAILABLE'), 'failed attempts say why');
      assert.equal(events.at(-1)!.client, 'ready');
      await second.kill();
    });
  }

  it('without a connection: fail fast with UNAVAILABLE, or with waitForReady wait until the deadline (TIMEOUT), an abort (CANCELLED) or close (CLOSED)', async () => {
    const port = await freePort();
    const server = await startInstance({ transports: [{ kind: 'tcp', port }] });
    const node = await new Node().connect<any, any>(tcp({ port }), { reconnect: fast }).start();
    try {
      assert.throws(() => node.client.on('data' as never, () => {}), (e: RpcError) => e.code === 'INVALID_ARGUMENT');
      await server.kill();
      await waitUntil(() => node.client.state === 'transient-failure' || node.client.state === 'connecting', 2000, 'the client notices');
      assert.equal((await rejectionOf(node.client.call({ type: 'Ping' }))).code, 'UNAVAILABLE');
      assert.equal((await rejectionOf(node.client.notify({ e: 1 }))).code, 'UNAVAILABLE');
      const t0 = Date.now();
      const timedOut = await rejectionOf(node.client.call({ type: 'Ping' }, { waitForReady: true, timeoutMs: 300 }));
      assert.equal(timedOut.code, 'TIMEOUT');
      assert.ok(Date.now() - t0 >= 280 && Date.now() - t0 < 2000, `waited ${Date.now() - t0} ms`);
      const ac = new AbortController();
      const aborted = rejectionOf(node.client.call({ type: 'Ping' }, { waitForReady: true, signal: ac.signal }));
      await sleep(50);
      ac.abort();
      assert.equal((await aborted).code, 'CANCELLED');
      const closing = rejectionOf(node.client.call({ type: 'Ping' }, { waitForReady: true }));
      assert.equal(node.client.pending, 1, 'a waiting call counts as pending');
      await sleep(50);
      await node.close();
      assert.equal((await closing).code, 'CLOSED');
      assert.equal(node.client.state, 'closed');
      assert.equal((await rejectionOf(node.client.call({ type: 'Ping' }))).code, 'CLOSED');
    } finally {
      await node.close();
    }
  });

  it('reconnect.waitForReady makes waiting the default for calls; a call can opt out', async () => {
    const port = await freePort();
    const first = await startInstance({ transports: [{ kind: 'tcp', port }] });
    await using node = await new Node().connect<any, any>(tcp({ port }), { reconnect: { ...fast, waitForReady: true } }).start();
    await first.kill();
    await waitUntil(() => node.client.state !== 'ready', 2000, 'the client notices');
    assert.equal((await rejectionOf(node.client.call({ type: 'Ping' }, { waitForReady: false }))).code, 'UNAVAILABLE');
    const waiting = node.client.call({ type: 'Ping' }, { timeoutMs: 15_000 });
    const second = await startInstance({ transports: [{ kind: 'tcp', port }] });
    assert.deepEqual(await waiting, { type: 'Pong' });
    await second.kill();
  });

  it('attempts against a dead address are spaced by the backoff and capped (counted, not timed tightly)', async () => {
    const port = await freePort();
    const server = await startInstance({ transports: [{ kind: 'tcp', port }] });
    await using node = await new Node().connect<any, any>(tcp({ port }), { reconnect: { initialDelayMs: 20, maxDelayMs: 160, multiplier: 2, jitter: 0 } }).start();
    const attempts: number[] = [];
    node.client.on('state', (e) => e.state === 'connecting' && attempts.push(performance.now()));
    await server.kill();
    await sleep(1500);
    await node.close();
    // Gaps of at least 20, 40, 80, then 160 ms each (one step more when the drop itself counted as a failure).
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]);
    assert.ok(attempts.length >= 5 && attempts.length <= 16, `${attempts.length} attempts in 1.5 s (gaps ${gaps.map(Math.round)})`);
    gaps.forEach((gap, i) => {
      const delay = Math.min(160, 20 * 2 ** i);
      assert.ok(gap >= delay - 5, `gap ${i} was ${Math.round(gap)} ms, below its delay ${delay}`);
    });
    assert.ok(Math.max(...gaps) < 160 + 400, `a gap of ${Math.round(Math.max(...gaps))} ms: the cap is 160 ms`);
  });

  it('without reconnect (the default) a lost connection stays lost: calls reject with its close reason', async () => {
    const port = await freePort();
    const server = await startInstance({ transports: [{ kind: 'tcp', port }] });
    await using node = await new Node().connect<any, any>(tcp({ port })).start();
    const events = recordStates(node);
    await server.kill();
    await waitUntil(() => node.client.closedWith !== undefined, 2000, 'the connection is gone');
    const again = await startInstance({ transports: [{ kind: 'tcp', port }] });
    await sleep(300);
    assert.equal((await rejectionOf(node.client.call({ type: 'Ping' }))).code, 'CLOSED');
    await waitUntil(() => node.client.state === 'closed', 2000, 'the client reports closed');
    assert.deepEqual(events.map((e) => e.state), ['closed']);
    await again.kill();
  });

  it('a client from waitFor re-resolves on reconnect: a server restarted on another port (port 0) is found, with a fresh HMAC handshake', async () => {
    const dir = path.join(tmp.dir, 'reg');
    const secret = 'reconnect secret';
    const first = await startInstance({ transports: [{ kind: 'tcp', port: 0 }], publish: 'moving', dir, secret });
    await using node = await new Node({ discovery: new FileDiscovery({ dir }) })
      .authHmac(secret)
      .waitFor<any, any>('moving', { timeoutMs: 5000, reconnect: fast })
      .start();
    const events = recordStates(node);
    const firstAddress = `127.0.0.1:${(first.addresses[0] as { port: number }).port}`;
    assert.deepEqual(node.client.endpoints.map((e) => e.endpoint), [firstAddress]);
    assert.equal((await node.client.call({ type: 'Pid' })).pid, first.pid);
    await first.kill(); // its record stays behind, but its owner is dead: it no longer counts
    const second = await startInstance({ transports: [{ kind: 'tcp', port: 0 }], publish: 'moving', dir, secret });
    const secondAddress = `127.0.0.1:${(second.addresses[0] as { port: number }).port}`;
    assert.notEqual(secondAddress, firstAddress);
    // Only a handshake with the secret gets an answer from this server: a reply proves it ran again.
    const reply = await node.client.call({ type: 'Pid' }, { waitForReady: true, timeoutMs: 10_000 });
    assert.equal(reply.pid, second.pid);
    assert.equal(reply.peer.auth, 'hmac');
    await waitUntil(() => node.client.endpoints.length === 1, 3000, 'the dead address is dropped');
    assert.deepEqual(node.client.endpoints.map((e) => [e.endpoint, e.state]), [[secondAddress, 'ready']]);
    assert.ok(events.some((e) => e.endpoint === firstAddress && e.state === 'closed'), 'the old endpoint was closed');
    assert.ok(events.some((e) => e.endpoint === secondAddress && e.state === 'ready'));
    await second.kill();
  });

  it('an isolate() plugin whose thread exits is started afresh', async () => {
    const plugin = new URL('./fixtures/plugin.js', import.meta.url);
    await using node = await new Node().connect<any, any>(isolate(plugin), { reconnect: fast }).start();
    const events = recordStates(node);
    const crash = await rejectionOf(node.client.call({ type: 'Exit' }));
    assert.equal(crash.code, 'CLOSED');
    assert.match(crash.message, /exited with code 5/);
    assert.deepEqual(await node.client.call({ type: 'Echo', text: 'again' }, { waitForReady: true, timeoutMs: 10_000 }), { type: 'Echo', text: 'again' });
    assert.deepEqual(events.map((e) => e.state), ['transient-failure', 'connecting', 'ready']);
  });

  it('a throwing state listener does not stop reconnection', async () => {
    const port = await freePort();
    const first = await startInstance({ transports: [{ kind: 'tcp', port }] });
    await using node = await new Node().connect<any, any>(tcp({ port }), { reconnect: fast }).start();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      let thrown = false;
      node.client.on('state', () => {
        if (thrown) return;
        thrown = true;
        throw new Error('listener bug');
      });
      await first.kill();
      const second = await startInstance({ transports: [{ kind: 'tcp', port }] });
      assert.deepEqual(await node.client.call({ type: 'Ping' }, { waitForReady: true, timeoutMs: 10_000 }), { type: 'Pong' });
      await sleep(10);
      assert.ok(warnings.some((w) => /state' listener threw: Error: listener bug/.test(w)));
      await second.kill();
    } finally {
      process.off('warning', onWarning);
    }
  });
});
