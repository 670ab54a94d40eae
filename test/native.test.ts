/**
 * The native addon (native/) through its loader src/native/addon.ts: POSIX shared memory, futex
 * wait/wake across real processes, environment teardown in worker threads, SO_PEERCRED.
 * Every /dev/shm segment a test creates is named /ogurpchik-test-<pid>-<n> and removed after it.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { RpcError } from '../src/errors.js';
import { futexSignal, loadNative, nativeAvailable, type NativeBinding, type NativeError } from '../src/native/addon.js';
import { processStartTime } from '../src/proc.js';

const kChildScript = fileURLToPath(new URL('./fixtures/native-child.js', import.meta.url));
const kWorkerUrl = new URL('./fixtures/native-worker.js', import.meta.url);

interface Child {
  process: ChildProcess;
  /** The child's next stdout line, parsed; rejects after `timeoutMs` or if the child exits first. */
  next(timeoutMs?: number): Promise<any>;
}

const children = new Set<ChildProcess>();
const segments = new Set<string>();
let segmentCount = 0;

/** A fresh segment name, removed from /dev/shm after the test whatever happens. */
function segmentName(): string {
  const name = `/ogurpchik-test-${process.pid}-${segmentCount++}`;
  segments.add(name);
  return name;
}

function startChild(command: object): Child {
  const child = spawn(process.execPath, [kChildScript, JSON.stringify(command)], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const lines: string[] = [];
  const waiters: Array<(line: string | undefined) => void> = [];
  let ended = false;
  const rl = createInterface({ input: child.stdout! });
  rl.on('line', (line) => (waiters.length > 0 ? waiters.shift()!(line) : lines.push(line)));
  rl.once('close', () => {
    ended = true;
    for (const w of waiters.splice(0)) w(undefined);
  });
  return {
    process: child,
    next(timeoutMs = 5000) {
      if (lines.length > 0) return Promise.resolve(JSON.parse(lines.shift()!));
      if (ended) return Promise.reject(new Error(`child exited (code ${child.exitCode}) before reporting`));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(onLine), 1);
          reject(new Error(`child did not report within ${timeoutMs} ms`));
        }, timeoutMs);
        const onLine = (line: string | undefined) => {
          clearTimeout(timer);
          if (line === undefined) reject(new Error(`child exited (code ${child.exitCode}) before reporting`));
          else resolve(JSON.parse(line));
        };
        waiters.push(onLine);
      });
    },
  };
}

async function exitOf(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const [code] = await once(child, 'exit');
  return code as number | null;
}

