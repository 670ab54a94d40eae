/**
 * The middle of the bench's bare ring chain: a worker thread that passes every message from the
 * main thread's ring into the shared-memory ring to the other process, and every answer back, with
 * the rings, wake-ups and idle strategy (sleep at once) of an shm connection worker of ours and
 * nothing else. Passes a close on in both directions; then nothing keeps the worker alive.
 */
import { workerData } from 'node:worker_threads';
import { futexSignal } from '../src/shm/native.js';
import { RingReader, RingWriter } from '../src/shm/ring.js';

const data = workerData as { fromMain: SharedArrayBuffer; toMain: SharedArrayBuffer; toPeer: SharedArrayBuffer; fromPeer: SharedArrayBuffer };
const toMain = new RingWriter(data.toMain);
const toPeer = new RingWriter(data.toPeer, { signal: futexSignal });
new RingReader(data.fromMain, {
  onMessage: (tag, bytes) => toPeer.write(tag, bytes),
  onClose: () => toPeer.close(),
}).start();
new RingReader(data.fromPeer, {
  onMessage: (tag, bytes) => toMain.write(tag, bytes),
  onClose: () => toMain.close(),
}, { signal: futexSignal }).start();
