/**
 * The bare socket chain: one 16-byte message from the main thread through a worker thread and a
 * socket to an echo server that returns every chunk as it read it (raw-server.ts --chunks) and
 * back, over the runtime's own main <-> worker rings with its idle strategy (sleep at once),
 * batching the socket writes as ours does, with nothing else (no envelope, codec or session). Every tcp or unix call of ours takes this path, so
 * it is the floor of ours' round trip and the ceiling of its calls/s there.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { createRing, RingWriter } from '../../src/shm/ring.js';
import { kIdlePresets } from '../../src/idle.js';
import { startServerChild } from './children.js';
import { ringCaller, workerEnder } from './ring-caller.js';
import type { SocketKind, Subject } from './subject.js';

export const kSocketChainLabel = 'bare chain main <-> worker <-> socket <-> chunk echo';


/** Each ring's data area, as ours' main <-> worker rings. */
const kCapacity = 1 << 20;

/** `dir` holds the raw server's Unix socket. */
export async function startSocketChain(transport: SocketKind, dir: string): Promise<Subject> {
  const args = [...(transport === 'tcp' ? ['--kind', 'tcp'] : ['--kind', 'unix', '--path', join(dir, 'chain.sock')]), '--chunks'];
  const server = await startServerChild(new URL('../raw-server.js', import.meta.url), args, { label: `raw ${transport} server (chain)` });
  const a = server.address;
  const address = a.kind === 'tcp' ? { host: a.host, port: a.port } : a.kind === 'unix' ? { path: a.path } : undefined;
  if (address === undefined) {
    await server.stop();
    throw new Error(`socket chain: unexpected server address ${JSON.stringify(a)}`);
  }
  const fromMain = createRing(kCapacity);
  const toMain = createRing(kCapacity);
  const endWorker = workerEnder(new Worker(new URL('../socket-relay-worker.js', import.meta.url), { workerData: { fromMain, toMain, address, pollMicros: kIdlePresets.balanced.clientPollMicros } }));
  const caller = ringCaller(new RingWriter(fromMain), toMain);
  await caller.call();
  let closing: Promise<void> | undefined;
  return {
    key: 'chain',
    label: kSocketChainLabel,
    transport,
    call: caller.call,
    close() {
      closing ??= (async () => {
        await caller.close();
        await endWorker();
        await server.stop();
      })();
      return closing;
    },
  };
}
