/**
 * The thread hop: one 16-byte message from the main thread to a worker and back over the same
 * SharedArrayBuffer rings, Atomics wake-ups and idle strategy (the poll window ours uses on that
 * kind of connection by default) the runtime uses between the caller and its connection worker,
 * with nothing else (no codec, no session, no socket).
 *
 * Every call through ours crosses this hop once each way on top of its transport, so
 * `raw rt + hop rt` is a floor for ours' round trip that no work on the runtime can go below,
 * and `hop rt` is the floor for an isolate call. The sections print it beside their targets.
 */
import { Worker } from 'node:worker_threads';
import { createRing, RingWriter } from '../../src/shm/ring.js';
import { ringCaller, workerEnder } from './ring-caller.js';
import { kPayloadBytes } from './subject.js';
import type { ResultRow } from './table.js';

export interface ThreadHopSubject {
  readonly key: 'hop';
  readonly label: string;
  readonly transport: string;
  call(): Promise<unknown>;
  close(): Promise<void>;
}

export const kThreadHopLabel = 'thread hop (ring ping-pong main <-> worker)';

export interface ThreadHopOptions {
  /** The poll window of ours' default for the section's connections (0 for sockets and shm, kIdlePresets.balanced.isolatePollMicros for isolates). */
  pollMicros: number;
  /** Busy-poll on both sides (default 0). */
  spinMicros?: number;
  /** Each ring's data area (default 64 KiB). */
  capacity?: number;
  /** Bytes of each message (default the 16-byte payload of the round-trip scenarios). */
  payloadBytes?: number;
}

export async function startThreadHop(transport: string, options: ThreadHopOptions): Promise<ThreadHopSubject> {
  const { pollMicros, spinMicros = 0, capacity = 1 << 16, payloadBytes = kPayloadBytes } = options;
  const input = createRing(capacity);
  const output = createRing(capacity);
  const endWorker = workerEnder(new Worker(new URL('../ring-echo-worker.js', import.meta.url), { workerData: { input, output, pollMicros, spinMicros } }));
  const caller = ringCaller(new RingWriter(input), output, { pollMicros, spinMicros }, payloadBytes);
  await caller.call();
  return {
    key: 'hop',
    label: kThreadHopLabel,
    transport,
    call: caller.call,
    async close() {
      // The worker closes its output once it has read the close record, and then exits.
      await caller.close();
      await endWorker();
    },
  };
}

/**
 * Two rows: the hop's own round trip, and the floor of ours' round trip as a ratio to the
 * baseline (`baselineUs + hopUs` over `baselineUs`; for an isolate, whose call is the hop itself,
 * pass `baselineUs` 0 to the floor and the comparison's own figure as `againstUs`).
 */
export function floorRows(baselineUs: number, baselineName: string, hopUs: number, transport: string, targetMax: number, againstUs = baselineUs): ResultRow[] {
  const floorUs = baselineUs + hopUs;
  const ratio = floorUs / againstUs;
  return [
    { scenario: `${kThreadHopLabel} rt`, transport, medianUs: hopUs, verdict: 'info' },
    {
      scenario: baselineUs > 0 ? `  floor of ours rt: ${baselineName} + thread hop` : '  floor of ours rt: the thread hop alone',
      transport,
      medianUs: floorUs,
      baseline: baselineName,
      ratio,
      target: `<= ${targetMax.toFixed(2)}x`,
      // Not a verdict on ours: whether the target lies above the floor at all on this machine.
      verdict: ratio > targetMax ? 'unreachable' : 'reachable',
    },
  ];
}

/** The ceiling of ours' calls/s over an isolate: the bare hop's, as a ratio to `againstRate`. */
export function ceilingRow(hopRate: number, againstName: string, againstRate: number, inflight: number, transport: string, targetMin: number): ResultRow {
  const ratio = hopRate / againstRate;
  return {
    scenario: `  ceiling of ours x${inflight}: the thread hop alone`,
    transport,
    callsPerSec: hopRate,
    baseline: againstName,
    ratio,
    target: `>= ${targetMin.toFixed(2)}x`,
    verdict: ratio < targetMin ? 'unreachable' : 'reachable',
  };
}
