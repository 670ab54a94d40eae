/**
 * The bench's thread-hop echo: reads every message from `workerData.input` and writes it back,
 * same tag, to `workerData.output`, with nothing of the runtime in between (no codec, no session).
 * Closes the output ring when the input ring closes; then nothing keeps the worker alive.
 */
import { workerData } from 'node:worker_threads';
import { RingReader, RingWriter } from '../src/shm/ring.js';

const data = workerData as { input: SharedArrayBuffer; output: SharedArrayBuffer; pollMicros?: number; spinMicros?: number };
const writer = new RingWriter(data.output);
new RingReader(data.input, {
  onMessage: (tag, bytes) => writer.write(tag, bytes),
  onClose: () => writer.close(),
}, { pollMicros: data.pollMicros ?? 0, spinMicros: data.spinMicros ?? 0 }).start();
