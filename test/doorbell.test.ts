/**
 * Eventfd doorbells (native/src/doorbell.cc) through src/native/addon.ts: a ring in one process
 * wakes a uv_poll on another process's loop; closing a watch releases the poll (the loop may
 * exit, a worker may exit with one open); SCM_RIGHTS passing; no fd leaks; doorbellSignal as a
 * RingSignal.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import net from 'node:net';
import { doorbellSignal, futexSignal, loadNative, type NativeBinding, type NativeError } from '../src/native/addon.js';
import { Node, shm } from '../src/index.js';
import { shmDirectStats } from '../src/main/shm-direct.js';
import { shmControlPath, shmTransport } from '../src/transport/shm.js';
import type { ByteStream } from '../src/transport/types.js';
import { RingReader, RingWriter, initRing, kRingHeaderBytes } from '../src/shm/ring.js';

const kChildScript = fileURLToPath(new URL('./fixtures/doorbell-child.js', import.meta.url));
const kAddonUrl = new URL('../src/native/addon.js', import.meta.url).href;

const children = new Set<ChildProcess>();

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** This process's open eventfds (libuv keeps one per loop too: compare counts, not absolutes). */
function eventfds(): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`).includes('eventfd')) n++;
    } catch {
      // closed meanwhile (the readdir's own fd)
    }
  }
  return n;
}

let nameCount = 0;
const uniqueName = () => `doorbell-${process.pid}-${nameCount++}`;
const tick = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts `stream`, collecting what arrives; `closed` settles when it closes. */
function collect(stream: ByteStream): { received: () => string; closed: Promise<void>; echo: boolean } {
  let text = '';
  const state = { received: () => text, closed: undefined as unknown as Promise<void>, echo: false };
  state.closed = new Promise<void>((resolve) =>
    stream.start({
      data(chunk) {
        text += Buffer.from(chunk).toString();
        if (state.echo) stream.write(chunk);
      },
      drain() {},
      close: () => resolve(),
    }),
  );
  return state;
}

async function until(what: string, check: () => boolean, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!check()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}

/** Resolves with the next `count` passed to onRing by a fresh watch on `fd`, which it then closes; rejects after `ms`. */
function nextRing(native: NativeBinding, fd: number, ms: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      watch.close();
      reject(new Error(`no ring within ${ms} ms`));
    }, ms);
    const watch = native.doorbellWatch({
      fd,
      onRing(count) {
        clearTimeout(timer);
        watch.close();
        resolve(count);
      },
    });
  });
}

async function exited(child: ChildProcess, ms: number): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(timer);
  assert.equal(signal, null, `child did not exit by itself within ${ms} ms`);
  return code as number | null;
}

describe('eventfd doorbell', function () {
  let native: NativeBinding;

  before(function () {
    native = loadNative();
  });

  afterEach(async function () {
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    }
    children.clear();
  });

  it('a ring in one process wakes a poll on the other process’s loop, both ways', async function () {
    this.timeout(10000);
    const ping = native.eventfd();
    const pong = native.eventfd();
    const child = spawn(process.execPath, [kChildScript, 'echo'], { stdio: ['pipe', 'pipe', 'inherit', ping, pong] });
    children.add(child);
    const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    try {
      assert.equal((await lines.next()).value, 'ready');
      for (let i = 0; i < 3; i++) {
        const answered = nextRing(native, pong, 2000);
        native.doorbellRing(ping);
        assert.equal(await answered, 1);
        assert.equal((await lines.next()).value, '1');
      }
      // Rings made while nobody looks are counted, not lost.
      native.doorbellRing(ping);
      native.doorbellRing(ping);
      native.doorbellRing(ping);
      const counts: number[] = [];
      while (counts.reduce((a, b) => a + b, 0) < 3) counts.push(Number((await lines.next()).value));
      assert.ok(counts.every((c) => c > 0));
      child.stdin!.end();
      assert.equal(await exited(child, 2000), 0);
    } finally {
      native.closeFd(ping);
      native.closeFd(pong);
    }
  });

  it('closing the watch releases the poll: the loop exits, and a later ring calls nobody', async function () {
    this.timeout(10000);
    const child = spawn(process.execPath, [kChildScript, 'idle'], { stdio: 'inherit' });
    children.add(child);
    assert.equal(await exited(child, 3000), 0);

    const fd = native.eventfd();
    let calls = 0;
    const watch = native.doorbellWatch({ fd, onRing: () => calls++ });
    watch.close();
    watch.close(); // idempotent
    watch.ref(); // no-ops once closed
    native.doorbellRing(fd);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(calls, 0);
    native.closeFd(fd);
  });

  it('a worker exits cleanly with a watch still open (the environment closes it)', async function () {
    this.timeout(10000);
    const fd = native.eventfd();
    const worker = new Worker(
      `import(${JSON.stringify(kAddonUrl)}).then(({ loadNative }) => {
         const w = loadNative().doorbellWatch({ fd: ${fd}, onRing() {} });
         require('node:worker_threads').parentPort.postMessage('watching');
       });`,
      { eval: true },
    );
    const [message] = await once(worker, 'message');
    assert.equal(message, 'watching');
    // The open watch keeps the worker's loop alive; terminate() must still end it without an abort.
    const [code] = await Promise.all([once(worker, 'exit').then(([c]) => c), worker.terminate()]);
    assert.equal(code, 1);
    native.doorbellRing(fd); // the worker's poll is gone; nothing to wake, nothing crashes
    native.closeFd(fd);
  });

  it('passes eventfds over a Unix socket (SCM_RIGHTS): a ring on the received fd wakes a watch on the sent one', async function () {
    this.timeout(5000);
    const [a, b] = native.socketpair();
    const bell = native.eventfd();
    try {
      assert.equal(native.recvFds(b), null);
      native.sendFds({ socket: a, fds: [bell], data: Buffer.from('hi\n') });
      const got = native.recvFds(b)!;
      assert.equal(got.data.toString(), 'hi\n');
      assert.equal(got.fds.length, 1);
      assert.notEqual(got.fds[0], bell);
      const rang = nextRing(native, bell, 2000);
      native.doorbellRing(got.fds[0]!);
      assert.equal(await rang, 1);
      native.closeFd(got.fds[0]!);
      native.closeFd(a);
      assert.equal((assertThrows(() => native.recvFds(b)) as NativeError).code, 'EPIPE');
    } finally {
      native.closeFd(b);
      native.closeFd(bell);
    }
  });

  it('leaks no fd over many doorbells, watches and passes', async function () {
    this.timeout(10000);
    const before = openFds();
    for (let i = 0; i < 50; i++) {
      const fd = native.eventfd();
      const [a, b] = native.socketpair();
      native.sendFds({ socket: a, fds: [fd, fd] });
      const got = native.recvFds(b)!;
      const rang = nextRing(native, got.fds[1]!, 2000);
      native.doorbellRing(fd);
      assert.equal(await rang, 1);
      for (const f of [fd, a, b, ...got.fds]) native.closeFd(f);
    }
    // Close callbacks run on a later loop turn.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(openFds(), before);
  });

  it('rejects bad input with coded errors', function () {
    this.timeout(2000);
    assert.equal((assertThrows(() => native.doorbellWatch({ fd: 0, onRing: 1 as unknown as () => void })) as NativeError).code, 'EINVAL');
    assert.equal((assertThrows(() => native.doorbellRing(-1)) as NativeError).code, 'EINVAL');
    const fd = native.eventfd();
    native.closeFd(fd);
    assert.equal((assertThrows(() => native.doorbellRing(fd)) as NativeError).code, 'EBADF');
    assert.equal((assertThrows(() => native.sendFds({ socket: 0, fds: [] })) as NativeError).code, 'EINVAL');
    // What a server checks a client's doorbells with: only a non-blocking eventfd passes.
    const bell = native.eventfd();
    const [a, b] = native.socketpair();
    assert.equal(native.isDoorbell(bell), true);
    assert.equal(native.isDoorbell(a), false);
    native.closeFd(bell);
    assert.equal(native.isDoorbell(bell), false);
    native.closeFd(a);
    native.closeFd(b);
  });

  describe('shm transport', function () {
    /** An shm descriptor whose readers never poll: every message after a pause must be rung in. */
    const sleepyShm = (name: string) => ({ ...shm(name, { capacity: 4096 }), pollMicros: 0, spinMicros: 0 });

    it('both ends offer doorbells: the connection uses eventfds (four per side), and closes them with it', async function () {
      this.timeout(10000);
      const name = uniqueName();
      const d = sleepyShm(name);
      const before = eventfds();
      let served: ReturnType<typeof collect> | undefined;
      const listener = await shmTransport.listen(d, (stream) => {
        served = collect(stream);
        served.echo = true;
      });
      try {
        const client = await shmTransport.connect(d);
        const mine = collect(client);
        await until('the server stream', () => served !== undefined);
        assert.equal(eventfds() - before, 8);
        for (let i = 0; i < 20; i++) {
          client.write(Buffer.from(`${i};`));
          await until(`echo ${i}`, () => mine.received().endsWith(`${i};`));
          await tick(i % 5); // let the readers fall asleep: the doorbell must wake them
        }
        client.end();
        await Promise.all([mine.closed, served!.closed]);
        await until('the eventfds to close', () => eventfds() === before);
      } finally {
        await listener.close();
      }
    });

    it('a client that answers without doorbells (an older one) gets a working futex connection', async function () {
      this.timeout(10000);
      const native = loadNative();
      const name = uniqueName();
      const d = sleepyShm(name);
      const before = eventfds();
      let served: ReturnType<typeof collect> | undefined;
      const listener = await shmTransport.listen(d, (stream) => {
        served = collect(stream);
        served.echo = true;
      });
      const control = net.connect({ path: shmControlPath(name) });
      try {
        const offer = JSON.parse(await new Promise<string>((resolve) => control.once('data', (b) => resolve(b.toString().trim()))));
        assert.equal(offer.doorbell, 1);
        const c2s = native.shmOpen({ name: `${offer.base}-c2s` });
        const s2c = native.shmOpen({ name: `${offer.base}-s2c` });
        control.write('ok\n');
        let got = '';
        const reader = new RingReader(s2c, { onMessage: (_t, bytes) => (got += Buffer.from(bytes).toString()), onClose() {}, onError() {} }, { signal: futexSignal });
        reader.start();
        const writer = new RingWriter(c2s, { signal: futexSignal });
        await until('the server stream', () => served !== undefined);
        assert.equal(eventfds(), before); // nobody made doorbells
        for (let i = 0; i < 5; i++) {
          writer.write(0, Buffer.from(`${i};`));
          await until(`echo ${i}`, () => got.endsWith(`${i};`));
          await tick(3);
        }
        reader.stop();
        writer.close();
      } finally {
        control.destroy();
        await listener.close();
      }
    });

    it('a client whose doorbells are not eventfds is refused (the server never rings or polls them), and their copies are closed', async function () {
      this.timeout(10000);
      const native = loadNative();
      const name = uniqueName();
      const d = sleepyShm(name);
      let streams = 0;
      const listener = await shmTransport.listen(d, () => streams++);
      const control = net.connect({ path: shmControlPath(name) });
      const [x, y] = native.socketpair();
      try {
        await once(control, 'data');
        const before = openFds();
        const fd = (control as unknown as { _handle: { fd: number } })._handle.fd;
        native.sendFds({ socket: fd, fds: [x, y, x, y], data: Buffer.from('ok doorbell\n') });
        await once(control, 'close');
        assert.equal(streams, 0);
        await until('the server to close the copies it received', () => openFds() <= before);
      } finally {
        control.destroy();
        native.closeFd(x);
        native.closeFd(y);
        await listener.close();
      }
    });

    it('a server that offers no doorbells (an older one) gets a plain ok and no fds', async function () {
      this.timeout(10000);
      const native = loadNative();
      const name = uniqueName();
      const base = `/ogurpchik-${name}-${process.pid}-1`;
      const bytes = kRingHeaderBytes + 4096;
      for (const suffix of ['-c2s', '-s2c']) initRing(native.shmOpen({ name: base + suffix, size: bytes, create: true }));
      const server = net.createServer();
      const answered = new Promise<string>((resolve) => {
        server.once('connection', (socket) => {
          socket.write(JSON.stringify({ base, bytes }) + '\n');
          socket.once('data', (b) => resolve(b.toString()));
        });
      });
      const controlPath = shmControlPath(name);
      fs.rmSync(controlPath, { force: true });
      await new Promise<void>((resolve) => server.listen(controlPath, resolve));
      const before = eventfds();
      try {
        const client = await shmTransport.connect({ ...shm(name, { capacity: 4096 }), pollMicros: 0, spinMicros: 0 });
        assert.equal(await answered, 'ok\n');
        assert.equal(eventfds(), before);
        client.destroy();
      } finally {
        for (const suffix of ['-c2s', '-s2c']) native.shmUnlink(base + suffix);
        await new Promise((resolve) => server.close(resolve));
      }
    });
  });

  describe('shm direct path', function () {
    it('the main thread takes the doorbells over: spaced calls, each after both readers slept, are answered at once (not by the 1 s watchdog), and no eventfd outlives its connections', async function () {
      this.timeout(20000);
      const name = uniqueName();
      const server = await new Node().serve(shm(name), { onRequest: (req: unknown) => req }).start();
      let settled = -1;
      try {
        for (let round = 0; round < 3; round++) {
          const client = await new Node().connect<number, number>(shm(name)).start();
          try {
            for (let i = 0; i < 5; i++) {
              await tick(30);
              const t0 = performance.now();
              assert.equal(await client.client.call(i), i);
              const ms = performance.now() - t0;
              assert.ok(ms < 300, `call ${i} took ${ms.toFixed(0)} ms: a wake-up was lost`);
            }
            // Both ends are in this process: four doorbells each, on top of the pool's settled count.
            if (round > 0) assert.equal(eventfds() - settled, 8);
            const stats = shmDirectStats();
            assert.equal(stats.open, 2);
            assert.ok(stats.readers.every((r) => r.sleeps > 0), JSON.stringify(stats.readers));
          } finally {
            await client.close();
          }
          await until('both links to go', () => shmDirectStats().open === 0);
          // The pool's threads (each loop has an eventfd of its own) are up after the first round.
          if (round === 0) settled = eventfds();
          else await until(`the eventfds of round ${round} to close`, () => eventfds() === settled);
        }
      } finally {
        await server.close();
      }
    });
  });

  describe('doorbellSignal', function () {
    it('wait settles on the peer’s notify, at once when the word moved, and on close', async function () {
      this.timeout(5000);
      const words = new Int32Array(new SharedArrayBuffer(8));
      const bell = native.eventfd();
      const waiter = doorbellSignal({ watch: { 1: bell }, ring: {} });
      const peer = doorbellSignal({ watch: {}, ring: { 1: bell } });
      try {
        let settled = false;
        const waiting = waiter.wait(words, 1, 0, Infinity).then(() => (settled = true));
        await new Promise((resolve) => setTimeout(resolve, 30));
        assert.equal(settled, false);
        Atomics.store(words, 1, 1);
        peer.notify(words, 1);
        await waiting;

        Atomics.store(words, 1, 2);
        await waiter.wait(words, 1, 1, Infinity); // the word moved: no ring needed

        await assert.rejects(waiter.wait(words, 0, 0, Infinity), { code: 'INVALID_ARGUMENT' });
        // A notify on a word this side watches wakes its own wait (the ring's stop() and watchdog).
        const own = waiter.wait(words, 1, 2, Infinity);
        waiter.notify(words, 1);
        await own;
        const pending = waiter.wait(words, 1, 2, Infinity);
        waiter.close();
        await pending;
        await waiter.wait(words, 1, 2, Infinity); // closed: settles at once
      } finally {
        waiter.close();
        peer.close();
        native.closeFd(bell);
      }
    });
  });
});

function assertThrows(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}