/** Resolves with what `fn` throws; fails if it returns. */
function thrownBy(fn: () => unknown): NativeError {
  try {
    fn();
  } catch (err) {
    return err as NativeError;
  }
  throw new Error('expected a throw');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

describe('native addon', function () {
  let native: NativeBinding;

  before(function () {
    // Throws RpcError NATIVE_MISSING ("build it with: npm run build:native") when not built.
    native = loadNative();
  });

  afterEach(async function () {
    await Promise.all(
      [...children].map((child) => {
        child.kill('SIGKILL');
        return exitOf(child);
      }),
    );
    for (const name of segments) fs.rmSync(`/dev/shm${name}`, { force: true });
    segments.clear();
  });

  describe('loader', function () {
    it('loads once per thread and reports availability', function () {
      this.timeout(2000);
      assert.equal(loadNative(), native);
      assert.equal(nativeAvailable(), true);
      assert.equal(native.moduleVersion, Number(process.versions.modules));
    });

    it('throws NATIVE_MISSING with the build command when the binary is absent', async function () {
      this.timeout(5000);
      // A copy of the compiled loader whose package root has no native/build.
      const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ogurpchik-native-missing-'));
      try {
        const dist = path.join(root, 'dist', 'src');
        fs.mkdirSync(path.join(dist, 'native'), { recursive: true });
        fs.writeFileSync(path.join(root, 'package.json'), '{"type":"module"}');
        fs.copyFileSync(fileURLToPath(new URL('../src/errors.js', import.meta.url)), path.join(dist, 'errors.js'));
        fs.copyFileSync(fileURLToPath(new URL('../src/native/addon.js', import.meta.url)), path.join(dist, 'native', 'addon.js'));
        const copy = (await import(path.join(dist, 'native', 'addon.js'))) as typeof import('../src/native/addon.js');
        assert.equal(copy.nativeAvailable(), false);
        const err = thrownBy(() => copy.loadNative()) as unknown as RpcError;
        assert.ok(RpcError.is(err));
        assert.equal(err.code, 'NATIVE_MISSING');
        assert.match(err.message, /npm run build:native/);
      } finally {
        fs.rmSync(root, { recursive: true, force: true });
      }
    });
  });

  describe('shared memory', function () {
    it('shares bytes with another process, mode 0600, until unlinked', async function () {
      this.timeout(10000);
      const name = segmentName();
      const buffer = native.shmOpen({ name, size: 8192, create: true, exclusive: true });
      assert.ok(buffer instanceof SharedArrayBuffer);
      assert.equal(buffer.byteLength, 8192);
      assert.equal(fs.statSync(`/dev/shm${name}`).mode & 0o777, 0o600);
      const view = new Uint8Array(buffer);
      const ours = [1, 2, 3, 250, 251, 252, 0, 7];
      view.set(ours, 0);

      const child = startChild({ mode: 'exchange', name, length: ours.length, reply: [9, 8, 7, 6], replyOffset: 8000 });
      const seen = await child.next();
      assert.equal(seen.size, 8192, 'the child maps the whole segment when it gives no size');
      assert.deepEqual(seen.bytes, ours);
      assert.deepEqual(await child.next(), { written: true });
      assert.equal(await exitOf(child.process), 0);
      assert.deepEqual(Array.from(view.subarray(8000, 8004)), [9, 8, 7, 6]);

      native.shmUnlink(name);
      assert.equal(fs.existsSync(`/dev/shm${name}`), false);
      view[0] = 42; // the mapping outlives the name
      assert.equal(view[0], 42);
      assert.equal(thrownBy(() => native.shmUnlink(name)).code, 'ENOENT');
    });

    it('maps errno to code and errno: EEXIST, ENOENT, EINVAL', function () {
      this.timeout(5000);
      const name = segmentName();
      native.shmOpen({ name, size: 4096, create: true, exclusive: true });

      const exists = thrownBy(() => native.shmOpen({ name, size: 4096, create: true, exclusive: true }));
      assert.ok(exists instanceof Error);
      assert.equal(exists.code, 'EEXIST');
      assert.equal(exists.errno, -os.constants.errno.EEXIST);
      assert.equal(exists.syscall, 'shm_open');
      assert.match(exists.message, /EEXIST/);

      // Non-exclusive create of an existing segment opens it without resizing it.
      assert.equal(native.shmOpen({ name, size: 1024, create: true }).byteLength, 1024);
      assert.equal(fs.statSync(`/dev/shm${name}`).size, 4096);

      const missing = thrownBy(() => native.shmOpen({ name: `${name}-missing` }));
      assert.equal(missing.code, 'ENOENT');
      assert.equal(missing.errno, -os.constants.errno.ENOENT);

      // Mapping past the end of the object would SIGBUS on first touch, so it is refused.
      assert.equal(thrownBy(() => native.shmOpen({ name, size: 8192 })).code, 'EINVAL');
      for (const bad of ['no-slash', '/', '/a/b', `/${'x'.repeat(256)}`, '/..']) {
        const err = thrownBy(() => native.shmOpen({ name: bad, size: 4096, create: true }));
        assert.ok(err instanceof TypeError, bad);
        assert.equal(err.code, 'EINVAL', bad);
      }
      assert.equal(thrownBy(() => native.shmOpen({ name, create: true })).code, 'EINVAL', 'create needs a size');
      assert.equal(thrownBy(() => native.shmOpen({ name, exclusive: true })).code, 'EINVAL', 'exclusive needs create');
    });

    it('adjustExternalMemory moves the external memory V8 weighs by the bytes given, both ways', function () {
      this.timeout(2000);
      const before = native.adjustExternalMemory(0);
      assert.equal(native.adjustExternalMemory(3 << 20) - before, 3 << 20);
      assert.equal(native.adjustExternalMemory(-(3 << 20)), before);
      assert.throws(() => native.adjustExternalMemory('1' as never), (err: NodeJS.ErrnoException) => err instanceof TypeError && err.code === 'EINVAL');
    });
  });

  describe('futex', function () {
    it('a wake in this process reaches a futexWait in another process', async function () {
      this.timeout(10000);
      const name = segmentName();
      const buffer = native.shmOpen({ name, size: 4096, create: true, exclusive: true });
      const child = startChild({ mode: 'wait', name, index: 3, expected: 0 });
      assert.deepEqual(await child.next(), { ready: true });
      // The word never changes, so only a FUTEX_WAKE can end the child's wait. Its waiter thread
      // may not be asleep yet, so repeat until one waiter was woken.
      let woken = 0;
      for (let i = 0; i < 1000 && woken === 0; i++) {
        woken = native.futexWake({ buffer, byteOffset: 12, count: 1 });
        if (woken === 0) await sleep(2);
      }
      assert.equal(woken, 1);
      const report = await child.next();
      assert.equal(report.result, 'ok');
      assert.equal(report.value, 0);
    });

    it('V8 Atomics.notify does not reach an Atomics.waitAsync in another process', async function () {
      this.timeout(10000);
      const name = segmentName();
      const view = new Int32Array(native.shmOpen({ name, size: 4096, create: true, exclusive: true }));
      const child = startChild({ mode: 'atomics-wait', name, index: 0, expected: 0, timeoutMs: 300 });
      assert.deepEqual(await child.next(), { ready: true });
      await sleep(20);
      Atomics.store(view, 0, 1);
      assert.equal(Atomics.notify(view, 0), 0, 'V8 sees no waiter: its waiter list is per process');
      const report = await child.next();
      assert.equal(report.result, 'timed-out');
      assert.equal(report.value, 1, 'the child saw the store, yet was not woken');
    });

    it("resolves 'not-equal' at once when the word differs, also for the uint32 spelling", async function () {
      this.timeout(2000);
      const buffer = new SharedArrayBuffer(16);
      const view = new Int32Array(buffer);
      view[1] = 7;
      const started = performance.now();
      assert.equal(await native.futexWait({ buffer, byteOffset: 4, expected: 6 }), 'not-equal');
      assert.ok(performance.now() - started < 100);
      assert.equal(native.futexWaitSync({ buffer, byteOffset: 4, expected: 6, timeoutMs: 1000 }), 'not-equal');
      view[2] = -1;
      assert.equal(native.futexWaitSync({ buffer, byteOffset: 8, expected: 0xffffffff, timeoutMs: 30 }), 'timed-out');
    });

    it("resolves 'timed-out' after about the time given", async function () {
      this.timeout(5000);
      const buffer = new SharedArrayBuffer(8);
      for (const timeoutMs of [0, 150]) {
        const started = performance.now();
        assert.equal(await native.futexWait({ buffer, byteOffset: 0, expected: 0, timeoutMs }), 'timed-out');
        const elapsed = performance.now() - started;
        assert.ok(elapsed >= timeoutMs - 1 && elapsed < timeoutMs + 1000, `timeout ${timeoutMs}: took ${elapsed} ms`);
      }
      const started = performance.now();
      assert.equal(native.futexWaitSync({ buffer, byteOffset: 4, expected: 0, timeoutMs: 100 }), 'timed-out');
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 99 && elapsed < 1000, `sync: took ${elapsed} ms`);
    });

    it('a cross-process futexWait times out in the other process too', async function () {
      this.timeout(10000);
      const name = segmentName();
      native.shmOpen({ name, size: 4096, create: true, exclusive: true });
      const child = startChild({ mode: 'wait', name, index: 0, expected: 0, timeoutMs: 200 });
      assert.deepEqual(await child.next(), { ready: true });
      const report = await child.next();
      assert.equal(report.result, 'timed-out');
      assert.ok(report.elapsedMs >= 199 && report.elapsedMs < 1500, `took ${report.elapsedMs} ms`);
    });

    it('never blocks the event loop, and each concurrent wait gets its own thread', async function () {
      this.timeout(5000);
      const buffer = new SharedArrayBuffer(64);
      const view = new Int32Array(buffer);
      let ticks = 0;
      const interval = setInterval(() => ticks++, 5);
      try {
        // Eight waits at once, woken in reverse order: a pool that queued waits behind one
        // another would leave the later ones unwoken.
        const results: string[] = [];
        const pending = Array.from({ length: 8 }, (_, i) =>
          native.futexWait({ buffer, byteOffset: i * 4, expected: 0, timeoutMs: 3000 }).then((r) => {
            results.push(`${i}:${r}`);
          }),
        );
        await sleep(200);
        assert.ok(ticks >= 10, `interval ticked ${ticks} times in 200 ms while waits were pending`);
        for (let i = 7; i >= 0; i--) {
          Atomics.store(view, i, 1);
          native.futexWake({ buffer, byteOffset: i * 4 });
          await sleep(5);
        }
        await Promise.all(pending);
        assert.deepEqual(results, ['7:ok', '6:ok', '5:ok', '4:ok', '3:ok', '2:ok', '1:ok', '0:ok']);
      } finally {
        clearInterval(interval);
      }
    });

    it('futexSignal implements RingSignal over an Int32Array with a byte offset', async function () {
      this.timeout(5000);
      const buffer = new SharedArrayBuffer(64);
      const view = new Int32Array(buffer, 16, 4); // index 2 is byte 24 of the buffer
      const waiting = futexSignal.wait(view, 2, 0, Infinity);
      let settled = false;
      void waiting.then(() => (settled = true));
      await sleep(30);
      assert.equal(settled, false);
      Atomics.store(view, 2, 5);
      futexSignal.notify(view, 2);
      await waiting;
      assert.equal(new Int32Array(buffer)[6], 5);
      await futexSignal.wait(view, 2, 5, 20); // resolves on timeout
      await futexSignal.wait(view, 2, 4, Infinity); // resolves at once: not equal
    });

    it('rejects unusable words with EINVAL', function () {
      this.timeout(2000);
      const buffer = new SharedArrayBuffer(8);
      for (const options of [
        { buffer: new ArrayBuffer(8), byteOffset: 0 },
        { buffer, byteOffset: 2 },
        { buffer, byteOffset: 8 },
        { buffer, byteOffset: -4 },
      ]) {
        const err = thrownBy(() => native.futexWake(options as never));
        assert.equal(err.code, 'EINVAL', JSON.stringify(options.byteOffset));
      }
      assert.equal(thrownBy(() => native.futexWaitSync({ buffer, byteOffset: 0, expected: 0, timeoutMs: -1 })).code, 'EINVAL');
      assert.equal(thrownBy(() => native.futexWaitSync({ buffer, byteOffset: 0 } as never)).code, 'EINVAL');
    });

    for (const how of ['process.exit', 'terminate'] as const) {
      it(`a worker with a pending futexWait exits cleanly (${how}) and leaves no waiter behind`, async function () {
        this.timeout(10000);
        const buffer = new SharedArrayBuffer(16);
        for (let round = 0; round < 3; round++) {
          const worker = new Worker(kWorkerUrl, { workerData: { buffer, byteOffset: 4, how } });
          const messages: unknown[] = [];
          worker.on('message', (m) => messages.push(m));
          const exited = once(worker, 'exit');
          const [first] = await once(worker, 'message');
          assert.deepEqual(first, { waiting: true });
          const started = performance.now();
          if (how === 'terminate') await worker.terminate();
          const [code] = await exited;
          assert.equal(code, how === 'terminate' ? 1 : 0);
          assert.ok(performance.now() - started < 2000, 'worker took too long to exit');
          assert.deepEqual(messages, [{ waiting: true }], 'the pending wait is abandoned, not settled');
          // The worker's waiter thread was woken and gone: nobody is asleep on the word.
          assert.equal(native.futexWake({ buffer, byteOffset: 4 }), 0);
        }
        // This thread's own instance still works.
        assert.equal(await native.futexWait({ buffer, byteOffset: 4, expected: 0, timeoutMs: 10 }), 'timed-out');
      });
    }

    it('prints the median cross-process futex round trip', async function () {
      this.timeout(30000);
      const name = segmentName();
      const buffer = native.shmOpen({ name, size: 4096, create: true, exclusive: true });
      const view = new Int32Array(buffer);
      const rounds = 2000;
      const measure = async (sync: boolean): Promise<number> => {
        view.fill(0, 0, 2);
        const child = startChild({ mode: 'echo', name, sync });
        assert.deepEqual(await child.next(), { ready: true });
        const times: number[] = [];
        for (let i = 1; i <= rounds; i++) {
          const started = performance.now();
          Atomics.store(view, 0, i);
          futexSignal.notify(view, 0);
          while (Atomics.load(view, 1) !== i) await futexSignal.wait(view, 1, i - 1, 2000);
          times.push(performance.now() - started);
        }
        Atomics.store(view, 0, -1);
        futexSignal.notify(view, 0);
        assert.deepEqual(await child.next(), { done: true });
        return median(times.slice(200)) * 1000;
      };
      const syncPeer = await measure(true);
      const asyncPeer = await measure(false);
      console.log(
        `      futex round trip, median of ${rounds - 200}: this process async <-> child futexWaitSync ${syncPeer.toFixed(1)} µs; ` +
          `<-> child async ${asyncPeer.toFixed(1)} µs`,
      );
      assert.ok(syncPeer > 0 && asyncPeer > 0);
    });
  });

  describe('peer credentials', function () {
    it('names the process at the other end of a Unix socket', async function () {
      this.timeout(10000);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ogurpchik-peer-'));
      const socketPath = path.join(dir, 's.sock');
      const server = net.createServer();
      try {
        const accepted: net.Socket[] = [];
        server.on('connection', (s) => accepted.push(s));
        server.listen(socketPath);
        await once(server, 'listening');
        const fdOf = (s: net.Socket) => (s as unknown as { _handle: { fd: number } })._handle.fd;

        const child = startChild({ mode: 'connect', path: socketPath });
        const ready = await child.next();
        assert.equal(ready.pid, child.process.pid);
        while (accepted.length === 0) await sleep(5);
        const fromChild = native.peerCredentials(fdOf(accepted[0]!));
        assert.deepEqual(fromChild, { pid: child.process.pid, uid: process.getuid!(), gid: process.getgid!() });

        const client = net.connect(socketPath);
        await once(client, 'connect');
        assert.equal(native.peerCredentials(fdOf(client)).pid, process.pid);
        client.destroy();
        child.process.stdin!.end();
        assert.equal(await exitOf(child.process), 0);

        const file = fs.openSync(path.join(dir, 'plain'), 'w');
        try {
          assert.equal(thrownBy(() => native.peerCredentials(file)).code, 'ENOTSOCK');
        } finally {
          fs.closeSync(file);
        }
        assert.equal(thrownBy(() => native.peerCredentials(-1)).code, 'EINVAL');
        for (const s of accepted) s.destroy();
      } finally {
        server.close();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('processStartTime tells a live process from a gone one', async function () {
      this.timeout(10000);
      const own = processStartTime(process.pid);
      assert.ok(typeof own === 'number' && Number.isInteger(own) && own > 0);
      assert.equal(processStartTime(process.pid), own);
      const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { stdio: 'ignore' });
      children.add(child);
      const pid = child.pid!;
      const started = processStartTime(pid);
      assert.ok(started !== undefined && started >= own!);
      child.kill('SIGKILL');
      await exitOf(child);
      assert.equal(processStartTime(pid), undefined);
    });
  });
});
