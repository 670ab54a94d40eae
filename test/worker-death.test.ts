/**
 * A connection worker that dies or hangs under a worker-module handler. A listener whose worker
 * dies (the handler's uncaught exception or process.exit) is listening again at the same address:
 * its connections close with CLOSED, new clients are served, a reconnecting client carries on,
 * and close() leaves nothing behind. A worker stuck in an endless loop does not make close() hang:
 * it is terminated after closeTimeoutMs.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Node, isolate, shm, tcp, unix, type Address, type RpcError, type RunningNode, type TransportDescriptor } from '../src/index.js';
import { shmControlPath } from '../src/transport/shm.js';
import { killAllChildren, rejectionOf, startServer, tempDir, within, type ChildServer } from './helpers.js';

/** The transport that reaches `address` (as a server's `addresses` lists it). */
function reach(address: Address): TransportDescriptor {
  if (address.kind === 'tcp') return tcp({ host: address.host, port: address.port });
  if (address.kind === 'unix') return unix(address.path);
  if (address.kind === 'shm') return shm(address.name);
  throw new Error(`no client for ${address.kind}`);
}

describe('listener restart', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof tempDir>;
  const nodes: RunningNode<any, any>[] = [];
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(async () => {
    await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
    await killAllChildren();
    tmp.remove();
  });

  /** A server process whose handler module crashes on request (see fixtures/crash-handler.ts). */
  function serve(kind: 'tcp' | 'unix' | 'shm'): Promise<ChildServer> {
    return startServer({ transport: kind, handler: 'crash', path: path.join(tmp.dir, 's.sock'), name: `restart-${process.pid}`, capacity: 1 << 16 });
  }

  async function client(address: Address, options?: { reconnect: { initialDelayMs: number; maxDelayMs: number } }): Promise<RunningNode<any, any>> {
    const node = await new Node().connect<any, any>(reach(address), options).start();
    nodes.push(node);
    return node;
  }

  const cases: Array<{ kind: 'tcp' | 'unix' | 'shm'; death: 'Crash' | 'Exit' }> = [
    { kind: 'tcp', death: 'Crash' },
    { kind: 'unix', death: 'Crash' },
    { kind: 'shm', death: 'Crash' },
    { kind: 'unix', death: 'Exit' },
  ];
  for (const { kind, death } of cases) {
    const how = death === 'Crash' ? "an uncaught exception in a handler's timer" : 'process.exit in a handler';
    it(`${kind}: after ${how} kills the worker, the same address is served again`, async () => {
      const server = await serve(kind);
      const first = await client(server.address);
      const other = await client(server.address);
      assert.deepEqual(await first.client.call({ type: 'Ping' }), { type: 'Pong' });
      const waiting = [first, other].map((n) => rejectionOf(n.client.call({ type: 'Wait', ms: 20_000 })));
      assert.deepEqual(await first.client.call({ type: death }), { type: death === 'Crash' ? 'Crashing' : 'Exiting' });

      // The connections the worker hosted are gone: their pending calls reject with a code, at once.
      for (const err of await within(2000, 'the pending calls to reject', Promise.all(waiting))) assert.equal(err.code, 'CLOSED');

      const { restart } = await server.nextLine(10_000);
      assert.deepEqual(restart.address, server.address, 'the same address, the port the kernel picked for port 0 included');
      assert.equal(restart.error.code, 'CLOSED');
      assert.match(restart.error.message, death === 'Crash' ? /a handler bug, thrown from a timer/ : /exited with code: 3/);
      assert.equal(restart.attempt, 1);

      const second = await client(server.address);
      assert.deepEqual(await second.client.call({ type: 'Echo', text: 'again' }), { type: 'Echo', text: 'again' });
      assert.equal(server.child.exitCode, null, 'the server process lives on');
    });
  }

  it('a client with reconnect sees the drop and is ready again on the same address', async () => {
    const server = await serve('unix');
    const node = await client(server.address, { reconnect: { initialDelayMs: 20, maxDelayMs: 200 } });
    const states: string[] = [];
    const readyAgain = new Promise<void>((resolve) =>
      node.client.on('state', (e) => {
        states.push(`${e.state}${e.error ? ` ${e.error.code}` : ''}`);
        if (e.state === 'ready') resolve();
      }),
    );
    await node.client.call({ type: 'Crash' });
    await within(10_000, 'the client to be ready again', readyAgain);
    assert.equal(states[0], 'transient-failure CLOSED', states.join(' -> '));
    const replies = [];
    for (let i = 0; i < 5; i++) replies.push(await node.client.call({ type: 'Echo', text: `n${i}` }));
    assert.deepEqual(replies.map((r) => r.text), ['n0', 'n1', 'n2', 'n3', 'n4']);
  });

  it('a listener that keeps dying keeps coming back, and close() ends it', async () => {
    const server = await serve('unix');
    const socket = path.join(tmp.dir, 's.sock');
    for (let round = 1; round <= 3; round++) {
      const node = await client(server.address);
      await node.client.call({ type: 'Crash' });
      const { restart } = await server.nextLine(10_000);
      assert.equal(restart.address.path, socket);
      assert.equal(restart.attempt, 1);
    }
    await closeServer(server);
    assert.equal(fs.existsSync(socket), false, 'the socket file is removed');
  });

  it('close() as the worker dies: no restart follows, nothing is left listening', async () => {
    const server = await serve('unix');
    const node = await client(server.address);
    await node.client.call({ type: 'Crash' });
    await closeServer(server);
    assert.equal(fs.existsSync(path.join(tmp.dir, 's.sock')), false, 'the socket file is removed');
    const late = await rejectionOf(new Node({ connectTimeoutMs: 1000 }).connect(unix(path.join(tmp.dir, 's.sock'))).start());
    assert.equal(late.code, 'UNAVAILABLE');
  });
});

