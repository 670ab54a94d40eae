/**
 * The server end of the bench's bare main-thread-handler chain (a child process): a worker thread
 * holds the listening socket and its connections, as ours' connection worker does, and passes
 * every frame to the main thread through ONE ring (its record tagged with the connection's index,
 * as ours' records carry a connection id); the main thread echoes the records of each drained batch
 * into the ring back, and the worker writes what a drained batch holds for each socket with one write. Both rings
 * sleep at once (ours' defaults for a main-thread handler over tcp and unix: no poll window on
 * either side). Nothing of the runtime is in between: no envelope, codec or session.
 * Usage: `node main-chain-server.js --kind tcp|unix [--path <socket path>]`. Prints its address as
 * one JSON line when listening; stops on SIGTERM or when the parent goes.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { createRing, RingReader, RingWriter } from '../src/shm/ring.js';
import { listenAndReport, reportLine } from './lib/children.js';
import { FrameSplitter } from './lib/frames.js';

/** Each ring's data area, as ours' main <-> worker rings. */
const kCapacity = 1 << 20;

interface Rings {
  toMain: SharedArrayBuffer;
  fromMain: SharedArrayBuffer;
  args: string[];
}

if (isMainThread) {
  const rings: Rings = { toMain: createRing(kCapacity), fromMain: createRing(kCapacity), args: process.argv.slice(2) };
  const writer = new RingWriter(rings.fromMain);
  // The "handler": every record goes back as it came, on the main thread. The answers to a batch
  // go out after it, as ours' handlers' answers do (their promises settle once the batch is read):
  // answering inside it would wake the worker for the first answer and send the rest one by one.
  let conns: number[] = [];
  let answers: Uint8Array[] = [];
  new RingReader(rings.toMain, {
    onMessage(conn, bytes) {
      conns.push(conn);
      answers.push(bytes.slice());
    },
    onBatch() {
      for (let i = 0; i < conns.length; i++) writer.write(conns[i]!, answers[i]!);
      conns = [];
      answers = [];
    },
  }, { keepAlive: false }).start();
  const worker = new Worker(new URL(import.meta.url), { workerData: rings });
  worker.on('message', reportLine);
  worker.once('error', (err) => {
    reportLine({ error: `main chain server worker failed: ${err.message}` });
    process.exit(2);
  });
  const stop = (): void => process.exit(0);
  process.once('SIGTERM', stop);
  process.once('disconnect', stop);
} else {
  serve(workerData as Rings);
}

function serve(rings: Rings): void {
  const { values } = parseArgs({ args: rings.args, options: { kind: { type: 'string' }, path: { type: 'string' } } });
  const toMain = new RingWriter(rings.toMain);
  const sockets: Array<net.Socket | undefined> = [];
  const batches: Buffer[][] = [];
  /** Connections that have frames in the batch being drained. */
  let touched: number[] = [];
  new RingReader(rings.fromMain, {
    onMessage(conn, bytes) {
      if (sockets[conn] === undefined) return;
      const frame = Buffer.allocUnsafe(4 + bytes.length);
      frame.writeUInt32LE(bytes.length, 0);
      frame.set(bytes, 4);
      if (batches[conn]!.push(frame) === 1) touched.push(conn);
    },
    onBatch() {
      for (const conn of touched) {
        const batch = batches[conn]!;
        batches[conn] = [];
        sockets[conn]?.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch));
      }
      touched = [];
    },
  }).start();

  /** As ours' connection worker (WorkerHub#relay): the wake-up the frames owe the main thread waits for the end of this turn. */
  const relay = (conn: number, bytes: Uint8Array): void => {
    toMain.holdWakeForTurn();
    toMain.write(conn, bytes);
  };

  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    const conn = sockets.length;
    sockets.push(socket);
    batches.push([]);
    const splitter = new FrameSplitter();
    socket.on('data', (chunk: Buffer) => {
      try {
        // The record is the frame's body (the client's tag and payload), without the length prefix.
        splitter.push(chunk, (frame) => relay(conn, frame.subarray(4)));
      } catch {
        socket.destroy();
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      sockets[conn] = undefined;
      batches[conn] = [];
    });
  });
  listenAndReport(server, { kind: values.kind, path: values.path, label: 'main chain server' });
}
