/** The Node builder and running node: validation, addresses, close, dispose, failures, socket files. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Node, RpcError, custom, isolate, tcp, unix } from '../src/index.js';
import { idleWindows, kIdlePresets } from '../src/idle.js';
import { rejectionOf, sleep, startServer, tempDir } from './helpers.js';

const echoModule = new URL('./fixtures/echo-handler.js', import.meta.url);

describe('Node builder', function () {
  this.timeout(20_000);

  it('validates its input with INVALID_ARGUMENT', () => {
    const bad = [
      () => tcp('no-port'),
      () => tcp('h:99999'),
      () => unix(''),
      () => new Node({ maxFrameBytes: 1 }),
      () => new Node().serve(tcp('127.0.0.1:0'), {} as never),
      () => new Node().serve(tcp('127.0.0.1:0'), echoModule).serve(tcp('127.0.0.1:0'), echoModule),
      () => tcp({ host: 1 as never, port: 80 }),
      () => tcp({ host: '', port: 80 }),
      () => new Node({ ringBytes: 0 }),
      () => new Node({ ringBytes: 2 ** 31 }),
      () => new Node({ pool: { threads: 0 } }),
      () => new Node({ pool: { threads: 1.5 } }),
      () => new Node({ pool: { tasksPerThread: 0 } }),
      () => new Node({ keepAliveMs: '5' as never }),
      () => new Node({ idleTuning: { spinMicros: '5' as never } }),
      () => new Node({ idle: 'fast' as never }),
      () => new Node({ idle: null as never }),
      () => new Node({ idleTuning: 5 as never }),
      () => new Node({ idleTuning: { pollMicro: 5 } as never }),
      () => isolate(echoModule, { closeTimeoutMs: -1 }),
      () => isolate(echoModule, { closeTimeoutMs: Infinity }),
      () => isolate(42 as never),
      () => custom(''),
      () => new Node().waitFor('svc', { timeoutMs: -1 }),
      () => new Node().waitFor('svc', { timeoutMs: 2 ** 31 }),
      // One handshake scheme per node: a second would silently replace the first (and could drop authentication).
      () => new Node().authHmac('a shared secret').handshakeVersionOnly(),
      () => new Node().handshakeVersionOnly().authHmac('a shared secret'),
      () => new Node().authHmac('a shared secret').authHmac('another secret'),
    ];
    for (const f of bad) assert.throws(f, (e: RpcError) => e instanceof RpcError && e.code === 'INVALID_ARGUMENT');
  });

  it('refuses every pair of handshake choices, authDisabled() among them, whatever the order', () => {
    const key = new Uint8Array(32).fill(1);
    const choices: Record<string, (n: Node) => Node> = {
      authDisabled: (n) => n.authDisabled(),
      handshakeVersionOnly: (n) => n.handshakeVersionOnly(),
      authHmac: (n) => n.authHmac('a shared secret'),
      authSignedProcess: (n) => n.authSignedProcess(key),
    };
    for (const [first, a] of Object.entries(choices)) {
      for (const [second, b] of Object.entries(choices)) {
        assert.throws(
          () => b(a(new Node())),
          (e: RpcError) => e instanceof RpcError && e.code === 'INVALID_ARGUMENT' && /one handshake scheme/.test(e.message),
          `${first}() then ${second}() must be refused`,
        );
      }
      assert.doesNotThrow(() => a(new Node()), `${first}() alone is a valid choice`);
    }
  });

  it('start() with nothing to do rejects', async () => {
    assert.equal((await rejectionOf(new Node().start())).code, 'INVALID_ARGUMENT');
  });

  it('serves and calls itself in one node; port 0 is resolved in addresses', async () => {
    // Find a free port first, since a node connects to the address given before start().
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const node = await new Node().serve(tcp({ port }), echoModule).connect(tcp({ port })).start();
    assert.deepEqual(node.addresses, [{ kind: 'tcp', host: '127.0.0.1', port }]);
    assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
    await node.close();
    await node.close(); // idempotent
    assert.equal((await rejectionOf(node.client.call({ type: 'Ping' }))).code, 'CLOSED');
  });

  it("the opt-in spin strategy still delivers every call (idleTuning.spinMicros)", async () => {
    const node = await new Node({ idleTuning: { spinMicros: 50 } }).serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }).start();
    const client = await new Node({ idleTuning: { spinMicros: 50 } }).connect<number, number>(tcp(node.addresses[0] as { host: string; port: number })).start();
    try {
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => client.client.call(i)));
      assert.deepEqual(results, Array.from({ length: 200 }, (_, i) => i));
      assert.equal(await client.client.call(7), 7);
    } finally {
      await client.close();
      await node.close();
    }
    assert.throws(() => new Node({ idleTuning: { spinMicros: -1 } }), (e: RpcError) => e.code === 'INVALID_ARGUMENT');
  });

  it('the poll windows (idleTuning.pollMicros, peerPollMicros: default 0 on sockets) and none all deliver every call; bad values are refused', async () => {
    for (const pollMicros of [undefined, 0, 2000]) {
      const node = await new Node({ idleTuning: { pollMicros, peerPollMicros: pollMicros } }).serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }).start();
      const client = await new Node({ idleTuning: { pollMicros, peerPollMicros: pollMicros } }).connect<number, number>(tcp(node.addresses[0] as { host: string; port: number })).start();
      try {
        const results = await Promise.all(Array.from({ length: 200 }, (_, i) => client.client.call(i)));
        assert.deepEqual(results, Array.from({ length: 200 }, (_, i) => i));
        for (let i = 0; i < 20; i++) assert.equal(await client.client.call(i), i);
      } finally {
        await client.close();
        await node.close();
      }
    }
    for (const bad of [-1, Number.NaN, 2e6]) {
      assert.throws(() => new Node({ idleTuning: { pollMicros: bad } }), (e: RpcError) => e.code === 'INVALID_ARGUMENT');
    }
  });

  it("poll windows ('balanced'): isolates 50 µs on their rings, client connections clientPollMicros; idleTuning's pollMicros for the main-thread rings, peerPollMicros for the worker's peer side; bad values refused", () => {
    const relay = kIdlePresets.balanced.clientPollMicros;
    assert.equal(relay, 100);
    const none = { spinMicros: 0 };
    assert.deepEqual(idleWindows('isolate', 'balanced'), { ...none, pollMicros: kIdlePresets.balanced.isolatePollMicros, peerPollMicros: 0, clientPollMicros: 0 });
    for (const kind of ['tcp', 'unix', 'shm', 'vsock', 'custom'] as const) assert.deepEqual(idleWindows(kind, 'balanced'), { ...none, pollMicros: 0, peerPollMicros: 0, clientPollMicros: relay });
    assert.deepEqual(idleWindows('shm', 'balanced', { peerPollMicros: 200 }), { ...none, pollMicros: 0, peerPollMicros: 200, clientPollMicros: relay });
    assert.deepEqual(idleWindows('tcp', 'balanced', { pollMicros: 30, peerPollMicros: 200, clientPollMicros: 0 }), { ...none, pollMicros: 30, peerPollMicros: 200, clientPollMicros: 0 });
    assert.deepEqual(idleWindows('isolate', 'balanced', { pollMicros: 0, peerPollMicros: 200, clientPollMicros: 80 }), { ...none, pollMicros: 0, peerPollMicros: 0, clientPollMicros: 0 }, 'an isolate has no peer side');
    assert.equal(kIdlePresets.balanced.isolatePollMicros, 50);
    for (const bad of [-1, Number.NaN, 2e6]) {
      assert.throws(() => new Node({ idleTuning: { peerPollMicros: bad } }), (e: RpcError) => e.code === 'INVALID_ARGUMENT');
      assert.throws(() => new Node({ idleTuning: { clientPollMicros: bad } }), (e: RpcError) => e.code === 'INVALID_ARGUMENT' && /clientPollMicros/.test(e.message));
    }
  });

  it('idleTuning.clientPollMicros: calls work with and without the window, and once calls stop the client\'s worker stops looking (no CPU spent idle)', async function () {
    this.timeout(20_000);
    const server = await new Node().serve(tcp('127.0.0.1:0'), echoModule).start();
    try {
      for (const clientPollMicros of [undefined, 0, 500]) {
        const client = await new Node(clientPollMicros === undefined ? {} : { idleTuning: { clientPollMicros } }).connect<any, any>(tcp(server.addresses[0] as { host: string; port: number })).start();
        try {
          for (let i = 0; i < 50; i++) assert.equal(await client.client.call(i), i);
          assert.deepEqual(await Promise.all(Array.from({ length: 64 }, (_, i) => client.client.call(i))), Array.from({ length: 64 }, (_, i) => i));
          // Idle now: after its window the worker sleeps. A worker still looking would take about
          // as much CPU as the wall time; give it a window's worth of slack many times over.
          await sleep(50);
          const before = process.cpuUsage();
          await sleep(500);
          const used = process.cpuUsage(before);
          const ms = (used.user + used.system) / 1000;
          assert.ok(ms < 150, `${ms.toFixed(0)} ms of CPU in 500 ms of idleness (clientPollMicros ${clientPollMicros})`);
        } finally {
          await client.close();
        }
      }
    } finally {
      await server.close();
    }
  });

  it('closing a server with clients connected is prompt, and their calls then reject with CLOSED', async () => {
    const server = await new Node().serve(tcp('127.0.0.1:0'), echoModule).start();
    const client = await new Node().connect<any, any>(tcp(server.addresses[0] as { host: string; port: number })).start();
    try {
      const pending = rejectionOf(client.client.call({ type: 'Wait', tag: 'server-close' }));
      const t0 = Date.now();
      await server.close();
      assert.ok(Date.now() - t0 < 2000, `server.close() took ${Date.now() - t0} ms`);
      const err = await pending;
      assert.equal(err.code, 'CLOSED');
      assert.match(err.message, /closed/);
      assert.equal((await rejectionOf(client.client.call({ type: 'Ping' }))).code, 'CLOSED');
    } finally {
      await client.close();
    }
  });

  it('a serve-only node has addresses but no client', async () => {
    const node = await new Node().serve(tcp('127.0.0.1:0'), echoModule).start();
    try {
      const a = node.addresses[0] as { port: number };
      assert.ok(a.port > 0);
      assert.throws(() => node.client, (e: RpcError) => e.code === 'INVALID_ARGUMENT');
    } finally {
      await node.close();
    }
  });

  it('closes on Symbol.asyncDispose (await using), rejecting pending calls with CLOSED', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    let pending: Promise<unknown> | undefined;
    {
      await using node = await new Node().connect(tcp(server.address as any)).start();
      pending = rejectionOf(node.client.call({ type: 'Wait', tag: 'dispose' }));
      assert.equal(node.client.pending, 1);
    }
    assert.equal(((await pending) as RpcError).code, 'CLOSED');
    await server.kill();
  });

  it('connecting to a port nobody listens on rejects start() with UNAVAILABLE', async () => {
    const server = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise((r) => server.close(r));
    const err = await rejectionOf(new Node().connect(tcp({ port })).start());
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /ECONNREFUSED/);
  });

  it('a failing handler module rejects start() with INVALID_ARGUMENT', async () => {
    const err = await rejectionOf(new Node().serve(tcp('127.0.0.1:0'), new URL('./fixtures/nonexistent.js', import.meta.url)).start());
    assert.equal(err.code, 'INVALID_ARGUMENT');
  });

  it('a handler that kills its worker: the client gets CLOSED, never a hang', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    const node = await new Node().connect(tcp(server.address as any)).start();
    try {
      const err = await rejectionOf(node.client.call({ type: 'Exit' }, { timeoutMs: 5000 }));
      assert.equal(err.code, 'CLOSED');
    } finally {
      await node.close();
      await server.kill();
    }
  });
});

describe('unix socket files', function () {
  this.timeout(20_000);

  it('are created 0600 and removed on close', async () => {
    const tmp = tempDir();
    const file = path.join(tmp.dir, 'a.sock');
    try {
      const node = await new Node().serve(unix(file), echoModule).start();
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      await node.close();
      assert.equal(fs.existsSync(file), false);
    } finally {
      tmp.remove();
    }
  });

  it('a stale socket file left by a crashed owner is replaced', async () => {
    const tmp = tempDir();
    const file = path.join(tmp.dir, 'b.sock');
    try {
      const server = await startServer({ transport: 'unix', path: file, handler: 'module' });
      await server.kill('SIGKILL');
      assert.equal(fs.existsSync(file), true, 'the killed owner left its socket file');
      const node = await new Node().serve(unix(file), echoModule).connect(unix(file)).start();
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
      await node.close();
    } finally {
      tmp.remove();
    }
  });

  it('a path in a directory that does not exist: UNAVAILABLE naming the directory (libuv says EACCES)', async () => {
    const tmp = tempDir();
    try {
      const err = await rejectionOf(new Node().serve(unix(path.join(tmp.dir, 'missing', 'd.sock')), echoModule).start());
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /the directory .*missing does not exist/);
    } finally {
      tmp.remove();
    }
  });

  it('a live server on the path is not taken over', async () => {
    const tmp = tempDir();
    const file = path.join(tmp.dir, 'c.sock');
    const first = await new Node().serve(unix(file), echoModule).start();
    try {
      const err = await rejectionOf(new Node().serve(unix(file), echoModule).start());
      assert.match(err.message, /EADDRINUSE/);
    } finally {
      await first.close();
      tmp.remove();
    }
  });
});

it('a full worker pool refuses a connection with BUSY instead of queueing it', function () {
  this.timeout(20_000);
  const script = new URL('./fixtures/pool-full.js', import.meta.url).pathname;
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 15_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { started: 2, third: 'BUSY', afterClose: 'ok' });
});
