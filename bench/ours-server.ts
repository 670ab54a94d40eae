/**
 * ogurpchik echo server (a child process of the bench).
 * Usage: `node ours-server.js --kind tcp|unix|shm [--path <socket>] [--name <shm service>]
 *         [--capacity <shm ring bytes>] [--tls-cert <pem file> --tls-key <pem file>]
 *         --handler worker|main [--busy-slice-ms <ms>] [--idle sleep|balanced|latency|spin] [--threads <n>]`.
 *         With --tls-*, tcp runs inside TLS; --idle sets NodeOptions.idle;
 *         --threads serves the address from that many pool threads (ServeOptions.threads).
 * `--handler worker` serves the echo module inside the connection worker; `main` serves the same
 * object on this process's main thread. `--busy-slice-ms` keeps the main thread busy in CPU
 * slices of that length, letting the event loop turn once between slices (the busy-host case).
 * Prints its address as one JSON line when ready (`{"error":…}` if the runtime is unavailable);
 * stops on SIGTERM or when the parent goes.
 */

import { parseArgs } from 'node:util';
import { handler as echo } from './echo-handler.js';
import { busySlices, sliceMsOf } from './lib/busy.js';
import { loadOurs, type OursIdle, type OursRunning } from './lib/ours-api.js';

const { values } = parseArgs({
  options: {
    kind: { type: 'string' },
    path: { type: 'string' },
    name: { type: 'string' },
    capacity: { type: 'string' },
    handler: { type: 'string', default: 'worker' },
    'busy-slice-ms': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    idle: { type: 'string' },
    threads: { type: 'string' },
  },
});

function report(line: object): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function fail(message: string): never {
  report({ error: message });
  process.exit(2);
}

let running: OursRunning | undefined;
let stopBusy = (): void => {};

const shutdown = (): void => {
  stopBusy();
  setTimeout(() => process.exit(0), 2_000).unref();
  (running?.close() ?? Promise.resolve()).finally(() => process.exit(0));
};
process.once('SIGTERM', shutdown);
process.once('disconnect', shutdown);

const api = await loadOurs().catch((err: Error) => fail(err.message));
let transport: unknown;
if (values.kind === 'tcp') {
  const tls = values['tls-cert'] === undefined ? undefined : { certFile: values['tls-cert'], keyFile: values['tls-key'] };
  try {
    transport = api.tcp('127.0.0.1:0', tls === undefined ? undefined : { tls });
  } catch (err) {
    fail(`tcp(): ${(err as Error).message}`);
  }
}
else if (values.kind === 'unix' && values.path !== undefined) transport = api.unix(values.path);
else if (values.kind === 'shm' && values.name !== undefined) {
  if (api.shm === undefined) fail('the runtime does not export shm()');
  try {
    transport = api.shm(values.name, values.capacity === undefined ? {} : { capacity: Number(values.capacity) });
  } catch (err) {
    // NATIVE_MISSING (the addon is not built) lands here.
    fail(`shm(): ${(err as Error).message}`);
  }
} else fail('ours server: expected --kind tcp, --kind unix --path <path>, or --kind shm --name <name>');

const serving =
  values.handler === 'main' ? echo : new URL('./echo-handler.js', import.meta.url);
try {
  const idle = values.idle as OursIdle | undefined;
  const threads = values.threads === undefined ? {} : { threads: Number(values.threads) };
  running = await new api.Node(idle === undefined ? {} : { idle }).serve(transport, serving, threads).start();
} catch (err) {
  fail(`ours server start() failed: ${(err as Error).message}`);
}

const address =
  running.addresses?.[0] ??
  (values.kind === 'unix'
    ? { kind: 'unix', path: values.path }
    : values.kind === 'shm'
      ? { kind: 'shm', name: values.name }
      : undefined);
if (address === undefined) fail('ours server: start() resolved without addresses');
report(address);

const sliceMs = sliceMsOf(values['busy-slice-ms']);
if (sliceMs > 0) stopBusy = busySlices(sliceMs);
