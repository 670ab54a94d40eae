/**
 * birpc baseline, worker side: serves `{ echo }` over the MessagePort handed over in
 * `workerData.port` (birpc's own wire: structured-clone messages with an id per call).
 */
import { workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { createBirpc } from 'birpc';

const port = (workerData as { port: MessagePort }).port;
createBirpc<Record<string, never>, { echo(x: Uint8Array): Uint8Array }>(
  { echo: (x) => x },
  {
    post: (data) => port.postMessage(data),
    on: (handler) => port.on('message', handler),
  },
);
