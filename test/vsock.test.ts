/**
 * vsock(): AF_VSOCK through the addon's relay thread. This machine has /dev/vsock (CID 3) but no
 * vsock loopback (DESIGN.md §5): binding and listening work, nothing answers a connect, and CID 2
 * (the host) is never dialled — every connect here goes to CID 1, which times out. So the data
 * path is proven over Unix socketpairs pushed through the same relay code (`relayFd`), up to a
 * full RPC call, and teardown is stress-tested in a child process.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileDiscovery, Node, RegistryDiscovery, RpcError, custom, tcp, unix, vsock, type DiscoveryBackend } from '../src/index.js';
import { loadNative, nativeAvailable, type NativeError } from '../src/native/addon.js';
import { kVsockCidAny } from '../src/transport/descriptors.js';
import { relayedStream } from '../src/transport/vsock.js';
import { rejectionOf, sleep, tempDir } from './helpers.js';

const kHasVsock = fs.existsSync('/dev/vsock');
/** The only CID these tests ever connect to: nothing answers there. Never 2 (the host). */
const kSilentCid = 1;

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

async function until(what: string, check: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Reads a net.Socket to its end. */
function readAll(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

describe('vsock', function () {
  before(function () {
    if (!nativeAvailable()) this.skip();
  });

  describe('native relay thread', function () {
    it('relays a socketpair both ways: the status word, 4 MiB each way intact, half-closes, then lets go', async function () {
      this.timeout(15_000);
      const native = loadNative();
      const [a, b] = native.socketpair();
      // allowHalfOpen: a socket that reads end-of-file must not end its own writing by itself here.
      const ends = [native.relayFd(a), native.relayFd(b)].map((fd) => new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true }));
      assert.ok(native.vsockStats().relays >= 2);
      const out = [pattern(4 << 20, 1), pattern(4 << 20, 2)];
      const got = ends.map(readAll);
      ends[0].end(out[0]);
      // One side ends early; the other keeps writing through the half-closed relay.
      await sleep(20);
      ends[1].end(out[1]);
      const [at0, at1] = await Promise.all(got);
      // Each JS end first reads its own relay's status word (0: connected), then the peer's bytes.
      assert.deepEqual([...at0.subarray(0, 4)], [0, 0, 0, 0]);
      assert.deepEqual([...at1.subarray(0, 4)], [0, 0, 0, 0]);
      assert.ok(at1.subarray(4).equals(out[0]), 'a -> b intact');
      assert.ok(at0.subarray(4).equals(out[1]), 'b -> a intact');
      await until('both relays to finish', () => native.vsockStats().relays === 0);
    });

    it('a JS end destroyed mid-stream ends the relay and the peer sees the stream end', async function () {
      this.timeout(10_000);
      const native = loadNative();
      const [a, b] = native.socketpair();
      const relayed = new net.Socket({ fd: native.relayFd(a), readable: true, writable: true });
      const peer = new net.Socket({ fd: b, readable: true, writable: true });
      peer.on('error', () => {});
      const peerClosed = new Promise((resolve) => peer.once('close', resolve));
      relayed.write(pattern(1 << 20, 3));
      peer.write(pattern(1 << 20, 4)); // nobody reads it: the relay's buffer toward `relayed` fills
      await sleep(50);
      relayed.destroy();
      await peerClosed;
      await until('the relay to finish', () => native.vsockStats().relays === 0);
    });

    it('refuses bad arguments with clear errors and takes no ownership then', function () {
      const native = loadNative();
      const file = fs.openSync(fileURLToPath(import.meta.url), 'r');
      try {
        assert.throws(() => native.relayFd(file), (e: NativeError) => e.code === 'ENOTSOCK' || e.code === 'EINVAL');
        fs.fstatSync(file); // still open: the failed relayFd left it to us
      } finally {
        fs.closeSync(file);
      }
      assert.throws(() => native.relayFd(-1), { code: 'EINVAL' });
      assert.throws(() => native.vsockConnect({ cid: kVsockCidAny, port: 1 }), { code: 'EINVAL' });
      assert.throws(() => native.vsockConnect({ cid: 1.5, port: 1 } as never), { code: 'EINVAL' });
      assert.throws(() => native.vsockListen({ port: -1 }), { code: 'EINVAL' });
      assert.equal(native.vsockTakeAccepted(123456), false);
    });
  });

  describe('sockets', function () {
    before(function () {
      if (!kHasVsock) this.skip();
    });

    it('listens on VMADDR_CID_ANY; getsockname reports the port; a taken port is EADDRINUSE; closing frees it', async function () {
      this.timeout(10_000);
      const native = loadNative();
      assert.equal(typeof native.vsockLocalCid(), 'number');
      const fixed = 40_000 + (process.pid % 20_000);
      const server = await new Node().serve(vsock({ port: fixed }), { onRequest: () => 'x' }).start();
      try {
        assert.deepEqual(server.addresses, [{ kind: 'vsock', cid: kVsockCidAny, port: fixed }]);
        assert.throws(() => native.vsockListen({ port: fixed }), { code: 'EADDRINUSE', syscall: 'bind' });
        const again = await rejectionOf(new Node().serve(vsock({ port: fixed }), { onRequest: () => 'x' }).start());
        assert.equal(again.code, 'UNAVAILABLE');
        assert.match(again.message, new RegExp(`cannot listen on vsock:${kVsockCidAny}:${fixed}: EADDRINUSE`));
      } finally {
        await server.close();
      }
      const reopened = await new Node().serve(vsock({ port: fixed }), { onRequest: () => 'x' }).start();
      await reopened.close();
      const picked = await new Node().serve(vsock({ port: 0 }), { onRequest: () => 'x' }).start();
      const [address] = picked.addresses as { kind: 'vsock'; cid: number; port: number }[];
      assert.ok(address.port > 0 && address.port < kVsockCidAny, `kernel-picked port ${address.port}`);
      await picked.close();
    });

    it(`connecting to CID ${kSilentCid} fails within the connect timeout with ETIMEDOUT in the status word`, async function () {
      this.timeout(10_000);
      const native = loadNative();
      const t0 = Date.now();
      const err = await rejectionOf(relayedStream(native.vsockConnect({ cid: kSilentCid, port: 9, timeoutMs: 300 }), 'vsock:1:9', 5000));
      const took = Date.now() - t0;
      assert.equal(err.code, 'ETIMEDOUT');
      assert.equal(err.syscall, 'connect');
      assert.ok(took >= 250 && took < 2000, `took ${took} ms`);
      await until('the connect relay to go', () => native.vsockStats().relays === 0);
    });

    it(`a Node connecting to CID ${kSilentCid} fails start() with UNAVAILABLE, bounded, and nothing leaks`, async function () {
      this.timeout(15_000);
      const t0 = Date.now();
      const err = await rejectionOf(new Node().connect(vsock({ cid: kSilentCid, port: 9, connectTimeoutMs: 400 })).start());
      assert.ok(RpcError.is(err));
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /vsock:1:9/);
      assert.equal((err.cause as NativeError | undefined)?.code, 'ETIMEDOUT');
      assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
      // A call made on the node never started cannot hang: there is no node. And the descriptor's default timeout is the kernel's.
      assert.equal(vsock({ cid: kSilentCid, port: 9 }).connectTimeoutMs, 2000);
    });

    it('a published vsock server records transport_kind "vsock" and "cid:port" with the local CID', async function () {
      this.timeout(10_000);
      const { dir, remove } = tempDir();
      try {
        const discovery = new FileDiscovery({ dir });
        const server = await new Node({ discovery }).serve(vsock({ port: 0 }), { onRequest: () => 'x' }).publish('guest-svc').start();
        try {
          const [address] = server.addresses as { port: number }[];
          const record = await discovery.lookup('guest-svc');
          assert.equal(record?.transport_kind, 'vsock');
          assert.deepEqual(record?.map, { '0': `${loadNative().vsockLocalCid()}:${address.port}` });
        } finally {
          await server.close();
        }
        assert.equal(await discovery.lookup('guest-svc'), undefined);
      } finally {
        remove();
      }
    });

    it('waitFor(name, { transport: "vsock" }) connects to the record\'s "cid:port"; other kinds and bad addresses are refused', async function () {
      this.timeout(15_000);
      const { dir, remove } = tempDir();
      try {
        const discovery = new FileDiscovery({ dir });
        await discovery.publish('vm-svc', { transport_kind: 'vsock', codec_kind: 'msgpack', map: { '0': `${kSilentCid}:9` } });
        const err = await rejectionOf(new Node({ discovery }).waitFor('vm-svc', { transport: 'vsock', timeoutMs: 2000 }).start());
        assert.equal(err.code, 'UNAVAILABLE');
        assert.match(err.message, /cannot connect to vsock:1:9/);
        const kind = await rejectionOf(new Node({ discovery }).waitFor('vm-svc', { timeoutMs: 2000 }).start());
        assert.equal(kind.code, 'INVALID_ARGUMENT');
        assert.match(kind.message, /published as vsock\/msgpack, but this client speaks tcp\/msgpack/);
        await discovery.publish('bad-svc', { transport_kind: 'vsock', codec_kind: 'msgpack', map: { '0': 'not-a-cid' } });
        const bad = await rejectionOf(new Node({ discovery }).waitFor('bad-svc', { transport: 'vsock', timeoutMs: 2000 }).start());
        assert.equal(bad.code, 'INVALID_ARGUMENT');
        assert.match(bad.message, /expected "cid:port"/);
        await discovery.unpublish('vm-svc');
        await discovery.unpublish('bad-svc');
      } finally {
        remove();
      }
    });

    it('a self-managed client takes its CID from the host entry at start(): file and registry backends', async function () {
      this.timeout(15_000);
      const { dir, remove } = tempDir();
      try {
        const files = new FileDiscovery({ dir });
        await files.registerHost('guest vm', kSilentCid);
        assert.equal(await files.lookupHost('guest vm'), kSilentCid);
        assert.equal((fs.statSync(path.join(dir, 'hosts')).mode & 0o777).toString(8), '700');
        const viaFiles = await rejectionOf(new Node({ discovery: files }).connect(vsock({ vm: 'guest vm', port: 9, connectTimeoutMs: 300 })).start());
        assert.equal(viaFiles.code, 'UNAVAILABLE');
        assert.match(viaFiles.message, /cannot connect to vsock:1:9/); // the CID came from the entry
        await files.unregisterHost('guest vm');
        const gone = await rejectionOf(new Node({ discovery: files }).connect(vsock({ vm: 'guest vm', port: 9 })).start());
        assert.equal(gone.code, 'UNAVAILABLE');
        assert.match(gone.message, /no vsock CID is registered for VM "guest vm"/);

        // The registry backend (reg.exe, which cannot run here) answers with a recorded output.
        const seen: string[][] = [];
        const registry = new RegistryDiscovery({
          run: async (args) => {
            seen.push(args);
            return { code: 0, stderr: '', stdout: `\r\nHKEY_CURRENT_USER\\Software\\Ogurpchik\\Hosts\\Ubuntu\r\n    Cid    REG_DWORD    0x${kSilentCid.toString(16)}\r\n\r\n` };
          },
        });
        const viaRegistry = await rejectionOf(new Node({ discovery: registry }).connect(vsock({ vm: 'Ubuntu', port: 9, connectTimeoutMs: 300 })).start());
        assert.equal(viaRegistry.code, 'UNAVAILABLE');
        assert.match(viaRegistry.message, /cannot connect to vsock:1:9/);
        assert.deepEqual(seen, [['query', 'HKCU\\Software\\Ogurpchik\\Hosts\\Ubuntu', '/v', 'Cid']]);

        const plain: DiscoveryBackend = { publish: async () => {}, unpublish: async () => {}, lookup: async () => undefined, waitFor: () => new Promise(() => {}), list: async () => [] };
        const noHosts = await rejectionOf(new Node({ discovery: plain }).connect(vsock({ vm: 'x', port: 9 })).start());
        assert.equal(noHosts.code, 'INVALID_ARGUMENT');
        const notCid: DiscoveryBackend = { ...plain, lookupHost: async () => kVsockCidAny };
        assert.equal((await rejectionOf(new Node({ discovery: notCid }).connect(vsock({ vm: 'x', port: 9 })).start())).code, 'INVALID_ARGUMENT');
      } finally {
        remove();
      }
    });
  });

  describe('the data path without a vsock peer', function () {
    it('a full RPC call rides relayed socketpair ends (the vsock stream code) both ways, server in another worker', async function () {
      this.timeout(20_000);
      const [serverFd, clientFd] = loadNative().socketpair();
      const module = new URL('./fixtures/fd-transport.js', import.meta.url);
      const server = await new Node().serve(custom(module, { listenFd: serverFd }, 'fd'), new URL('./fixtures/echo-handler.js', import.meta.url)).start();
      const client = await new Node().connect<unknown, any>(custom(module, { connectFd: clientFd }, 'fd')).start();
      try {
        const big = pattern(300_000, 5);
        const res = await client.client.call({ type: 'Echo', text: 'hi', data: big } as never);
        assert.equal(res.text, 'hi');
        assert.ok(Buffer.from(res.data).equals(big), '300 kB came back intact');
        const many = await Promise.all(Array.from({ length: 200 }, (_, i) => client.client.call({ type: 'Echo', text: `n${i}` } as never)));
        assert.deepEqual(
          many.map((r: any) => r.text),
          Array.from({ length: 200 }, (_, i) => `n${i}`),
        );
        await server.close();
        // The server's side went away: the client's next call settles with CLOSED, it does not hang.
        const closed = await rejectionOf(client.client.call({ type: 'Ping' } as never, { timeoutMs: 5000 }));
        assert.equal(closed.code, 'CLOSED');
      } finally {
        await client.close();
        await server.close();
      }
    });

    it('the listener side: accepted connections announced, claimed and relayed serve calls from several clients', async function () {
      this.timeout(20_000);
      const { dir, remove } = tempDir();
      const file = path.join(dir, 'relayed.sock');
      const module = new URL('./fixtures/relay-listen-transport.js', import.meta.url);
      const server = await new Node().serve(custom(module, { path: file }, 'relayed'), { onRequest: (req: unknown, ctx) => ({ req, peer: ctx.peer.address }) }).start();
      const clients = await Promise.all([1, 2, 3].map(() => new Node().connect<unknown, any>(unix(file)).start()));
      try {
        assert.equal((fs.statSync(file).mode & 0o777).toString(8), '600');
        const answers = await Promise.all(clients.flatMap((c, i) => [0, 1, 2].map((j) => c.client.call({ i, j, data: pattern(50_000, i + j) }))));
        answers.forEach((a, k) => {
          assert.deepEqual([a.req.i, a.req.j], [Math.floor(k / 3), k % 3]);
          assert.ok(Buffer.from(a.req.data).equals(pattern(50_000, a.req.i + a.req.j)));
          assert.equal(a.peer, `relayed:${file}`);
        });
        await server.close();
        assert.equal(fs.existsSync(file), false);
        for (const c of clients) assert.equal((await rejectionOf(c.client.call(1, { timeoutMs: 5000 }))).code, 'CLOSED');
      } finally {
        for (const c of clients) await c.close();
        await server.close();
        remove();
      }
    });

    it('a listener closed with connections announced but not claimed closes them; they are no longer on offer', async function () {
      this.timeout(10_000);
      const native = loadNative();
      const { dir, remove } = tempDir();
      const file = path.join(dir, 'unclaimed.sock');
      try {
        const bound = native.relayListenUnix({ path: file });
        const control = new net.Socket({ fd: bound.control, readable: true, writable: true });
        control.pause(); // announcements wait unread
        const peers = [1, 2, 3].map(() => net.connect(file));
        const peerEnds = peers.map((p) => new Promise((resolve) => p.once('close', resolve).on('error', () => {})));
        await until('three announcements', () => native.vsockStats().unclaimed === 3);
        assert.equal(native.vsockStats().listeners, 1);
        const announced: Buffer[] = [];
        control.on('data', (c: Buffer) => announced.push(c));
        control.resume();
        await until('the announcements to arrive', () => Buffer.concat(announced).length === 36);
        const fds = [0, 1, 2].map((i) => Buffer.concat(announced).readUInt32LE(i * 12));
        const closed = new Promise((resolve) => control.once('close', resolve));
        control.end();
        await closed;
        await Promise.all(peerEnds); // each client saw its connection close
        assert.deepEqual(fds.map((fd) => native.vsockTakeAccepted(fd)), [false, false, false]);
        await until('the listener and its relays to go', () => native.vsockStats().listeners === 0 && native.vsockStats().unclaimed === 0 && native.vsockStats().relays === 0);
      } finally {
        fs.rmSync(file, { force: true });
        remove();
      }
    });

    it('a worker exiting with busy relays, a listener and a pending connect never aborts the process (30 runs, in a child)', async function () {
      this.timeout(120_000);
      const script = fileURLToPath(new URL('./fixtures/vsock-teardown-child.js', import.meta.url));
      const child = spawn(process.execPath, [script, '30'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c) => (stdout += c));
      child.stderr.on('data', (c) => (stderr += c));
      const timer = setTimeout(() => process.kill(child.pid!, 'SIGKILL'), 110_000);
      const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
      clearTimeout(timer);
      assert.equal(signal, null, `child died of ${signal}: ${stderr}`);
      assert.equal(code, 0, `child exited with ${code}: ${stderr}`);
      const report = JSON.parse(stdout.trim()) as { runs: number; before: { fds: number; threads: number }; after: { fds: number; threads: number } };
      assert.equal(report.runs, 30);
      // Every fd the relay threads owned was closed and every relay thread joined.
      assert.ok(report.after.fds <= report.before.fds, `fds ${report.before.fds} -> ${report.after.fds}`);
      assert.ok(report.after.threads <= report.before.threads, `threads ${report.before.threads} -> ${report.after.threads}`);
    });
  });

  describe('vsock() and the builder', function () {
    it('checks its arguments', function () {
      assert.throws(() => vsock({ cid: -1, port: 1 }), { code: 'INVALID_ARGUMENT' });
      assert.throws(() => vsock({ cid: 1, port: 2 ** 32 }), { code: 'INVALID_ARGUMENT' });
      assert.throws(() => vsock({ cid: 1, vm: 'x', port: 1 }), { code: 'INVALID_ARGUMENT' });
      assert.throws(() => vsock({ vm: 'a\\b', port: 1 }), { code: 'INVALID_ARGUMENT' });
      assert.throws(() => vsock({ cid: 1, port: 1, connectTimeoutMs: 0 }), { code: 'INVALID_ARGUMENT' });
      assert.throws(() => vsock(null as never), { code: 'INVALID_ARGUMENT' });
      assert.deepEqual(vsock({ port: 0 }), { kind: 'vsock', port: 0, connectTimeoutMs: 2000 });
      assert.throws(() => new Node().connect(vsock({ port: 1 })), { code: 'INVALID_ARGUMENT' });
      assert.throws(() => new Node().serve(vsock({ vm: 'x', port: 1 }), { onRequest: () => 1 }), { code: 'INVALID_ARGUMENT' });
      assert.doesNotThrow(() => new Node().serve(tcp('127.0.0.1:0'), { onRequest: () => 1 }).connect(vsock({ vm: 'x', port: 1 })));
    });

    it('throws NATIVE_MISSING with the build command when the addon is absent', async function () {
      this.timeout(5000);
      // A copy of the compiled factory and loader whose package root has no native/build.
      const root = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-vsock-missing-'));
      try {
        const dist = path.join(root, 'dist', 'src');
        fs.writeFileSync(path.join(root, 'package.json'), '{"type":"module"}');
        // The whole compiled tree (what descriptors.js imports changes), without the package's native/build.
        fs.cpSync(fileURLToPath(new URL('../src/', import.meta.url)), dist, { recursive: true });
        const copy = (await import(path.join(dist, 'transport', 'descriptors.js'))) as typeof import('../src/transport/descriptors.js');
        assert.throws(() => copy.vsock({ cid: 1, port: 9 }), (e: RpcError) => e.code === 'NATIVE_MISSING' && /npm run build:native/.test(e.message));
      } finally {
        fs.rmSync(root, { recursive: true, force: true });
      }
    });
  });
});
