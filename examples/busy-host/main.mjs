// A busy host: its main thread computes in 20 ms slices while helper processes look prices up in
// it over shared memory. The lookups are answered by a handler module in the host's connection
// worker, so they never wait for a slice to end. Run: node examples/busy-host/main.mjs
// (add --main-thread to serve the same handler object on the main thread instead, and compare).
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Node, RpcError, shm } from 'ogurpchik';

const kHelpers = 3;
const kCallForMs = 2000;
const kSliceMs = 20;
const kSkus = 1000;
const name = `busy-host-${process.pid}`;

let transport;
try {
  transport = shm(name);
} catch (err) {
  if (err instanceof RpcError && err.code === 'NATIVE_MISSING') {
    console.error(`busy-host: shared memory is unavailable (${err.code}): ${err.message}`);
    process.exit(2);
  }
  throw err;
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'busy-host-'));
const helpers = [];
let server;
try {
  const table = Object.fromEntries(Array.from({ length: kSkus }, (_, i) => [`sku-${i}`, 100 + ((i * 37) % 900) / 10]));
  const tableFile = path.join(tmp, 'prices.json');
  fs.writeFileSync(tableFile, JSON.stringify(table));
  const handlerModule = new URL('./lookup-handler.mjs', import.meta.url);
  handlerModule.searchParams.set('table', tableFile);

  // A URL is imported and run in the connection worker; the module's handler object itself would
  // run on the main thread, between slices.
  const onMain = process.argv.includes('--main-thread');
  const handler = onMain ? (await import(handlerModule.href)).handler : handlerModule;
  server = await new Node().serve(transport, handler).start();
  console.log(`host: serving shm("${name}") from its ${onMain ? 'main thread' : 'connection worker'}; starting ${kHelpers} helpers`);

  const results = [];
  const failures = [];
  for (let i = 0; i < kHelpers; i++) {
    const child = fork(fileURLToPath(new URL('./helper.mjs', import.meta.url)), [name, String(kCallForMs), String(kSkus)]);
    child.on('message', (m) => results.push(m));
    child.on('exit', (code, signal) => {
      if (code !== 0) failures.push(`helper ${child.pid} exited with ${code ?? signal}`);
    });
    helpers.push(child);
  }
  const allExited = () => helpers.every((c) => c.exitCode !== null || c.signalCode !== null);

  // The CPU work. Nothing but this loop runs on the main thread until a slice ends.
  let slices = 0;
  let primes = 0;
  let n = 2;
  const deadline = Date.now() + 20_000;
  while (!allExited()) {
    if (Date.now() > deadline) throw new Error('the helpers did not finish within 20 s');
    const end = performance.now() + kSliceMs;
    while (performance.now() < end) {
      for (let k = 0; k < 200; k++, n++) if (isPrime(n)) primes++;
    }
    if (++slices % 25 === 0) console.log(`host: main thread computed ${slices} slices of ${kSliceMs} ms, ${primes} primes so far`);
    // Between slices the event loop runs once: the helpers' IPC messages and exits get in here.
    await new Promise((resolve) => setImmediate(resolve));
  }
  if (failures.length > 0) throw new Error(failures.join('; '));
  if (results.length !== kHelpers) throw new Error(`${results.length} of ${kHelpers} helpers reported`);

  const all = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
  const at = (q) => all[Math.min(all.length - 1, Math.floor(all.length * q))];
  for (const r of results) console.log(`helper ${r.pid}: ${r.latencies.length} calls`);
  const { listeners } = await server.stats();
  console.log(`host: ${all.length} calls answered (the listener sent ${listeners[0].framesOut} frames) while the main thread computed ${slices} slices`);
  console.log(`helpers saw p50 ${at(0.5).toFixed(2)} ms, p99 ${at(0.99).toFixed(2)} ms, max ${all.at(-1).toFixed(2)} ms; the main thread was blocked ${kSliceMs} ms at a time`);
  if (all.length === 0) throw new Error('no calls were made');
} catch (err) {
  console.error(`busy-host: failed: ${err.stack ?? err}`);
  process.exitCode = 1;
} finally {
  for (const c of helpers) if (c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
  await server?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
}

// close() removed the segments (their names are unlinked once a client maps them) and the control socket.
const left = fs.readdirSync('/dev/shm').filter((f) => f.startsWith(`ogurpchik-${name}-`));
if (left.length > 0) {
  console.error(`busy-host: left in /dev/shm: ${left.join(', ')}`);
  process.exitCode = 1;
} else if (process.exitCode !== 1) {
  console.log('host kept serving; nothing left in /dev/shm');
}

function isPrime(k) {
  if (k < 2) return false;
  for (let d = 2; d * d <= k; d++) if (k % d === 0) return false;
  return true;
}
