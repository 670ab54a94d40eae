/**
 * shm's direct path: a main-thread client or handler reads and writes the shared-memory rings
 * itself, without the main <-> worker hop. Every mix of ends answers (the bytes in the rings are
 * the same either way), the peer's death and our own close are noticed, nothing is lost on a full
 * ring, every idle preset works, and nothing is left in /dev/shm.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Node, RpcError, kIdlePresets, shm, type CallContext, type IdlePreset } from '../src/index.js';
import { createCodec } from '../src/codec/index.js';
import { shmDirectStats } from '../src/main/shm-direct.js';
import { Kind, decodeEnvelope, encodeRequest } from '../src/protocol/envelope.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { nativeAvailable } from '../src/native/addon.js';
import { shmControlPath, shmTransport } from '../src/transport/shm.js';
import { rejectionOf, sleep, startServer } from './helpers.js';

let serial = 0;
const uniqueName = () => `d${process.pid}-${++serial}`;
const ourSegments = () => fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`ogurpchik-d${process.pid}-`));
const ourControlSockets = () => fs.readdirSync(path.dirname(shmControlPath('x'))).filter((n) => n.startsWith(`ogurpchik-shm-d${process.pid}-`));
const codec = createCodec({ kind: 'msgpack' });

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function waitUntil(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(5);
  }
}

const echoHandler = { onRequest: (req: unknown) => req };

/** Asserts that `node`'s connection takes the direct path (this thread reads and writes its rings). */
async function assertDirect(node: { stats(): Promise<{ endpoints: Array<{ direct?: true }> }> }): Promise<void> {
  assert.equal((await node.stats()).endpoints[0].direct, true, 'the connection takes the direct path');
}

