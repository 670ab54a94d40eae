/**
 * Cross-process wake-up micro-benchmark (issue #20): process A wakes B, B wakes A back, one round
 * trip at a time, for the candidate RingSignals of shm()'s rings and a Unix socket as the baseline:
 *   futex    — futexSignal: FUTEX_WAKE; the waiter is a native thread, whose result reaches the
 *              loop through a thread-safe function (uv_async), as the rings use today;
 *   eventfd  — doorbellSignal: write(eventfd); the waiter is a uv_poll on the waiting thread's
 *              own loop (the eventfds reach the child as inherited fds);
 *   socket   — 16 bytes each way on an AF_UNIX stream socketpair (net.Socket on both ends).
 * The futex and eventfd modes go through the RingSignal interface on two words of an shm
 * segment, as a ring's reader and writer do. Each mode runs `--rounds` times (interleaved, a
 * fresh child each time); prints median and p99 per run, and the median's ratio to the socket's.
 * Then the same two signals under real shm rings (16-byte messages echoed by the child): the
 * round trip, and calls/s with 64 in flight.
 * `node dist/bench/wake.js [--seconds s per run, default 2] [--rounds n, default 3]`
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { doorbellSignal, futexSignal, loadNative, type DoorbellSignal } from '../src/native/addon.js';
import { RingReader, RingWriter, initRing, kRingHeaderBytes } from '../src/shm/ring.js';
import { kHeadIndex, kTailIndex } from '../src/shm/layout.js';
import type { RingSignal } from '../src/shm/signal.js';

type Mode = 'futex' | 'eventfd' | 'socket';
const kModes: Mode[] = ['futex', 'eventfd', 'socket'];
const kPing = 0;
const kPong = 1;
const kStop = -1;
const kWarmup = 2000;
const kPayload = 16;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

// --- child (B) -----------------------------------------------------------------------------

async function childWords(words: Int32Array, signal: RingSignal): Promise<void> {
  let last = 0;
  for (;;) {
    const v = Atomics.load(words, kPing);
    if (v === last) {
      await signal.wait(words, kPing, v, Infinity);
      continue;
    }
    if (v === kStop) return;
    last = v;
    Atomics.store(words, kPong, v);
    signal.notify(words, kPong);
  }
}

type RingMode = 'ring-futex' | 'ring-eventfd';
const kRingCapacity = 1 << 16;

/** Writer (on `out`) and reader (on `inp`) signals: eventfds at fds[0..3] = out data, out space, in data, in space. */
function ringSignals(mode: RingMode, fds: number[]): { writer: RingSignal; reader: RingSignal; close(): void } {
  if (mode === 'ring-futex') return { writer: futexSignal, reader: futexSignal, close() {} };
  const writer = doorbellSignal({ watch: { [kHeadIndex]: fds[1]! }, ring: { [kTailIndex]: fds[0]! } });
  const reader = doorbellSignal({ watch: { [kTailIndex]: fds[2]! }, ring: { [kHeadIndex]: fds[3]! } });
  return { writer, reader, close: () => (writer.close(), reader.close()) };
}

async function ringChild(mode: RingMode, segment: string): Promise<void> {
  const native = loadNative();
  const ping = native.shmOpen({ name: `${segment}-ping` });
  const pong = native.shmOpen({ name: `${segment}-pong` });
  // Our out ring is pong (data 5, space 6), our in ring is ping (data 3, space 4).
  const signals = ringSignals(mode, [5, 6, 3, 4]);
  const writer = new RingWriter(pong, { signal: signals.writer });
  await new Promise<void>((resolve) => {
    const reader = new RingReader(ping, { onMessage: (_t, bytes) => void writer.write(0, bytes), onClose: () => resolve() }, { signal: signals.reader });
    reader.start();
  });
  writer.close();
  await writer.flushed();
  signals.close();
  process.exit(0);
}

