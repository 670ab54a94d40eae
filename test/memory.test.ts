/**
 * Closed connections give their memory back: each connection's two main <-> worker rings
 * (2 x ringBytes of SharedArrayBuffer) are released once it closes. They used to stay reachable
 * on the main thread through a comlink call the closed worker never answered, 2 MiB per
 * connection for good.
 *
 * What is counted is what this thread holds: its live SharedArrayBuffer objects and connection
 * tasks, after a forced GC. The process's ArrayBuffer figure is no measure of it: a ring's memory
 * is freed only once the worker thread that used it has collected its own handle too, whenever
 * that worker next runs a GC (V8 counts no shared memory towards GC pressure), and a test cannot
 * force that.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Node, RpcError, tcp } from '../src/index.js';
import { RemoteTask } from '../src/main/remote-task.js';
import { createCodec, msgpack } from '../src/codec/index.js';
import { Session } from '../src/session/session.js';
import { encodeFrame } from '../src/protocol/framing.js';
import { encodeRequest } from '../src/protocol/envelope.js';
import { killAllChildren, startServer } from './helpers.js';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
v8.setFlagsFromString('--no-expose-gc');

/** Live objects of `ctor` on this thread after a full GC (v8.queryObjects is experimental: its warning is silenced here). */
async function liveAfterGc(ctor: Function): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const emit = process.emitWarning;
  process.emitWarning = () => {};
  try {
    return v8.queryObjects(ctor, { format: 'count' }) as number;
  } finally {
    process.emitWarning = emit;
  }
}