/** Ends the server's stdin: it closes its node and exits 0, within 5 s. */
async function closeServer(server: ChildServer): Promise<void> {
  const exited = new Promise<number | null>((resolve) => server.child.once('exit', resolve));
  server.child.stdin!.end();
  assert.equal(await within(5000, 'the server to close and exit', exited), 0);
}

describe('close() of a stuck worker', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof tempDir>;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(async () => {
    await killAllChildren();
    tmp.remove();
  });

  for (const kind of ['unix', 'shm'] as const) {
    it(`${kind}: terminates a worker whose handler never returns, after closeTimeoutMs, and removes its socket`, async () => {
      const socket = path.join(tmp.dir, 's.sock');
      const name = `stuck-${process.pid}`;
      const server = await startServer({ transport: kind, handler: 'crash', path: socket, name, capacity: 1 << 16, closeTimeoutMs: 500 });
      const node = await new Node().connect<any, any>(reach(server.address)).start();
      try {
        const err = await rejectionOf(node.client.call({ type: 'Spin' }, { timeoutMs: 300 }));
        assert.equal(err.code, 'TIMEOUT');
        await closeServer(server);
        const file = kind === 'unix' ? socket : shmControlPath(name);
        assert.equal(fs.existsSync(file), false, `${file} is removed`);
        for (const entry of fs.readdirSync('/dev/shm')) assert.ok(!entry.includes(name), `${entry} is left in /dev/shm`);
      } finally {
        await node.close();
      }
    });
  }

  it('closeTimeoutMs must be a positive integer', () => {
    for (const closeTimeoutMs of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => new Node({ closeTimeoutMs }), (e: RpcError) => e.code === 'INVALID_ARGUMENT' && /closeTimeoutMs/.test(e.message));
    }
  });
});

describe('start() of a module that never finishes loading', function () {
  this.timeout(30_000);

  for (const how of ['awaits forever', 'loops forever'] as const) {
    const url = new URL(`./fixtures/never-loads.js${how === 'loops forever' ? '?spin' : ''}`, import.meta.url);
    it(`a handler module that ${how}: start() rejects with UNAVAILABLE after connectTimeoutMs`, async () => {
      const tmp = tempDir();
      try {
        const t0 = Date.now();
        const err = await rejectionOf(new Node({ connectTimeoutMs: 500, closeTimeoutMs: 500 }).serve(unix(path.join(tmp.dir, 'n.sock')), url).start());
        assert.equal(err.code, 'UNAVAILABLE');
        assert.match(err.message, /not ready within 500 ms/);
        assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
        assert.equal(fs.existsSync(path.join(tmp.dir, 'n.sock')), false, 'nothing listens');
        if (how === 'loops forever') assert.ok((await cpuMsOver(400)) < 200, 'the looping thread was terminated');
        // The pool serves the next node as usual (a stuck thread was terminated and replaced).
        const server = await new Node().serve(unix(path.join(tmp.dir, 'ok.sock')), { onRequest: (r: unknown) => r }).start();
        const node = await new Node().connect(unix(path.join(tmp.dir, 'ok.sock'))).start();
        assert.equal(await node.client.call('fine'), 'fine');
        await node.close();
        await server.close();
      } finally {
        tmp.remove();
      }
    });

    it(`an isolate plugin that ${how}: start() rejects with UNAVAILABLE${how === 'loops forever' ? ', and its thread is terminated' : ''}`, async () => {
      const t0 = Date.now();
      const err = await rejectionOf(new Node({ connectTimeoutMs: 300, handshakeTimeoutMs: 200 }).connect(isolate(url, { closeTimeoutMs: 300 })).start());
      assert.equal(err.code, 'UNAVAILABLE');
      assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
      if (how === 'loops forever') assert.ok((await cpuMsOver(400)) < 200, 'the looping thread was terminated');
    });
  }
});

/** CPU time this process used over the next `ms` of wall time: a thread still looping would add about `ms`. */
async function cpuMsOver(ms: number): Promise<number> {
  const before = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}
