/**
 * vscode-jsonrpc echo server (a child process of the bench): one request, `echo`, whose parameter
 * and result are the payload as base64 (JSON-RPC carries text). Each accepted socket gets its own
 * message connection (Content-Length framing). Usage: `node jsonrpc-server.js --kind tcp|unix
 * [--path <socket>] [--busy-slice-ms <ms>]` (the busy host: see lib/busy.ts). Prints its address as one JSON line when bound; stops on SIGTERM or when
 * the parent goes.
 */

import net from 'node:net';
import { parseArgs } from 'node:util';
import { busyReporter } from './lib/busy.js';
import { StreamMessageReader, StreamMessageWriter, createMessageConnection } from 'vscode-jsonrpc/node';

const { values } = parseArgs({ options: { kind: { type: 'string' }, path: { type: 'string' }, 'busy-slice-ms': { type: 'string' } } });

/** Prints one JSON line; once the address is out, `--busy-slice-ms` starts keeping this main thread busy. */
const report = busyReporter(values['busy-slice-ms']);

const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  const connection = createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));
  connection.onRequest('echo', (payload: string) => payload);
  connection.onClose(() => connection.dispose());
  socket.on('error', () => socket.destroy());
  connection.listen();
});

const shutdown = (): void => {
  server.close();
  setTimeout(() => process.exit(0), 50).unref();
};
process.once('SIGTERM', shutdown);
process.once('disconnect', shutdown);

if (values.kind === 'tcp') {
  server.listen(0, '127.0.0.1', () => report({ kind: 'tcp', host: '127.0.0.1', port: (server.address() as net.AddressInfo).port }));
} else if (values.kind === 'unix' && values.path !== undefined) {
  server.listen(values.path, () => report({ kind: 'unix', path: values.path }));
} else {
  report({ error: 'jsonrpc server: expected --kind tcp, or --kind unix --path <path>' });
  process.exit(2);
}
server.on('error', (err) => {
  report({ error: `jsonrpc server: ${err.message}` });
  process.exit(2);
});