async function runRing(mode: RingMode, ms: number): Promise<{ times: number[]; rate: number }> {
  const native = loadNative();
  const segment = `/ogurpchik-bench-wake-${process.pid}`;
  const ping = native.shmOpen({ name: `${segment}-ping`, size: kRingHeaderBytes + kRingCapacity, create: true });
  const pong = native.shmOpen({ name: `${segment}-pong`, size: kRingHeaderBytes + kRingCapacity, create: true });
  initRing(ping);
  initRing(pong);
  const fds = mode === 'ring-eventfd' ? [native.eventfd(), native.eventfd(), native.eventfd(), native.eventfd()] : [];
  const signals = ringSignals(mode, fds); // out ring ping: data fds[0], space fds[1]; in ring pong: fds[2], fds[3]
  const proc = spawnChild(mode, segment, ['ignore', 'inherit', 'inherit', ...fds]);
  const writer = new RingWriter(ping, { signal: signals.writer });
  const waiting: Array<() => void> = [];
  let head = 0;
  const reader = new RingReader(pong, { onMessage: () => waiting[head++]!(), onClose() {} }, { signal: signals.reader });
  reader.start();
  const payload = new Uint8Array(kPayload);
  const call = () =>
    new Promise<void>((resolve) => {
      waiting.push(resolve);
      writer.write(0, payload);
    });
  try {
    const times = await timeRoundTrips(call, ms);
    let calls = 0;
    const end = performance.now() + ms;
    const start = performance.now();
    const lane = async () => {
      while (performance.now() < end) {
        await call();
        calls++;
      }
    };
    await Promise.all(Array.from({ length: 64 }, lane));
    return { times, rate: calls / ((performance.now() - start) / 1000) };
  } finally {
    writer.close();
    await once(proc, 'exit');
    reader.stop();
    signals.close();
    native.shmUnlink(`${segment}-ping`);
    native.shmUnlink(`${segment}-pong`);
    for (const fd of fds) native.closeFd(fd);
  }
}

async function child(mode: Mode, segment: string): Promise<void> {
  if (mode === 'socket') {
    const socket = new net.Socket({ fd: 3, readable: true, writable: true });
    socket.setNoDelay?.(true);
    socket.on('data', (chunk) => socket.write(chunk));
    await once(socket, 'end');
    socket.end();
    return;
  }
  const native = loadNative();
  const words = new Int32Array(native.shmOpen({ name: segment }), 0, 2);
  if (mode === 'futex') {
    await childWords(words, futexSignal);
  } else {
    const signal = doorbellSignal({ watch: { [kPing]: 3 }, ring: { [kPong]: 4 } });
    await childWords(words, signal);
    signal.close();
  }
  process.exit(0);
}

// --- parent (A) ----------------------------------------------------------------------------

interface Run {
  mode: Mode;
  medianUs: number;
  p99Us: number;
  count: number;
}

function summarize(mode: Mode, times: number[]): Run {
  times.sort((a, b) => a - b);
  const at = (p: number) => times[Math.min(times.length - 1, Math.floor(times.length * p))];
  return { mode, medianUs: at(0.5), p99Us: at(0.99), count: times.length };
}

async function timeRoundTrips(roundTrip: (i: number) => Promise<void>, ms: number): Promise<number[]> {
  for (let i = 1; i <= kWarmup; i++) await roundTrip(i);
  const times: number[] = [];
  const end = performance.now() + ms;
  for (let i = kWarmup + 1; performance.now() < end; i++) {
    const t0 = performance.now();
    await roundTrip(i);
    times.push((performance.now() - t0) * 1000);
  }
  return times;
}

function spawnChild(mode: Mode | RingMode, segment: string, stdio: Array<'inherit' | 'ignore' | 'pipe' | number>): ChildProcess {
  return spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', mode, segment], { stdio });
}

