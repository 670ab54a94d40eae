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
import { startServerChild, type ServerChild } from './children.js';
import { ringCaller, workerEnder } from './ring-caller.js';
import type { SocketKind, Subject } from './subject.js';

export const kSocketChainLabel = 'bare chain main <-> worker <-> socket <-> chunk echo';


/** Each ring's data area, as ours' main <-> worker rings. */
const kCapacity = 1 << 20;

/**
 * The bare chain a main-thread handler's call crosses: the same client end (main <-> worker <->
 * socket), and a server whose connection worker passes each frame to its main thread and back
 * through one ring pair (main-chain-server.ts). Four threads, as ours' main-thread handler: the
 * floor of its round trip and the ceiling of its calls/s.
 */
export const kMainChainLabel = 'bare chain main <-> worker <-> socket <-> worker <-> main';

/** `dir` holds the raw server's Unix socket. */
export async function startSocketChain(transport: SocketKind, dir: string): Promise<Subject> {
  const args = [...(transport === 'tcp' ? ['--kind', 'tcp'] : ['--kind', 'unix', '--path', join(dir, 'chain.sock')]), '--chunks'];
  const server = await startServerChild(new URL('../raw-server.js', import.meta.url), args, { label: `raw ${transport} server (chain)` });
  return chainTo(server, { key: 'chain', label: kSocketChainLabel, transport });
}

/** The main-thread handler's bare chain (kMainChainLabel); `dir` holds its server's Unix socket. */
export async function startMainChain(transport: SocketKind, dir: string): Promise<Subject> {
  const args = transport === 'tcp' ? ['--kind', 'tcp'] : ['--kind', 'unix', '--path', join(dir, 'main-chain.sock')];
  const server = await startServerChild(new URL('../main-chain-server.js', import.meta.url), args, { label: `main chain ${transport} server` });
  return chainTo(server, { key: kMainChainKey, label: kMainChainLabel, transport });
}

/** The results key of the main-thread handler's bare chain. */
export const kMainChainKey = 'main-chain';

/** The client end of a chain (main <-> worker <-> socket) to `server`; the subject stops the server on close. */
async function chainTo(server: ServerChild, subject: Pick<Subject, 'key' | 'label' | 'transport'>): Promise<Subject> {
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
    ...subject,
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
