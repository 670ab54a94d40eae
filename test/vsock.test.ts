/**
 * vsock(): the addon's AF_VSOCK listen/connect, and its fd-stream I/O path. This machine has
 * /dev/vsock but no vsock loopback (DESIGN.md §5): binding and listening work, nothing answers a
 * connect, and CID 2 (the host) is never dialled. So the data path is proven end to end over a
 * Unix socketpair, which the same FdStream code drives.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { Node, custom, vsock } from '../src/index.js';
import { loadNative, nativeAvailable, type NativeError } from '../src/shm/native.js';
import { FdByteStream } from '../src/transport/vsock.js';
import { rejectionOf } from './helpers.js';

const kHasVsock = fs.existsSync('/dev/vsock');

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe('vsock and native fd streams', function () {
  before(function () {
    if (!nativeAvailable()) this.skip();
  });

  it('vsockListen binds VMADDR_CID_ANY and getsockname reports the port', function () {
    if (!kHasVsock) this.skip();
    const native = loadNative();
    const any = native.vsockListen({ port: 0 });
    try {
      assert.equal(any.cid, 0xffffffff);
      assert.ok(any.port > 0 && any.port < 0xffffffff, `kernel-picked port ${any.port}`);
    } finally {
      native.closeFd(any.fd);
    }
    const fixed = 40_000 + (process.pid % 20_000);
    const bound = native.vsockListen({ port: fixed });
    try {
      assert.equal(bound.port, fixed);
      const err = (() => {
        try {
          native.vsockListen({ port: fixed });
        } catch (e) {
          return e as NativeError;
        }
      })();
      assert.equal(err?.code, 'EADDRINUSE');
    } finally {
      native.closeFd(bound.fd);
    }
  });

  it('connecting to CID 1 fails within a few seconds with a clear code, and CID 2 is refused outright', async function () {
    if (!kHasVsock) this.skip();
    this.timeout(10_000);
    const native = loadNative();
    const t0 = Date.now();
    const err = (await rejectionOf(native.vsockConnect({ cid: 1, port: 9, timeoutMs: 3000 }))) as unknown as NativeError;
    assert.ok(Date.now() - t0 < 4000, `took ${Date.now() - t0} ms`);
    assert.ok(['ETIMEDOUT', 'ECONNREFUSED', 'ECONNRESET', 'ENODEV', 'ENETUNREACH', 'EHOSTUNREACH'].includes(err.code), err.code);
    assert.equal(err.syscall, 'connect');
    const host = (await rejectionOf(native.vsockConnect({ cid: 2, port: 9 }))) as unknown as NativeError;
    assert.equal(host.code, 'EPERM');
  });

  it('a Node serving vsock() reports its address; a client to CID 1 fails start() with UNAVAILABLE', async function () {
    if (!kHasVsock) this.skip();
    this.timeout(15_000);
    const server = await new Node().serve(vsock({ port: 0 }), { onRequest: () => 'x' }).start();
    try {
      const address = server.addresses[0] as { kind: string; cid: number; port: number };
      assert.equal(address.kind, 'vsock');
      assert.equal(address.cid, 0xffffffff);
      assert.ok(address.port > 0);
    } finally {
      await server.close();
    }
    const t0 = Date.now();
    const err = await rejectionOf(new Node().connect(vsock({ cid: 1, port: 9 })).start());
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /vsock:1:9/);
    assert.ok(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`);
    assert.throws(() => vsock({ cid: -1, port: 1 }), { code: 'INVALID_ARGUMENT' });
  });

  it('FdStreams over a socketpair carry 1 MiB each way intact, with backpressure, and close propagates', async function () {
    this.timeout(10_000);
    const native = loadNative();
    const [fa, fb] = native.socketpair();
    const out = [pattern(1 << 20, 1), pattern(1 << 20, 2)];
    const received: Buffer[][] = [[], []];
    const closed: Array<Promise<unknown>> = [];
    const drained = [0, 0];
    const ends = [fa, fb].map((fd, i) => {
      let onClose!: (e?: unknown) => void;
      closed.push(new Promise((r) => (onClose = r)));
      return new native.FdStream(fd, {
        onData: (chunk) => received[i].push(chunk),
        onDrain: () => drained[i]++,
        onClose: (e) => onClose(e ?? 'clean'),
      });
    });
    const falses = [0, 0];
    for (let i = 0; i < 2; i++) {
      for (let off = 0; off < out[i].length; off += 100_000) {
        if (!ends[i].write(out[i].subarray(off, off + 100_000))) falses[i]++;
      }
    }
    assert.ok(falses[0] > 0 && falses[1] > 0, 'write returned false once the socket buffer filled');
    ends[0].end();
    assert.deepEqual(await Promise.all(closed), ['clean', 'clean']);
    assert.ok(drained[0] > 0 && drained[1] > 0, 'drain followed');
    assert.ok(Buffer.concat(received[1]).equals(out[0]), 'a -> b intact');
    assert.ok(Buffer.concat(received[0]).equals(out[1]), 'b -> a intact');
  });

  it('pause() holds data back and destroy() closes the peer with an end', async function () {
    const native = loadNative();
    const [fa, fb] = native.socketpair();
    const got: Buffer[] = [];
    let bClosed!: (e: unknown) => void;
    const bClose = new Promise((r) => (bClosed = r));
    const b = new native.FdStream(fb, { onData: (c) => got.push(c), onClose: (e) => bClosed(e ?? 'clean') });
    b.pause();
    const a = new native.FdStream(fa, {});
    a.write(Buffer.from('held'));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(got.length, 0);
    b.resume();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(Buffer.concat(got).toString(), 'held');
    a.destroy();
    assert.equal(await bClose, 'clean');
  });

  it('a full ogurpchik call rides FdByteStream over a socketpair (custom transport)', async function () {
    this.timeout(15_000);
    const [serverFd, clientFd] = loadNative().socketpair();
    const module = new URL('./fixtures/fd-transport.js', import.meta.url);
    const server = await new Node().serve(custom(module, { listenFd: serverFd }, 'fd'), { onRequest: (req: any) => ({ echo: req }) }).start();
    const client = await new Node().connect<any, any>(custom(module, { connectFd: clientFd }, 'fd')).start();
    try {
      const big = pattern(300_000, 5);
      const res = await client.client.call({ text: 'hi', big });
      assert.equal(res.echo.text, 'hi');
      assert.ok(Buffer.from(res.echo.big).equals(big));
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('FdByteStream reports close once, after destroy', async function () {
    const [fa, fb] = loadNative().socketpair();
    const s = new FdByteStream(fa);
    const closes: unknown[] = [];
    s.start({ data() {}, drain() {}, close: (e) => closes.push(e) });
    s.destroy();
    s.destroy();
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(closes, [undefined]);
    loadNative().closeFd(fb);
  });

  it('a worker thread exiting with open FdStreams, an acceptor and a pending connect cleans up without crashing', async function () {
    this.timeout(10_000);
    const nativeUrl = new URL('../src/shm/native.js', import.meta.url).href;
    const source = `
      const { loadNative } = await import(${JSON.stringify(nativeUrl)});
      const { parentPort } = await import('node:worker_threads');
      const n = loadNative();
      const [a, b] = n.socketpair();
      const sa = new n.FdStream(a, { onData() {} });
      const sb = new n.FdStream(b, { onData() {} });
      sa.write(Buffer.alloc(1 << 20));
      ${kHasVsock ? 'new n.FdAcceptor(n.vsockListen({ port: 0 }).fd, () => {}); n.vsockConnect({ cid: 1, port: 9, timeoutMs: 5000 }).catch(() => {});' : ''}
      parentPort.postMessage('ready');
    `;
    for (const how of ['terminate', 'exit'] as const) {
      const worker = new Worker(how === 'exit' ? source + 'setTimeout(() => process.exit(0), 20);' : source, { eval: true, type: 'module' } as any);
      const [msg] = await once(worker, 'message');
      assert.equal(msg, 'ready');
      if (how === 'terminate') await worker.terminate();
      else await once(worker, 'exit');
    }
  });
});
