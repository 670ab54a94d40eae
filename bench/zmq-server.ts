/**
 * zeromq.js echo server (a child process of the bench): a Router socket that sends every message
 * back to the Dealer it came from, frames unchanged (the client's call id, then the payload).
 * Usage: `node zmq-server.js --kind tcp|unix [--path <socket>] [--busy-slice-ms <ms>]` (unix =
 * zeromq's `ipc://`; the busy host: see lib/busy.ts).
 * Prints its address as one JSON line when bound; stops on SIGTERM or when the parent goes.
 */
import { parseArgs } from 'node:util';
import { busyReporter } from './lib/busy.js';

const { values } = parseArgs({ options: { kind: { type: 'string' }, path: { type: 'string' }, 'busy-slice-ms': { type: 'string' } } });

/** Prints one JSON line; once the address is out, `--busy-slice-ms` starts keeping this main thread busy. */
const report = busyReporter(values['busy-slice-ms']);

let zmq: typeof import('zeromq');
try {
  zmq = await import('zeromq');
} catch (err) {
  report({ error: `zeromq is not installed or did not load: ${(err as Error).message}` });
  process.exit(2);
}

const router = new zmq.Router();
try {
  if (values.kind === 'tcp') {
    await router.bind('tcp://127.0.0.1:0');
    const port = Number(/:(\d+)$/.exec(router.lastEndpoint ?? '')?.[1]);
    report({ kind: 'tcp', host: '127.0.0.1', port });
  } else if (values.kind === 'unix' && values.path !== undefined) {
    await router.bind(`ipc://${values.path}`);
    report({ kind: 'unix', path: values.path });
  } else {
    report({ error: 'zeromq server: expected --kind tcp, or --kind unix --path <path>' });
    process.exit(2);
  }
} catch (err) {
  report({ error: `zeromq server could not bind: ${(err as Error).message}` });
  process.exit(2);
}

const shutdown = (): void => {
  router.close();
  setTimeout(() => process.exit(0), 50).unref();
};
process.once('SIGTERM', shutdown);
process.once('disconnect', shutdown);

// One message at a time, as zeromq.js allows one send in progress per socket.
for await (const frames of router) await router.send(frames);
