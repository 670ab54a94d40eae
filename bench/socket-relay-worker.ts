/**
 * The middle of the bench's bare socket chain: a worker thread that passes every message from the
 * main thread's ring to a socket (u32 length, u32 tag, bytes; one write per drained batch, as a
 * connection worker of ours batches its frames) and every echoed frame back into the ring to the
 * main thread, with nothing of the runtime in between (no envelope, codec or session), and the
 * idle strategy of ours' client connection worker (clientPollMicros): after the peer's bytes and
 * after each message from the main thread it looks at that ring once per loop turn for the window
 * before it sleeps. Closes the socket and the ring to the main thread when the ring from it closes.
 */
import net from 'node:net';
import { workerData } from 'node:worker_threads';
import { RingReader, RingWriter } from '../src/shm/ring.js';
import { FrameSplitter } from './lib/frames.js';

const data = workerData as { fromMain: SharedArrayBuffer; toMain: SharedArrayBuffer; address: { host: string; port: number } | { path: string }; pollMicros: number };
const toMain = new RingWriter(data.toMain);
const socket = net.connect(data.address);
socket.setNoDelay(true);
let batch: Buffer[] = [];
const reader = new RingReader(data.fromMain, {
  onMessage(tag, bytes) {
    const frame = Buffer.allocUnsafe(8 + bytes.length);
    frame.writeUInt32LE(4 + bytes.length, 0);
    frame.writeUInt32LE(tag, 4);
    frame.set(bytes, 8);
    batch.push(frame);
  },
  onBatch() {
    socket.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch));
    batch = [];
  },
  onClose() {
    socket.end();
    toMain.close();
  },
}, { pollMicros: data.pollMicros });
/** As ours' connection worker (WorkerHub#relay): the wake-up the echoes owe the main thread waits for the end of this turn. */
function relay(tag: number, bytes: Uint8Array): void {
  toMain.holdWakeForTurn();
  toMain.write(tag, bytes);
}
const splitter = new FrameSplitter();
socket.on('data', (chunk: Buffer) => {
  if (data.pollMicros > 0) reader.expectWithin(data.pollMicros / 1000);
  splitter.push(chunk, (frame) => relay(frame.readUInt32LE(4), frame.subarray(8)));
});
socket.once('connect', () => reader.start());
socket.on('error', () => {
  reader.stop();
  toMain.close();
});
