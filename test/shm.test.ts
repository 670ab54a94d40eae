/** Cross-process shared memory: echo of every size, peer death on either side, backpressure, one-to-many. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createInterface } from 'node:readline';
import { Node, RpcError, shm, type CallContext, type RunningNode } from '../src/index.js';
import { nativeAvailable } from '../src/native/addon.js';
import { shmControlPath, shmTransport, type ShmAdapterOptions } from '../src/transport/shm.js';
import type { ByteStream } from '../src/transport/types.js';
import path from 'node:path';
import { rejectionOf, startServer, type ChildServer } from './helpers.js';

const kCapacity = 1024 * 1024;
let serial = 0;
const uniqueName = () => `t${process.pid}-${++serial}`;
const ourSegments = () => fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`ogurpchik-t${process.pid}-`));
const ourControlSockets = () => {
  const dir = path.dirname(shmControlPath('x'));
  return fs.readdirSync(dir).filter((n) => n.startsWith(`ogurpchik-shm-t${process.pid}-`));
};

function pattern(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 4093) b[i] = (i / 4093) & 0xff;
  b[n - 1] = 0x5a;
  return b;
}

describe('shm transport', function () {
  this.timeout(60_000);
  before(function () {
    if (!nativeAvailable()) throw new Error('the native addon is not built: npm run build:native');
  });
  afterEach(() => {
    assert.deepEqual(ourSegments(), [], 'a test left shared-memory segments behind');
  });
  after(() => {
    assert.deepEqual(ourControlSockets(), [], 'the tests left control sockets behind');
  });

  describe('echo between two processes, 1 MiB rings', () => {
    let server: ChildServer;
    let node: RunningNode<any, any>;
    const name = uniqueName();
    before(async () => {
      // 64 MiB payloads need frames a little over the default 64 MiB maximum.
      const maxFrameBytes = 80 * 1024 * 1024;
      server = await startServer({ transport: 'shm', name, capacity: kCapacity, handler: 'module', maxFrameBytes });
      node = await new Node({ maxFrameBytes }).connect(shm(name, { capacity: kCapacity })).start();
    });
    after(async () => {
      await node?.close();
      await server?.kill('SIGTERM');
    });

    for (const size of [0, 1, kCapacity - 1, kCapacity + 1, 64 * 1024 * 1024]) {
      it(`echoes ${size} bytes intact`, async () => {
        const sent = pattern(Math.max(size, 1)).subarray(0, size);
        const got = await node.client.call(sent);
        assert.equal(got.length, size);
        assert.ok(Buffer.from(got).equals(Buffer.from(sent)));
      });
    }

    it('reports the client pid to the server from the OS (SO_PEERCRED)', async () => {
      const res = await node.client.call({ type: 'Pid' });
      assert.equal(res.pid, server.pid);
      assert.equal(res.peer.transport, 'shm');
      assert.equal(res.peer.pid, process.pid);
    });

    it('loses nothing under ring-full backpressure (20,000 pipelined 4 KiB calls, each counted)', async () => {
      const payload = new Uint8Array(4096);
      const calls = Array.from({ length: 20_000 }, (_, i) => node.client.call({ type: 'Echo', text: String(i), data: payload }));
      const results = await Promise.all(calls);
      let count = 0;
      results.forEach((r, i) => {
        assert.equal(r.text, String(i));
        count++;
      });
      assert.equal(count, 20_000);
    });
  });

  it('the server killed with SIGKILL mid-call: pending calls reject within 2 s, nothing left in /dev/shm', async () => {
    const name = uniqueName();
    const server = await startServer({ transport: 'shm', name, handler: 'module' });
    const node = await new Node().connect(shm(name)).start();
    try {
      const calls = Array.from({ length: 10 }, (_, i) => rejectionOf(node.client.call({ type: 'Wait', tag: i })));
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      await server.kill('SIGKILL');
      for (const err of await Promise.all(calls)) assert.equal(err.code, 'CLOSED');
      assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
    } finally {
      await node.close();
      // A killed server cannot remove its control socket; the next server of that name would.
      fs.rmSync(shmControlPath(name), { force: true });
    }
  });

  it('the client killed with SIGKILL mid-call: the server side settles within 2 s, nothing left', async () => {
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
      const t0 = Date.now();
      process.kill(child.pid!, 'SIGKILL');
      const err = (await held!.callback) as RpcError;
      assert.equal(err.code, 'CLOSED');
      assert.ok(held!.signal.aborted, "the handler's signal fired");
      assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      await server.close();
    }
  });

  it('serves 8 clients at once (one-to-many)', async () => {
    const name = uniqueName();
    const server = await startServer({ transport: 'shm', name, handler: 'main' });
    const clients = await Promise.all(Array.from({ length: 8 }, () => new Node().connect<any, any>(shm(name)).start()));
    try {
      const results = await Promise.all(clients.flatMap((c, i) => Array.from({ length: 100 }, (_, j) => c.client.call({ type: 'Echo', text: `${i}/${j}` }))));
      assert.equal(results.length, 800);
      results.forEach((r, k) => assert.equal(r.text, `${Math.floor(k / 100)}/${k % 100}`));
    } finally {
      for (const c of clients) await c.close();
      await server.kill('SIGTERM'); // a graceful close removes the control socket
    }
  });

  it('segments left by a crashed owner are cleaned up the next time that name is served', async () => {
    const name = uniqueName();
    // A dead pid's segment, as a server killed mid-rendezvous would leave it.
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => dead.once('exit', r));
    const { loadNative } = await import('../src/native/addon.js');
    const leftover = `/ogurpchik-${name}-${dead.pid}-1-c2s`;
    loadNative().shmOpen({ name: leftover, size: 8192, create: true });
    assert.ok(fs.existsSync(`/dev/shm${leftover}`));
    const server = await new Node().serve(shm(name), { onRequest: (r: unknown) => r }).start();
    assert.equal(fs.existsSync(`/dev/shm${leftover}`), false);
    await server.close();
  });

  it('the poll window of the shm rings: a reader does not sleep between messages within it, and sleeps after each without one', async () => {
    // The adapter itself, in this thread: each side's reader counts its sleeps.
    const sleepsOfServer = async (pollMicros: number): Promise<number> => {
      const options: ShmAdapterOptions = { ...shm(uniqueName(), { capacity: 4096 }), pollMicros, spinMicros: 0 };
      let accepted!: ByteStream;
      const gotStream = new Promise<void>((resolve) => {
        void shmTransport.listen(options, (stream) => {
          accepted = stream;
          stream.start({ data: (chunk) => stream.write(chunk.slice()), drain: () => {}, close: () => {} });
          resolve();
        }).then((l) => (listener = l));
      });
      let listener: { close(): Promise<void> } | undefined;
      while (listener === undefined) await new Promise((r) => setTimeout(r, 5));
      const client = await shmTransport.connect(options);
      await gotStream;
      let onEcho: (() => void) | undefined;
      client.start({ data: () => onEcho?.(), drain: () => {}, close: () => {} });
      try {
        for (let i = 0; i < 30; i++) {
          // A gap of a few ms: longer than a loop turn (so a reader without a window sleeps), far shorter than the 1 s window.
          await new Promise((r) => setTimeout(r, 3));
          const echoed = new Promise<void>((resolve) => (onEcho = resolve));
          client.write(new Uint8Array([i]));
          await echoed;
        }
        return (accepted as unknown as { readerSleeps: number }).readerSleeps;
      } finally {
        client.destroy();
        accepted.destroy();
        await listener.close();
      }
    };
    const asleep = await sleepsOfServer(0);
    const polling = await sleepsOfServer(1_000_000);
    assert.ok(asleep >= 25, `without a window the server's reader slept ${asleep} times in 30 messages`);
    assert.ok(polling <= 2, `within a 1 s window the server's reader slept ${polling} times in 30 messages`);
  });

  it('a peer that writes and closes at once: its last bytes arrive before the close (100 rounds)', async () => {
    // The peer's control socket closing could overtake the reader's futex wake-up, and what was
    // still in the ring was dropped (in ~40% of rounds).
    for (let round = 0; round < 100; round++) {
      const options: ShmAdapterOptions = { ...shm(uniqueName(), { capacity: 4096 }), pollMicros: 0, spinMicros: 0 };
      const listener = await shmTransport.listen(options, (stream) => {
        stream.start({ data: () => {}, drain: () => {}, close: () => {} });
        stream.write(new Uint8Array([1, 2, 3]));
        stream.end();
      });
      try {
        const client = await shmTransport.connect(options);
        const received = await new Promise<number>((resolve) => {
          let n = 0;
          client.start({ data: (chunk) => (n += chunk.length), drain: () => {}, close: () => resolve(n) });
        });
        assert.equal(received, 3, `round ${round}: the bytes written before the close were lost`);
      } finally {
        await listener.close();
      }
    }
    assert.deepEqual(ourSegments(), []);
  });

  it('bad names and capacities are refused with INVALID_ARGUMENT', () => {
    for (const f of [() => shm('a/b'), () => shm(''), () => shm('x', { capacity: 0 })]) {
      assert.throws(f, (e: RpcError) => e.code === 'INVALID_ARGUMENT');
    }
  });
});
