/**
 * Ring micro-benchmark: main thread ↔ echo worker over two SAB rings, a promise per call,
 * 16-byte messages. Prints the median round trip (one call in flight) and calls/s with 64 in
 * flight. `node dist/bench/ring-micro.js [--spin µs] [--poll µs] [--capacity bytes] [--seconds s]`
 */
import { startThreadHop } from './lib/thread-hop.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const spinMicros = arg('spin', 0);
const pollMicros = arg('poll', 0);
const capacity = arg('capacity', 1 << 16);
const seconds = arg('seconds', 2);

const hop = await startThreadHop('worker', { pollMicros, spinMicros, capacity });
const call = hop.call;

async function roundTrips(n: number): Promise<number[]> {
  const times = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await call();
    times[i] = (performance.now() - t0) * 1000;
  }
  return times.sort((a, b) => a - b);
}

async function throughput(inFlight: number, ms: number): Promise<number> {
  let calls = 0;
  const start = performance.now();
  const end = start + ms;
  const lane = async () => {
    while (performance.now() < end) {
      await call();
      calls++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  return calls / ((performance.now() - start) / 1000);
}

await roundTrips(5000); // warm-up: JIT both sides
const rtt = await roundTrips(20000);
await throughput(64, 300);
const rate = await throughput(64, seconds * 1000);
const pct = (p: number) => rtt[Math.min(rtt.length - 1, Math.floor(rtt.length * p))].toFixed(1);

console.log(`ring main <-> worker, 16 B, promise per call, capacity ${capacity}, spin ${spinMicros} µs, poll ${pollMicros} µs`);
console.log(`  round trip: median ${pct(0.5)} µs, p90 ${pct(0.9)} µs, p99 ${pct(0.99)} µs`);
console.log(`  64 in flight: ${Math.round(rate).toLocaleString('en-US')} calls/s`);

await hop.close();
