/**
 * The bare ring chain: one 16-byte message from the main thread to another process and back over
 * shared-memory rings woken by the native futex, with the runtime's ring code and idle strategy
 * (sleep at once) and nothing else (no framing, codec or session).
 *
 * - `via worker`: main thread <-> worker thread <-> other process, the path every shm call of ours
 *   takes (the caller's thread, its connection worker, the serving process). Whatever the runtime
 *   does, it cannot beat this chain: it is the floor of ours' round trip and the ceiling of its
 *   calls/s over shm.
 * - `direct`: main thread <-> other process, a design in which the caller's thread writes the
 *   cross-process ring itself, shown beside it for what the worker hop costs.
 */
import { Worker } from 'node:worker_threads';
import { futexSignal, loadNative } from '../../src/native/addon.js';
import { createRing, initRing, kRingHeaderBytes, RingWriter, type RingReaderOptions } from '../../src/shm/ring.js';
import { kIdlePresets } from '../../src/idle.js';
import { ringCaller, workerEnder } from './ring-caller.js';
import type { Subject } from './subject.js';
import { startServerChild, type ServerChild } from './children.js';

export type ChainKind = 'via-worker' | 'direct';


export const kChainLabels: Record<ChainKind, string> = {
  'via-worker': 'bare ring chain main <-> worker <-> other process',
  direct: 'bare ring chain main <-> other process (no worker hop)',
};

/** Each ring's data area: as ours' shm rings in the bench and its main <-> worker rings. */
const kDefaultCapacity = 1 << 20;
let chainCounter = 0;

export interface RingChainOptions {
  /** Each ring's data area (default 1 MiB). */
  capacity?: number;
  /** Bytes of each message (default the 16-byte payload of the round-trip scenarios). */
  payloadBytes?: number;
}

/** `token` starts every segment name (so the bench's leftover sweep recognises them). */
export async function startRingChain(kind: ChainKind, token: string, options: RingChainOptions = {}): Promise<Subject> {
  const { capacity: kCapacity = kDefaultCapacity, payloadBytes } = options;
  const native = loadNative();
  const names = ['c2s', 's2c'].map((dir) => `/${token}chain-${++chainCounter}-${dir}`);
  const [c2s, s2c] = names.map((name) => {
    const sab = native.shmOpen({ name, size: kRingHeaderBytes + kCapacity, create: true, exclusive: true });
    initRing(sab);
    return sab;
  }) as [SharedArrayBuffer, SharedArrayBuffer];
  let server: ServerChild;
  try {
    server = await startServerChild(new URL('../ring-chain-server.js', import.meta.url), names, { label: 'ring chain server' });
  } finally {
    // Mapped by both processes now (or never to be): nothing need stay in /dev/shm.
    for (const name of names) native.shmUnlink(name);
  }
  let endWorker: (() => Promise<void>) | undefined;
  let writer: RingWriter;
  let replies: SharedArrayBuffer;
  let readerOptions: RingReaderOptions = {};
  if (kind === 'via-worker') {
    const fromMain = createRing(kCapacity);
    const toMain = createRing(kCapacity);
    endWorker = workerEnder(new Worker(new URL('../ring-relay-worker.js', import.meta.url), { workerData: { fromMain, toMain, toPeer: c2s, fromPeer: s2c, pollMicros: kIdlePresets.balanced.clientPollMicros } }));
    writer = new RingWriter(fromMain);
    replies = toMain;
  } else {
    writer = new RingWriter(c2s, { signal: futexSignal });
    replies = s2c;
    readerOptions = { signal: futexSignal };
  }
  const caller = ringCaller(writer, replies, readerOptions, payloadBytes);
  await caller.call();
  let closing: Promise<void> | undefined;
  return {
    key: kind === 'direct' ? 'chain-direct' : 'chain-via-worker',
    label: kChainLabels[kind],
    transport: 'shm',
    call: caller.call,
    close() {
      closing ??= (async () => {
        await caller.close();
        await endWorker?.();
        await server.stop();
      })();
      return closing;
    },
  };
}
