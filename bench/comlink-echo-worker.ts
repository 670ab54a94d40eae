/**
 * comlink baseline, worker side: exposes `{ echo }` on the MessagePort handed over in
 * `workerData.port` (comlink's own node adapter has broken typings under NodeNext, so the
 * runtime's small `nodeEndpoint` adapter is used on both sides).
 */
import { workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import { nodeEndpoint } from '../src/bridge/endpoint.js';

const port = (workerData as { port: MessagePort }).port;
Comlink.expose(
  {
    echo(x: unknown): unknown {
      return x;
    },
  },
  nodeEndpoint(port),
);
