/**
 * serve(..., { threads }): one address served by several pool threads, each adopting the listening
 * socket the main thread bound. A thread held by one client leaves new clients to the others; a
 * thread that dies takes only its own clients; maxConnections and one-to-one count them all; close
 * releases the socket.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Node, RpcError, shm, tcp, unix, type Address, type RunningNode, type TransportDescriptor } from '../src/index.js';
import { nativeAvailable } from '../src/native/addon.js';
import { makeCa, makeLeaf, opensslInstalled } from './tls-certs.js';
import { refusalOf, rejectionOf, startServer, tempDir, type ChildServer } from './helpers.js';
import { waitUntil } from './endpoints-helpers.js';

const echoModule = new URL('./fixtures/echo-handler.js', import.meta.url);

/** A transport that reaches what `server` listens on. */
function toServer(server: RunningNode<any, any>, tls?: { ca: string }): TransportDescriptor {
  const a = server.addresses[0];
  if (a.kind === 'unix') return unix(a.path);
  if (a.kind === 'tcp') return tcp({ host: a.host, port: a.port }, tls === undefined ? undefined : { tls });
  throw new Error(`unexpected address ${a.kind}`);
}

/** 'connected', or the error code a plain connect to `where` gets. */
function connectOutcome(where: net.NetConnectOpts): Promise<string> {
  return new Promise((resolve) => {
    const probe = net.connect(where);
    probe.once('connect', () => {
      probe.destroy();
      resolve('connected');
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
  });
}

describe('serve(..., { threads })', function () {
  this.timeout(30_000);
  let tmp: ReturnType<typeof tempDir>;
  const nodes: RunningNode<any, any>[] = [];
  const started = async (p: Promise<RunningNode<any, any>>) => {
    const n = await p;
    nodes.push(n);
    return n;
  };

  before(function () {
    if (!nativeAvailable()) {
      if (process.env.CI) throw new Error('the native addon is not built');
      this.skip();
    }
    tmp = tempDir();
  });
  const children: ChildServer[] = [];
  afterEach(async () => {
    for (const n of nodes.splice(0).reverse()) await n.close().catch(() => {});
    for (const c of children.splice(0)) await c.kill();
  });
  after(() => tmp?.remove());

  /** A server in its own process (so that what holds or kills its threads touches none of this process's client connections). */
  async function childServer(kind: 'unix' | 'tcp', name: string, extra: object = {}): Promise<{ server: ChildServer; to: TransportDescriptor }> {
    const server = await startServer({ transport: kind, path: path.join(tmp.dir, `${name}.sock`), handler: 'module', threads: 2, ...extra });
    children.push(server);
    const a = server.address as Address;
    return { server, to: a.kind === 'unix' ? unix(a.path) : tcp({ host: (a as { host: string }).host, port: (a as { port: number }).port }) };
  }

  for (const kind of ['unix', 'tcp'] as const) {
    it(`a thread held by one client leaves new ${kind} clients to the other thread`, async () => {
      const { to } = await childServer(kind, 'held');
      const first = await started(new Node().connect<any, any>(to).start());
      const held = await first.client.call({ type: 'Thread' });
      const marker = path.join(tmp.dir, `blocking-${kind}`);
      let released = false;
      const blocking = first.client.call({ type: 'Block', ms: 3000, marker }).finally(() => (released = true));
      // The first client's thread is now stuck in its handler: it accepts nothing meanwhile.
      await waitUntil(() => fs.existsSync(marker), 5000, 'the handler holds its thread');
      const others = await Promise.all(Array.from({ length: 4 }, () => started(new Node().connect<any, any>(to).start())));
      const threads = await Promise.all(others.map((n) => n.client.call({ type: 'Thread' })));
      assert.equal(released, false, 'the new clients were answered only once the held thread was free');
      for (const t of threads) assert.notEqual(t, held, 'a new client was served by the thread that is held');
      assert.equal(await blocking, held);
    });
  }

  it('a thread that dies takes only its own clients, and starts again on the same socket', async () => {
    const { server, to } = await childServer('unix', 'dies');
    const socket = (server.address as { path: string }).path;
    // Clients on both threads: the first client holds its thread while three more connect.
    const first = await started(new Node().connect<any, any>(to).start());
    const marker = path.join(tmp.dir, 'blocking-dies');
    const blocking = first.client.call({ type: 'Block', ms: 1500, marker });
    await waitUntil(() => fs.existsSync(marker), 5000, 'the handler holds its thread');
    const clients = [first, ...(await Promise.all(Array.from({ length: 3 }, () => started(new Node().connect<any, any>(to).start()))))];
    const doomed = await blocking;
    const threads = await Promise.all(clients.map((c) => c.client.call({ type: 'Thread' })));
    assert.deepEqual(threads.map((t) => t === doomed), [true, false, false, false]);
    assert.equal((await rejectionOf(first.client.call({ type: 'Exit' }, { timeoutMs: 5000 }))).code, 'CLOSED');
    for (const [i, c] of clients.entries()) {
      if (threads[i] === doomed) await waitUntil(() => c.client.closedWith !== undefined, 5000, `client ${i} of the dead thread is closed`);
      else assert.deepEqual(await c.client.call({ type: 'Ping' }), { type: 'Pong' }, `client ${i} of the other thread is still served`);
    }
    const { restart } = await server.nextLine(10_000);
    assert.equal(restart.attempt, 1, 'the dead thread listens again');
    assert.deepEqual(restart.address, server.address);
    assert.ok(fs.statSync(socket).isSocket(), 'the socket file is still there');
    assert.equal(fs.statSync(socket).mode & 0o777, 0o600, 'only its owner may connect (DESIGN §7)');
    const late = await Promise.all(Array.from({ length: 4 }, () => started(new Node().connect<any, any>(unix(socket)).start())));
    for (const c of late) assert.deepEqual(await c.client.call({ type: 'Ping' }), { type: 'Pong' });
  });

  it('maxConnections and one-to-one count the clients of every thread', async () => {
    const server = await started(new Node().serve(tcp('127.0.0.1:0'), echoModule, { threads: 2, maxConnections: 3 }).start());
    const three = await Promise.all(Array.from({ length: 3 }, () => started(new Node().connect<any, any>(toServer(server)).start())));
    for (const c of three) await c.client.call({ type: 'Ping' });
    const { err } = await refusalOf(new Node().connect<any, any>(toServer(server)).start(), (n) => n.client.call({ type: 'Ping' }));
    assert.equal(err.code, 'BUSY');
    assert.deepEqual(err.data, { maxConnections: 3 });
    await three[0].close();
    await waitUntil(async () => (await server.stats()).listeners[0].connections === 2, 5000, 'the server has seen a client go');
    const next = await started(new Node().connect<any, any>(toServer(server)).start());
    assert.deepEqual(await next.client.call({ type: 'Ping' }), { type: 'Pong' });

    const single = await started(new Node().oneToOne().serve(tcp('127.0.0.1:0'), echoModule, { threads: 2 }).start());
    const only = await started(new Node().connect<any, any>(toServer(single)).start());
    await only.client.call({ type: 'Ping' });
    for (let i = 0; i < 3; i++) {
      const refused = await refusalOf(new Node().connect<any, any>(toServer(single)).start(), (n) => n.client.call({ type: 'Ping' }));
      assert.equal(refused.err.code, 'BUSY');
    }
  });

  it('the places a dead thread held among maxConnections are given back when it starts again', async () => {
    const { server, to } = await childServer('tcp', 'places', { maxConnections: 2 });
    const doomed = await started(new Node().connect<any, any>(to).start());
    await doomed.client.call({ type: 'Ping' });
    assert.equal((await rejectionOf(doomed.client.call({ type: 'Exit' }, { timeoutMs: 5000 }))).code, 'CLOSED');
    const { restart } = await server.nextLine(10_000);
    assert.equal(restart.attempt, 1);
    // Both places are free again: two clients are served, a third is refused.
    const two = await Promise.all(Array.from({ length: 2 }, () => started(new Node().connect<any, any>(to).start())));
    for (const c of two) assert.deepEqual(await c.client.call({ type: 'Ping' }), { type: 'Pong' });
    const { err } = await refusalOf(new Node().connect<any, any>(to).start(), (n) => n.client.call({ type: 'Ping' }));
    assert.equal(err.code, 'BUSY');
  });

  it('a main-thread handler is served from every thread', async () => {
    const server = await started(new Node().serve(unix(path.join(tmp.dir, 'main.sock')), { onRequest: (req: unknown) => req }, { threads: 2 }).start());
    const clients = await Promise.all(Array.from({ length: 6 }, () => started(new Node().connect<any, any>(toServer(server)).start())));
    const answers = await Promise.all(clients.flatMap((c, i) => Array.from({ length: 50 }, (_, j) => c.client.call(`${i}.${j}`))));
    assert.deepEqual(answers, clients.flatMap((_, i) => Array.from({ length: 50 }, (_, j) => `${i}.${j}`)));
    assert.equal((await server.stats()).listeners[0].framesOut, 300);
  });

  it('TLS is served from every thread', async function () {
    if (!opensslInstalled()) {
      if (process.env.CI) throw new Error('/usr/bin/openssl is missing (.ci/run installs it)');
      this.skip();
    }
    const ca = makeCa(tmp.dir, 'ca');
    const cert = makeLeaf(tmp.dir, ca, 'server', { ips: ['127.0.0.1'] });
    const server = await started(new Node().serve(tcp('127.0.0.1:0', { tls: { cert: cert.cert, key: cert.key } }), echoModule, { threads: 2 }).start());
    assert.equal((server.addresses[0] as { tls?: true }).tls, true);
    const clients = await Promise.all(Array.from({ length: 4 }, () => started(new Node().connect<any, any>(toServer(server, { ca: ca.cert })).start())));
    for (const c of clients) assert.equal(c.client.endpoints[0].state, 'ready');
    for (const c of clients) assert.equal((await c.client.call({ type: 'Echo', text: 'tls' })).text, 'tls');
  });

  for (const kind of ['unix', 'tcp'] as const) {
    it(`a graceful close lets every thread answer what it serves, refuses new calls and clients, then releases the socket (${kind})`, async () => {
      const socket = path.join(tmp.dir, 'graceful.sock');
      const server = await new Node().serve(kind === 'unix' ? unix(socket) : tcp('127.0.0.1:0'), echoModule, { threads: 2 }).start();
      const where: net.NetConnectOpts = kind === 'unix' ? { path: socket } : { port: (server.addresses[0] as { port: number }).port, host: '127.0.0.1' };
      const clients = await Promise.all(Array.from({ length: 4 }, () => started(new Node().connect<any, any>(toServer(server)).start())));
      const slow = clients.map((c) => c.client.call({ type: 'Wait', ms: 300 }));
      await new Promise((resolve) => setTimeout(resolve, 50));
      const closing = server.close({ graceMs: 5000 });
      // New clients are turned away at once (not left in a backlog nobody accepts from).
      await waitUntil(async () => (await connectOutcome(where)) !== 'connected', 5000, 'nothing takes new clients');
      const late = await rejectionOf(clients[0].client.call({ type: 'Ping' }));
      assert.equal(late.code, 'UNAVAILABLE');
      assert.deepEqual(await Promise.all(slow), Array.from({ length: 4 }, () => ({ type: 'Waited', aborted: false })));
      await closing;
      assert.equal(fs.existsSync(socket), false);
      assert.notEqual(await connectOutcome(where), 'connected');
    });
  }

  it('close releases the socket: nothing listens on the port, the socket file is gone', async () => {
    const server = await new Node().serve([tcp('127.0.0.1:0'), unix(path.join(tmp.dir, 'closed.sock'))], echoModule, { threads: 2 }).start();
    const [{ port }, { path: socket }] = server.addresses as unknown as [{ port: number }, { path: string }];
    const client = await new Node().connect<any, any>(tcp({ port })).start();
    await client.client.call({ type: 'Ping' });
    await client.close();
    await server.close();
    assert.equal(fs.existsSync(socket), false);
    // A listening socket left open would still complete connections (into its backlog).
    assert.equal(await connectOutcome({ port, host: '127.0.0.1' }), 'ECONNREFUSED');
  });

  it('refuses what it cannot share, and counts it 1 otherwise', async () => {
    const invalid = (f: () => unknown) => assert.throws(f, (e: RpcError) => e.code === 'INVALID_ARGUMENT');
    invalid(() => new Node().serve(shm(`threads-${process.pid}`), echoModule, { threads: 2 }));
    invalid(() => new Node().serve(unix('\\\\.\\pipe\\ogurpchik-threads'), echoModule, { threads: 2 }));
    for (const threads of [0, 1.5, -1, 2000, Infinity]) invalid(() => new Node().serve(tcp('127.0.0.1:0'), echoModule, { threads }));
    const server = await started(new Node().serve(tcp('127.0.0.1:0'), echoModule, { threads: 1 }).start());
    assert.equal((await server.stats()).listeners[0].threads, 1);
    // A port in use fails start() with UNAVAILABLE, leaving nothing behind.
    const taken = (server.addresses[0] as { port: number }).port;
    const err = await rejectionOf(new Node().serve(tcp({ host: '127.0.0.1', port: taken }), echoModule, { threads: 2 }).start());
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /EADDRINUSE/);
    const nowhere = await rejectionOf(new Node().serve(unix(path.join(tmp.dir, 'missing', 's.sock')), echoModule, { threads: 2 }).start());
    assert.equal(nowhere.code, 'UNAVAILABLE');
    assert.match(nowhere.message, /the directory .*missing does not exist/);
  });
});
