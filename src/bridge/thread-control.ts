/**
 * The worker's side of a ring pair's control channel (HubOffer.control): one comlink endpoint per
 * thread pair, answering for each task riding the pair by its key.
 */
import * as Comlink from 'comlink';
import type { MessagePort } from 'node:worker_threads';
import { RpcError, toWireError } from '../errors.js';
import type { ReadyResult, TaskControl, ThreadControl } from './control.js';
import { nodeEndpoint } from './endpoint.js';

const kEnded: ReadyResult = { ok: false, error: toWireError(new RpcError('CLOSED', 'the connection task has ended')), ended: true };

/** Exposes ThreadControl on `port`, each call going to the TaskControl `controlOf(key)` finds (see ThreadControl for a key with none). */
export function exposeThreadControl(port: MessagePort, controlOf: (key: number) => TaskControl | undefined): void {
  const thread: ThreadControl = {
    ready: (key) => controlOf(key)?.ready() ?? Promise.resolve(kEnded),
    close: (key) => controlOf(key)?.close() ?? Promise.resolve(),
    drain: (key) => controlOf(key)?.drain() ?? Promise.resolve(),
    stats: (key) => controlOf(key)?.stats(),
    takeShm: (key, connectionId) => controlOf(key)?.takeShm(connectionId),
  };
  Comlink.expose(thread, nodeEndpoint(port));
}