async function runWords(mode: 'futex' | 'eventfd', ms: number): Promise<number[]> {
  const native = loadNative();
  const segment = `/ogurpchik-bench-wake-${process.pid}`;
  const words = new Int32Array(native.shmOpen({ name: segment, size: 4096, create: true }), 0, 2);
  const fds: number[] = [];
  let signal: RingSignal = futexSignal;
  let stdio: Array<'inherit' | 'ignore' | number> = ['ignore', 'inherit', 'inherit'];
  if (mode === 'eventfd') {
    const ping = native.eventfd();
    const pong = native.eventfd();
    fds.push(ping, pong);
    signal = doorbellSignal({ watch: { [kPong]: pong }, ring: { [kPing]: ping } });
    stdio = ['ignore', 'inherit', 'inherit', ping, pong];
  }
  const proc = spawnChild(mode, segment, stdio);
  try {
    return await timeRoundTrips(async (i) => {
      Atomics.store(words, kPing, i);
      signal.notify(words, kPing);
      for (;;) {
        const v = Atomics.load(words, kPong);
        if (v === i) return;
        await signal.wait(words, kPong, v, Infinity);
      }
    }, ms);
  } finally {
    Atomics.store(words, kPing, kStop);
    signal.notify(words, kPing);
    if (proc.exitCode === null) await once(proc, 'exit');
    native.shmUnlink(segment);
    (signal as Partial<DoorbellSignal>).close?.();
    for (const fd of fds) native.closeFd(fd);
  }
}

async function runSocket(ms: number): Promise<number[]> {
  const proc = spawnChild('socket', '', ['ignore', 'inherit', 'inherit', 'pipe']);
  const socket = proc.stdio[3] as net.Socket;
  socket.setNoDelay?.(true);
  const payload = Buffer.alloc(kPayload, 7);
  let got = 0;
  let waiting: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    got += chunk.length;
    if (got >= kPayload && waiting !== undefined) {
      got -= kPayload;
      const w = waiting;
      waiting = undefined;
      w();
    }
  });
  try {
    return await timeRoundTrips(
      () =>
        new Promise<void>((resolve) => {
          waiting = resolve;
          socket.write(payload);
        }),
      ms,
    );
  } finally {
    socket.end();
    if (proc.exitCode === null) await once(proc, 'exit');
  }
}

async function main(): Promise<void> {
  const ms = arg('seconds', 2) * 1000;
  const rounds = arg('rounds', 3);
  const runs: Run[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const mode of kModes) {
      const times = mode === 'socket' ? await runSocket(ms) : await runWords(mode, ms);
      const run = summarize(mode, times);
      runs.push(run);
      console.log(`  round ${r + 1} ${mode.padEnd(8)} median ${run.medianUs.toFixed(1).padStart(6)} µs  p99 ${run.p99Us.toFixed(1).padStart(7)} µs  (${run.count} round trips)`);
    }
  }
  const medianOf = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const socketMedian = medianOf(runs.filter((r) => r.mode === 'socket').map((r) => r.medianUs));
  console.log(`cross-process wake-up round trip, one in flight, ${rounds} runs of ${ms / 1000} s each (range over runs; ratio of the median run to socket's):`);
  for (const mode of kModes) {
    const mine = runs.filter((r) => r.mode === mode);
    const med = mine.map((r) => r.medianUs);
    const p99 = mine.map((r) => r.p99Us);
    const range = (xs: number[]) => `${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}`;
    console.log(`  ${mode.padEnd(8)} median ${range(med).padStart(11)} µs   p99 ${range(p99).padStart(13)} µs   ${(medianOf(med) / socketMedian).toFixed(2)}x socket`);
  }
  console.log('through shm rings, 16 B echoed by the child (one run each):');
  const rates = new Map<RingMode, number>();
  for (const mode of ['ring-futex', 'ring-eventfd'] as const) {
    const { times, rate } = await runRing(mode, ms);
    const run = summarize('futex', times);
    rates.set(mode, rate);
    console.log(`  ${mode.padEnd(13)} median ${run.medianUs.toFixed(1).padStart(6)} µs  p99 ${run.p99Us.toFixed(1).padStart(7)} µs   64 in flight ${Math.round(rate).toLocaleString('en-US').padStart(9)} calls/s`);
  }
  console.log(`  eventfd / futex calls/s with 64 in flight: ${(rates.get('ring-eventfd')! / rates.get('ring-futex')!).toFixed(2)}x`);
}

if (process.argv[2] === '--child') {
  if (process.argv[3]!.startsWith('ring-')) await ringChild(process.argv[3] as RingMode, process.argv[4]!);
  else await child(process.argv[3] as Mode, process.argv[4]!);
} else {
  await main();
}