describe('shm direct path (main thread reads and writes the rings)', function () {
  this.timeout(60_000);
  before(function () {
    if (!nativeAvailable()) throw new Error('the native addon is not built: npm run build:native');
  });
  afterEach(async () => {
    await waitUntil(() => shmDirectStats().open === 0, 3000, 'every direct link let go of its rings');
    assert.deepEqual(ourSegments(), [], 'a test left shared-memory segments behind');
  });
  after(() => {
    assert.deepEqual(ourControlSockets(), [], 'the tests left control sockets behind');
  });

  it('a main-thread client and a main-thread handler take the direct path (stats say direct, no ring pair), and count their frames', async () => {
    const name = uniqueName();
    const opened = shmDirectStats().opened;
    const server = await new Node().serve(shm(name), echoHandler).start();
    const client = await new Node().connect<any, any>(shm(name)).start();
    try {
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) => client.client.call({ i })));
      results.forEach((r, i) => assert.deepEqual(r, { i }));
      assert.equal(shmDirectStats().opened - opened, 2, 'both ends of the connection attached a direct link in this thread');
      assert.equal(shmDirectStats().open, 2);
      const [endpoint] = (await client.stats()).endpoints;
      assert.equal(endpoint.direct, true);
      assert.equal(endpoint.ringPair, undefined, 'no main <-> worker ring pair carries its calls');
      assert.ok(endpoint.framesOut >= 100 && endpoint.framesIn >= 100, JSON.stringify(endpoint));
      const [listener] = (await server.stats()).listeners;
      assert.equal(listener.connections, 1);
      assert.ok(listener.framesIn >= 100 && listener.framesOut >= 100, JSON.stringify(listener));
    } finally {
      await client.close();
      await server.close();
    }
  });

  it("a fresh connection's first call is not left to a watchdog: the worker's reader has let go of the ring before this thread's parks on it (8 connections, each first call < 500 ms)", async () => {
    const name = uniqueName();
    const server = await new Node().serve(shm(name), echoHandler).start();
    try {
      for (let i = 0; i < 8; i++) {
        const client = await new Node().connect<number, number>(shm(name)).start();
        try {
          // Give both workers' readers time to park on the rings before the hand-over completes.
          await sleep(20);
          const t0 = performance.now();
          assert.equal(await client.client.call(i), i);
          const ms = performance.now() - t0;
          assert.ok(ms < 500, `connection ${i}: the first call took ${ms.toFixed(0)} ms (a lost wake-up waits for the ring's 1 s watchdog)`);
        } finally {
          await client.close();
        }
      }
    } finally {
      await server.close();
    }
  });

  it('a main-thread client against a worker-module server in another process: small, fragmented and larger-than-ring payloads', async () => {
    const name = uniqueName();
    const capacity = 1 << 16;
    const server = await startServer({ transport: 'shm', name, capacity, handler: 'module' });
    const client = await new Node().connect<any, any>(shm(name, { capacity })).start();
    try {
      assert.equal((await client.stats()).endpoints[0].direct, true);
      for (const size of [0, 1, 100, capacity / 4, capacity - 1, capacity * 3 + 7]) {
        const data = bytes(size, size);
        const got = await client.client.call({ type: 'Echo', text: String(size), data });
        assert.equal(got.text, String(size));
        assert.ok(Buffer.from(got.data).equals(Buffer.from(data)), `${size} bytes intact`);
      }
      const pid = await client.client.call({ type: 'Pid' });
      assert.equal(pid.pid, server.pid);
      assert.equal(pid.peer.pid, process.pid, 'the server learnt our pid from the OS');
    } finally {
      await client.close();
      await server.kill('SIGTERM');
    }
  });

  it('a main-thread client against a main-thread handler in another process; the server calls back into the client', async () => {
    const name = uniqueName();
    const server = await startServer({ transport: 'shm', name, handler: 'main' });
    const client = await new Node().connect<any, any>(shm(name), { handler: { onRequest: (req: any) => ({ ...req, by: 'client' }) } }).start();
    try {
      await assertDirect(client);
      const results = await Promise.all(Array.from({ length: 200 }, (_, i) => client.client.call({ type: 'Echo', text: String(i) })));
      results.forEach((r, i) => assert.equal(r.text, String(i)));
      assert.deepEqual(await client.client.call({ type: 'CallBack' }), { type: 'Echo', text: 'from server', by: 'client' });
    } finally {
      await client.close();
      await server.kill('SIGTERM');
    }
  });

  it('a worker-style client stream (the adapter as a connection worker runs it) against a main-thread handler: requests sent at once, a fragmented one among them, all answered', async () => {
    const name = uniqueName();
    const server = await new Node().serve(shm(name, { capacity: 4096 }), echoHandler).start();
    const stream = await shmTransport.connect({ ...shm(name, { capacity: 4096 }), pollMicros: 0, spinMicros: 0 });
    const answers = new Map<number, unknown>();
    const decoder = new FrameDecoder();
    let closed = false;
    try {
      stream.start({
        data: (chunk) =>
          decoder.push(chunk, (body) => {
            const env = decodeEnvelope(body);
            assert.equal(env.kind, Kind.Response);
            if (env.kind === Kind.Response) answers.set(env.id, codec.decode(env.payload));
          }),
        drain: () => {},
        close: () => (closed = true),
      });
      // At once, before the server's worker has handed the rings to its main thread: what the
      // worker read meanwhile must reach the main thread first, and a record split in fragments
      // (over a quarter of the 4 KiB ring) must not be cut where the reader changes hands.
      const sent = new Map<number, unknown>();
      for (let id = 1; id <= 40; id++) {
        const value = id % 10 === 0 ? { id, big: bytes(3000, id) } : { id };
        sent.set(id, value);
        stream.write(encodeFrame(encodeRequest(id, 0, codec.encode(value))));
      }
      await waitUntil(() => answers.size === sent.size || closed, 10_000, 'every answer');
      assert.equal(shmDirectStats().open, 1, "the server's connection is direct");
      assert.equal(closed, false);
      for (const [id, value] of sent) assert.deepEqual(answers.get(id), value, `answer ${id}`);
    } finally {
      stream.end();
      await waitUntil(() => closed, 3000, 'the stream closed');
      await server.close();
    }
  });

  it('the server process killed with SIGKILL: every call settles CLOSED within 1 s, the link lets go of its rings', async () => {
    const name = uniqueName();
    const server = await startServer({ transport: 'shm', name, handler: 'main' });
    const client = await new Node().connect<any, any>(shm(name)).start();
    try {
      assert.equal(shmDirectStats().open, 1);
      const calls = Array.from({ length: 10 }, (_, i) => rejectionOf(client.client.call({ type: 'Wait', tag: i })));
      await sleep(50);
      const t0 = Date.now();
      await server.kill('SIGKILL');
      for (const err of await Promise.all(calls)) {
        assert.ok(err instanceof RpcError);
        assert.equal(err.code, 'CLOSED');
      }
      assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
      await waitUntil(() => shmDirectStats().open === 0, 1000, 'the link is torn down');
    } finally {
      await client.close();
      fs.rmSync(shmControlPath(name), { force: true });
    }
  });

  it('the client process killed with SIGKILL: the main-thread handler side settles within 1 s (its call to the client CLOSED, the handler aborted)', async () => {
    const name = uniqueName();
    let held: { signal: AbortSignal; callback: Promise<unknown> } | undefined;
    let onHold!: () => void;
    const gotHold = new Promise<void>((resolve) => (onHold = resolve));
    const handler = {
      onRequest(req: any, ctx: CallContext) {
        if (req.type !== 'Hold') return req;
        held = { signal: ctx.signal, callback: rejectionOf(ctx.client.call({ type: 'NeverAnswered' })) };
        onHold();
        return new Promise(() => {});
      },
    };
    const server = await new Node().serve(shm(name), handler).start();
    const child = spawn(process.execPath, [new URL('./fixtures/shm-client.js', import.meta.url).pathname, JSON.stringify({ name })], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', () => resolve());
        child.once('exit', (code) => reject(new Error(`client exited with ${code}`)));
      });
      await gotHold;
      assert.equal(shmDirectStats().open, 1, 'the served connection is direct');
      const t0 = Date.now();
      process.kill(child.pid!, 'SIGKILL');
      const err = (await held!.callback) as RpcError;
      assert.equal(err.code, 'CLOSED');
      assert.ok(held!.signal.aborted, "the handler's signal fired");
      assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      await server.close();
    }
  });

  it("closing from our side: the peer's handler is aborted and its calls settle CLOSED at once; ours reject CLOSED", async () => {
    const name = uniqueName();
    let aborted!: () => void;
    const abortedNow = new Promise<void>((resolve) => (aborted = resolve));
    let serverCall: Promise<unknown> | undefined;
    const handler = {
      onRequest(_req: unknown, ctx: CallContext) {
        ctx.signal.addEventListener('abort', () => aborted());
        serverCall = rejectionOf(ctx.client.call('never answered'));
        return new Promise(() => {});
      },
    };
    const server = await new Node().serve(shm(name), handler).start();
    const client = await new Node().connect<any, any>(shm(name), { handler: { onRequest: () => new Promise(() => {}) } }).start();
    try {
      const pending = rejectionOf(client.client.call('held'));
      await waitUntil(() => serverCall !== undefined, 2000, 'the server got the call');
      await assertDirect(client);
      assert.equal(shmDirectStats().open, 2);
      const t0 = Date.now();
      await client.close();
      assert.equal(((await pending) as RpcError).code, 'CLOSED');
      await abortedNow;
      assert.equal(((await serverCall) as RpcError).code, 'CLOSED');
      assert.ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
      // The served connection has gone on the server's side too.
      for (let i = 0; (await server.stats()).listeners[0].connections > 0; i++) {
        assert.ok(i < 100, 'the server still counts the connection after 1 s');
        await sleep(10);
      }
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('a full 4 KiB ring both ways: 300 calls of 20 KiB and 300 small ones in flight at once lose nothing', async () => {
    const name = uniqueName();
    const server = await new Node().serve(shm(name, { capacity: 4096 }), echoHandler).start();
    const client = await new Node().connect<any, any>(shm(name, { capacity: 4096 })).start();
    const child = await startServer({ transport: 'shm', name: uniqueName(), capacity: 4096, handler: 'module' });
    const toChild = await new Node().connect<any, any>(shm((child.address as { name: string }).name, { capacity: 4096 })).start();
    try {
      await assertDirect(client);
      await assertDirect(toChild);
      for (const target of [client, toChild]) {
        const calls = Array.from({ length: 600 }, (_, i) => {
          const data = bytes(i % 2 === 0 ? 20 * 1024 : 16, i);
          return target.client.call({ type: 'Echo', text: String(i), data }).then((got: any) => {
            assert.equal(got.text, String(i));
            assert.ok(Buffer.from(got.data).equals(Buffer.from(data)), `call ${i} intact`);
          });
        });
        await Promise.all(calls);
      }
    } finally {
      await client.close();
      await server.close();
      await toChild.close();
      await child.kill('SIGTERM');
    }
  });

  it('keepalive on the direct path: a server process that stops answering (SIGSTOP) is detected by the ping this thread sends', async () => {
    const name = uniqueName();
    const server = await startServer({ transport: 'shm', name, handler: 'module' });
    const client = await new Node({ keepAliveMs: 200 }).connect<any, any>(shm(name)).start();
    try {
      assert.deepEqual(await client.client.call({ type: 'Ping' }), { type: 'Pong' });
      await assertDirect(client);
      // Quiet for several intervals: the server's worker answers our pings, nothing closes.
      await sleep(700);
      assert.equal(client.client.state, 'ready');
      process.kill(server.pid, 'SIGSTOP'); // its control socket stays open: only the keepalive can tell
      await waitUntil(() => /\) T/.test(fs.readFileSync(`/proc/${server.pid}/stat`, 'utf8')), 2000, 'the server stopped');
      const t0 = Date.now();
      const err = (await rejectionOf(client.client.call({ type: 'Ping' }))) as RpcError;
      assert.equal(err.code, 'CLOSED');
      assert.match(err.message, /keepalive/);
      assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
    } finally {
      process.kill(server.pid, 'SIGCONT');
      await client.close();
      await server.kill('SIGTERM');
    }
  });

  it("a frame over this side's maxFrameBytes closes the connection with FRAME_TOO_LARGE; the other connections carry on", async () => {
    const name = uniqueName();
    const server = await startServer({ transport: 'shm', name, handler: 'module' });
    const small = await new Node({ maxFrameBytes: 64 * 1024 }).connect<any, any>(shm(name)).start();
    const other = await new Node().connect<any, any>(shm(name)).start();
    try {
      await assertDirect(small);
      const pending = rejectionOf(small.client.call({ type: 'Wait', tag: 1, ms: 5000 }));
      // The server sends one event of 100 KB: over our limit, so the connection closes (and the
      // answer to this call, if it comes behind the event, is not read).
      const flood = small.client.call({ type: 'Flood', max: 1, size: 100_000 }).catch((e: RpcError) => e);
      const err = (await pending) as RpcError;
      assert.equal(err.code, 'FRAME_TOO_LARGE');
      const floodResult = await flood;
      assert.ok(floodResult === 'flooding' || floodResult.code === 'FRAME_TOO_LARGE', String(floodResult));
      assert.deepEqual(await other.client.call({ type: 'Echo', text: 'still here' }), { type: 'Echo', text: 'still here' });
    } finally {
      await small.close();
      await other.close();
      await server.kill('SIGTERM');
    }
  });

  it("a main-thread handler's server closing gracefully (graceMs): the call it serves is answered, new ones are refused, then the connection closes", async () => {
    const name = uniqueName();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const server = await new Node().serve(shm(name), { onRequest: async (req: unknown) => (req === 'slow' ? released.then(() => 'done') : req) }).start();
    const client = await new Node().connect<any, any>(shm(name)).start();
    try {
      const slow = client.client.call('slow');
      await assertDirect(client);
      await sleep(50);
      const closing = server.close({ graceMs: 10_000 });
      await sleep(50);
      const refused = (await rejectionOf(client.client.call('refused'))) as RpcError;
      assert.equal(refused.code, 'UNAVAILABLE');
      release();
      assert.equal(await slow, 'done');
      await closing;
      await waitUntil(() => client.client.closedWith !== undefined, 1000, 'the client saw the close');
      assert.equal(client.client.closedWith?.code, 'CLOSED');
      assert.match(client.client.closedWith!.message, /the server closed/);
    } finally {
      await client.close();
      await server.close();
    }
  });

  for (const idle of Object.keys(kIdlePresets) as IdlePreset[]) {
    it(`idle '${idle}': the direct path answers single, spaced and 64 concurrent calls; its readers take the preset's peer window`, async () => {
      const name = uniqueName();
      const p = kIdlePresets[idle];
      const server = await new Node({ idle }).serve(shm(name, { capacity: 1 << 16 }), echoHandler).start();
      const client = await new Node({ idle }).connect<number, number>(shm(name, { capacity: 1 << 16 })).start();
      try {
        for (let i = 0; i < 10; i++) {
          await sleep(2);
          assert.equal(await client.client.call(i), i);
        }
        assert.deepEqual(await Promise.all(Array.from({ length: 64 }, (_, i) => client.client.call(i))), Array.from({ length: 64 }, (_, i) => i));
        const { readers } = shmDirectStats();
        assert.equal(readers.length, 2);
        for (const r of readers) assert.deepEqual({ spinMicros: r.spinMicros, pollMicros: r.pollMicros }, { spinMicros: p.spinMicros, pollMicros: p.peerPollMicros });
      } finally {
        await client.close();
        await server.close();
      }
    });
  }
});