describe('memory', function () {
  this.timeout(60_000);
  after(killAllChildren);

  it('100 connections opened and closed: the main thread holds the rings and tasks of none of them', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    try {
      const transport = tcp(server.address as { host: string; port: number });
      const cycle = async () => {
        const node = await new Node().connect(transport).start();
        assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
        await node.close();
      };
      for (let i = 0; i < 10; i++) await cycle();
      const rings = await liveAfterGc(SharedArrayBuffer);
      const tasks = await liveAfterGc(RemoteTask);
      for (let i = 0; i < 100; i++) await cycle();
      // Leaking, every closed connection keeps its task and its two rings: 100 and 200 more.
      const moreTasks = (await liveAfterGc(RemoteTask)) - tasks;
      const moreRings = (await liveAfterGc(SharedArrayBuffer)) - rings;
      assert.ok(moreTasks <= 2, `${moreTasks} more connection tasks alive after 100 closed connections`);
      assert.ok(moreRings <= 6, `${moreRings} more SharedArrayBuffers alive after 100 closed connections`);
    } finally {
      await server.kill('SIGTERM');
    }
  });

  it('20 connections that announce a 64 MiB frame and send 10 bytes of it grow the server by far less than 20 x 64 MiB', async function () {
    if (!fs.existsSync('/proc/self/status')) this.skip();
    // The server's virtual size, not its RSS or ArrayBuffer figure: the buffer reserved for an
    // announced length is memory never written (no RSS), allocated in the connection's worker
    // (not this thread's, nor the server main thread's, ArrayBuffer count).
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    const vmSize = () => Number(/VmSize:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${server.pid}/status`, 'utf8'))![1]) * 1024;
    const sockets: net.Socket[] = [];
    try {
      const { port } = server.address as { port: number };
      const ping = encodeFrame(encodeRequest(1, 0, createCodec().encode({ type: 'Ping' })));
      const answered = (socket: net.Socket) => new Promise((resolve, reject) => socket.once('data', resolve).once('error', reject));
      for (let i = 0; i < 20; i++) {
        const socket = net.connect(port, '127.0.0.1');
        sockets.push(socket);
        socket.write(ping);
        // Served: the connection and its worker exist before the baseline.
        await answered(socket);
      }
      const before = vmSize();
      const partial = new Uint8Array(14);
      partial.set([0, 0, 0, 4]); // 64 MiB
      for (const socket of sockets) socket.write(partial);
      await new Promise((resolve) => setTimeout(resolve, 500));
      // A well-formed request on a fresh connection is still answered after them.
      const last = net.connect(port, '127.0.0.1');
      sockets.push(last);
      last.write(ping);
      await answered(last);
      const grown = vmSize() - before;
      assert.ok(grown < 64 * 2 ** 20, `the server grew by ${(grown / 2 ** 20).toFixed(0)} MiB of virtual memory`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await server.kill('SIGTERM');
    }
  });

  it('calls that have ended are not kept alive: 64 in flight over a long-lived session pair promote next to nothing to the old generation', async () => {
    // With Map call tables, V8 rebuilt an old table as an old one every few dozen calls, and each
    // dead table kept the calls it held alive through the next scavenges (old-to-new pointers are
    // roots there), with their promises and results: ~320 bytes per call promoted, and a
    // mark-compact every few thousand calls.
    const peer = { transport: 'unknown', auth: 'none', connectionId: 1 } as const;
    const copy = (head: Uint8Array, payload: Uint8Array) => Buffer.concat([head, payload]);
    let client!: Session;
    const server = new Session({ codec: createCodec(msgpack()), peer, send: (h, p) => void setImmediate((m) => client.receive(m), copy(h, p)), handler: { onRequest: (r: unknown) => r } });
    client = new Session({ codec: createCodec(msgpack()), peer, send: (h, p) => void setImmediate((m) => server.receive(m), copy(h, p)) });
    const payload = new Uint8Array(16);
    const run = async (calls: number) => {
      let left = calls;
      const lane = async () => {
        while (left-- > 0) assert.equal((await client.call(payload)).length, 16);
      };
      await Promise.all(Array.from({ length: 64 }, lane));
    };
    await run(1_000);
    // Into the old generation with everything else of the sessions, as a connection's tables get.
    gc();
    gc();
    await run(10_000);
    const profiler = new v8.GCProfiler();
    profiler.start();
    const calls = 100_000;
    await run(calls);
    const { statistics } = profiler.stop();
    const oldSpace = (s: { heapSpaceStatistics: Array<{ spaceName: string; spaceUsedSize: number }> }) =>
      s.heapSpaceStatistics.find((space) => space.spaceName === 'old_space')!.spaceUsedSize;
    let promoted = 0;
    for (const s of statistics) if (s.gcType === 'Scavenge') promoted += Math.max(0, oldSpace(s.afterGC) - oldSpace(s.beforeGC));
    assert.ok(promoted / calls < 32, `${(promoted / calls).toFixed(0)} bytes promoted per call over ${calls} calls`);
    client.close(new RpcError('CLOSED', 'done'));
    server.close(new RpcError('CLOSED', 'done'));
  });

  it('connections opened and closed in a loop do not pile up dead rings, with no forced GC', async () => {
    // V8 counts no SharedArrayBuffer towards GC pressure: unweighed, the dead rings of 300
    // connections (2 MiB each) piled up to 200-470 MiB before some unrelated GC took them.
    await using server = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }).start();
    const transport = tcp(server.addresses[0] as { host: string; port: number });
    const base = process.memoryUsage().arrayBuffers;
    let most = 0;
    for (let i = 0; i < 300; i++) {
      const node = await new Node().connect(transport).start();
      assert.equal(await node.client.call(i), i);
      await node.close();
      most = Math.max(most, process.memoryUsage().arrayBuffers - base);
    }
    assert.ok(most < 160 * 2 ** 20, `ArrayBuffer memory grew by up to ${(most / 2 ** 20).toFixed(0)} MiB over 300 connections`);
  });

  it('without the native addon too (a ballast weighs each ring): a connect/close loop does not pile up dead rings', async () => {
    // A copy of the compiled runtime whose package root has no native/build, run in a child.
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ogurpchik-no-native-'));
    try {
      fs.cpSync(fileURLToPath(new URL('../src', import.meta.url)), path.join(root, 'dist', 'src'), { recursive: true });
      fs.writeFileSync(path.join(root, 'package.json'), '{"type":"module"}');
      fs.symlinkSync(fileURLToPath(new URL('../../node_modules', import.meta.url)), path.join(root, 'node_modules'));
      const index = pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href;
      const native = pathToFileURL(path.join(root, 'dist', 'src', 'native', 'addon.js')).href;
      const script = `
        const { Node, tcp } = await import(${JSON.stringify(index)});
        const { nativeAvailable } = await import(${JSON.stringify(native)});
        if (nativeAvailable()) throw new Error('the copy found the addon');
        const server = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r) => r }).start();
        const base = process.memoryUsage().arrayBuffers;
        let most = 0;
        for (let i = 0; i < 300; i++) {
          const node = await new Node().connect(tcp(server.addresses[0])).start();
          if ((await node.client.call(i)) !== i) throw new Error('bad echo');
          await node.close();
          most = Math.max(most, process.memoryUsage().arrayBuffers - base);
        }
        await server.close();
        console.log(JSON.stringify({ most }));`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      const killer = setTimeout(() => process.kill(child.pid!, 'SIGKILL'), 45_000);
      const code = await new Promise((resolve) => child.once('exit', (c, sig) => resolve(c ?? sig)));
      clearTimeout(killer);
      assert.equal(code, 0, `the child ended with ${code}`);
      // Counted here: the rings and, beside each live one, its ballast of the same size.
      const { most } = JSON.parse(out.trim()) as { most: number };
      assert.ok(most < 200 * 2 ** 20, `ArrayBuffer memory grew by up to ${(most / 2 ** 20).toFixed(0)} MiB over 300 connections`);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
