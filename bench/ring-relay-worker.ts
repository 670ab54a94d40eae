/**
 * The middle of the bench's bare ring chain: a worker thread that passes every message from the
 * main thread's ring into the shared-memory ring to the other process, and every answer back, with
 * the rings, wake-ups and idle strategy of an shm client connection worker of ours
 * (clientPollMicros: after the peer's answers and the main thread's messages it looks at the main
 * thread's ring once per loop turn for the window before it sleeps) and nothing else. Passes a
 * close on in both directions; then nothing keeps the worker alive.
 */
import { workerData } from 'node:worker_threads';
import { futexSignal } from '../src/native/addon.js';
import { RingReader, RingWriter } from '../src/shm/ring.js';

const data = workerData as { fromMain: SharedArrayBuffer; toMain: SharedArrayBuffer; toPeer: SharedArrayBuffer; fromPeer: SharedArrayBuffer; pollMicros: number };
const toMain = new RingWriter(data.toMain);
const toPeer = new RingWriter(data.toPeer, { signal: futexSignal });
const fromMain = new RingReader(data.fromMain, {
  onMessage: (tag, bytes) => toPeer.write(tag, bytes),
  onClose: () => toPeer.close(),
}, { pollMicros: data.pollMicros });
fromMain.start();
new RingReader(data.fromPeer, {
  onMessage: (tag, bytes) => {
    if (data.pollMicros > 0) fromMain.expectWithin(data.pollMicros / 1000);
    toMain.write(tag, bytes);
  },
  onClose: () => toMain.close(),
}, { signal: futexSignal }).start();
