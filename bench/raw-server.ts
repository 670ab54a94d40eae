/**
 * Raw baseline server (a child process of the bench): echoes every u32-LE-framed message back,
 * answering all the complete frames of one read with one `write`, as a competent hand-written
 * server does (one write per frame would make the baseline pay a syscall per call). Usage: `node raw-server.js --kind tcp|unix [--path <socket path>] [--chunks]`.
 * `--chunks` echoes every chunk as it was read instead, one `write` per read: the cheapest server a
 * byte stream can have, for the bench's bare chain (lib/socket-chain.ts).
 * Prints its address as one JSON line when listening; stops on SIGTERM or when the parent goes.
 */

import net from 'node:net';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { busySlices, sliceMsOf } from './lib/busy.js';
import { listenAndReport, reportLine } from './lib/children.js';
import { FrameSplitter } from './lib/frames.js';

const { values } = parseArgs({
  args: isMainThread ? process.argv.slice(2) : (workerData as string[]),
  options: {
    kind: { type: 'string' },
    path: { type: 'string' },
    chunks: { type: 'boolean', default: false },
    'in-worker': { type: 'boolean', default: false },
    'busy-slice-ms': { type: 'string' },
  },
});

if (isMainThread && values['in-worker']) {
  // The server runs in the worker; this thread reports its address, then is kept busy.
  const worker = new Worker(new URL(import.meta.url), { workerData: process.argv.slice(2) });
  worker.once('message', (line: object) => {
    reportLine(line);
    const sliceMs = sliceMsOf(values['busy-slice-ms']);
    if (sliceMs > 0 && !('error' in line)) busySlices(sliceMs);
  });
  worker.once('error', (err) => {
    reportLine({ error: `raw server worker failed: ${err.message}` });
    process.exit(2);
  });
  const stop = (): void => process.exit(0);
  process.once('SIGTERM', stop);
  process.once('disconnect', stop);
} else {
  serve();
}

function serve(): void {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    if (values.chunks) {
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
      return;
    }
    const splitter = new FrameSplitter();
    let replies: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => {
      try {
        splitter.push(chunk, (frame) => replies.push(frame));
      } catch {
        socket.destroy();
        return;
      }
      if (replies.length === 0) return;
      socket.write(replies.length === 1 ? replies[0]! : Buffer.concat(replies));
      replies = [];
    });
  });

  listenAndReport(server, { kind: values.kind, path: values.path, label: 'raw server' });

  const shutdown = (): void => {
    server.close(() => process.exit(0));
    // Open client sockets keep `close` from finishing; do not wait for them.
    setTimeout(() => process.exit(0), 200).unref();
  };
  process.once('SIGTERM', shutdown);
  process.once('disconnect', shutdown);
}
