/**
 * The middle of the bench's bare multiplexed chain (fanout.ts): one worker thread holding N
 * sockets to an echo server and ONE ring pair with the main thread, whatever N is. A message's tag
 * picks its socket (tag % N); each drained batch from the main thread is one write per socket it
 * touched (the socket corked for the batch); every echoed frame goes back into the one ring to the
 * main thread. Nothing of the runtime is in between (no envelope, codec or session), and the idle
 * strategy and wake-ups are ours' client connection worker's (clientPollMicros; one wake-up of the
 * main thread per turn, WorkerHub#relay). This is the shape of a data
 * plane with one ring pair per thread pair: the bound of a client with many connections.
 */
import net from 'node:net';
import { workerData } from 'node:worker_threads';
import { RingReader, RingWriter } from '../src/shm/ring.js';
import { FrameSplitter } from './lib/frames.js';

const data = workerData as { fromMain: SharedArrayBuffer; toMain: SharedArrayBuffer; address: { host: string; port: number } | { path: string }; connections: number; pollMicros: number };
const toMain = new RingWriter(data.toMain);
const sockets: net.Socket[] = [];
const batches: Buffer[][] = [];
/** Sockets that have frames in the batch being drained. */
let touched: number[] = [];

const reader = new RingReader(data.fromMain, {
  onMessage(tag, bytes) {
    const i = tag % sockets.length;
    const frame = Buffer.allocUnsafe(8 + bytes.length);
    frame.writeUInt32LE(4 + bytes.length, 0);
    frame.writeUInt32LE(tag, 4);
    frame.set(bytes, 8);
    if (batches[i]!.push(frame) === 1) touched.push(i);
  },
  onBatch() {
    for (const i of touched) {
      const batch = batches[i]!;
      sockets[i]!.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch));
      batches[i] = [];
    }
    touched = [];
  },
  onClose() {
    for (const socket of sockets) socket.end();
    toMain.close();
  },
}, { pollMicros: data.pollMicros });

/**
 * What ours' connection worker does (WorkerHub#relay): the wake-up the echoes owe the main thread
 * waits for the end of this event-loop turn, so the echoes read from every socket this turn reach
 * it with one wake-up.
 */
function relay(tag: number, bytes: Uint8Array): void {
  toMain.holdWakeForTurn();
  toMain.write(tag, bytes);
}

let connected = 0;
for (let i = 0; i < data.connections; i++) {
  const socket = net.connect(data.address);
  socket.setNoDelay(true);
  const splitter = new FrameSplitter();
  socket.on('data', (chunk: Buffer) => {
    if (data.pollMicros > 0) reader.expectWithin(data.pollMicros / 1000);
    splitter.push(chunk, (frame) => relay(frame.readUInt32LE(4), frame.subarray(8)));
  });
  socket.once('connect', () => {
    if (++connected === data.connections) reader.start();
  });
  socket.on('error', () => {
    reader.stop();
    toMain.close();
  });
  sockets.push(socket);
  batches.push([]);
}
