/**
 * grpc-js echo server (a child process of the bench): one unary method, `/bench.Echo/Echo`, whose
 * request and reply are raw bytes (a generic service definition with identity serializers, so no
 * protobuf work on either side). Usage: `node grpc-server.js --kind tcp|unix [--path <socket>] [--busy-slice-ms <ms>]`
 * (the busy host: see lib/busy.ts).
 * Prints its address as one JSON line when bound; stops on SIGTERM or when the parent goes.
 */

import { parseArgs } from 'node:util';
import { busyReporter } from './lib/busy.js';
import * as grpc from '@grpc/grpc-js';
import { kGrpcEchoService } from './grpc-service.js';

const { values } = parseArgs({ options: { kind: { type: 'string' }, path: { type: 'string' }, 'busy-slice-ms': { type: 'string' } } });

/** Prints one JSON line; once the address is out, `--busy-slice-ms` starts keeping this main thread busy. */
const report = busyReporter(values['busy-slice-ms']);

const server = new grpc.Server();
server.addService(kGrpcEchoService, {
  Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
});

const shutdown = (): void => {
  server.forceShutdown();
  setTimeout(() => process.exit(0), 50).unref();
};
process.once('SIGTERM', shutdown);
process.once('disconnect', shutdown);

const bindTo =
  values.kind === 'tcp' ? '127.0.0.1:0' : values.kind === 'unix' && values.path !== undefined ? `unix://${values.path}` : undefined;
if (bindTo === undefined) {
  report({ error: 'grpc server: expected --kind tcp, or --kind unix --path <path>' });
  process.exit(2);
}
server.bindAsync(bindTo, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err !== null) {
    report({ error: `grpc server could not bind ${bindTo}: ${err.message}` });
    process.exit(2);
  }
  report(values.kind === 'tcp' ? { kind: 'tcp', host: '127.0.0.1', port } : { kind: 'unix', path: values.path });
});
