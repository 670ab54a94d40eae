/**
 * Worker isolate: a handler in its own worker thread of the bench process, called from the main
 * thread. ogurpchik's `isolate()` transport against comlink into a worker (the baseline of the
 * DESIGN §6 targets: round trip ≤ 0.5× comlink's, calls/s ≥ 10× comlink's), birpc over a
 * MessagePort and piscina `run()` (peers shown for information with their ratio to comlink).
 *
 * Every subject echoes a fresh 16-byte Uint8Array and is measured in the same interleaved
 * rounds as the tcp/unix sections (lib/rounds.ts).
 */

import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { createBirpc } from 'birpc';
import * as Comlink from 'comlink';
import { Piscina } from 'piscina';
import { nodeEndpoint } from '../src/bridge/endpoint.js';
import { withDeadline } from './lib/measure.js';
import type { OursApi, OursClient, OursRunning } from './lib/ours-api.js';
import { measureInterleaved, type BenchConfig, type Measured, type SubjectSummary } from './lib/rounds.js';
import { kPayloadBytes } from './lib/subject.js';
import { atMost, comparisonRows, type ResultRow } from './lib/table.js';
import { kIdlePresets } from '../src/idle.js';
import type { OursNodeOptions } from './lib/ours-api.js';
import { ceilingRow, floorRows, startThreadHop } from './lib/thread-hop.js';

/** DESIGN §6 worker-isolate targets, relative to comlink in the same run. */
export const kIsolateRoundTripRatioMax = 0.5;
export const kIsolateCallsPerSecRatioMin = 10;
/** Shown in the table's transport column. */
export const kIsolateTransport = 'worker';
/** Issue 3: the spin strategy's thread-to-thread round trip, absolute. */
export const kSpinRoundTripMaxUs = 5;
/** How long each side of the spinning subject busy-polls after draining its ring. */
export const kSpinMicros = 50;

const kStartTimeoutMs = 10_000;
const kCloseTimeoutMs = 5_000;

interface IsolateSubject extends Measured {
  readonly label: string;
  close(): Promise<void>;
}

export interface IsolateResult {
  transport: string;
  subjects: Array<{ key: string; label: string; summary: SubjectSummary }>;
  /** Why a subject was not measured. */
  skipped: string[];
}

const echoUrl = (name: string): URL => new URL(`./${name}`, import.meta.url);

/** A first call within the start-up deadline, so that a worker that cannot load fails here. */
async function firstCall(subject: IsolateSubject): Promise<IsolateSubject> {
  try {
    await withDeadline(subject.call(), kStartTimeoutMs, `${subject.label} first call`);
    return subject;
  } catch (err) {
    await subject.close().catch(() => undefined);
    throw err;
  }
}

/** Ours with the default idle policy, with the busy-poll alone, or sleeping at once (idle 'sleep'). */
type OursVariant = 'default' | 'spin' | 'block';

const kVariants: Record<OursVariant, { key: string; label: string; options: OursNodeOptions }> = {
  default: { key: 'ours-isolate', label: 'ours isolate', options: {} },
  // pollMicros 0: the busy-poll alone, not the poll window before it.
  spin: { key: 'ours-isolate-spin', label: `ours isolate, idleTuning.spinMicros ${kSpinMicros}`, options: { idleTuning: { spinMicros: kSpinMicros, pollMicros: 0 } } },
  block: { key: 'ours-isolate-block', label: "ours isolate, idle 'sleep' (sleeps at once)", options: { idle: 'sleep' } },
};

async function startOursIsolate(api: OursApi, variant: OursVariant): Promise<IsolateSubject> {
  const descriptor = api.isolate!(echoUrl('isolate-echo-plugin.js'));
  const { key, label, options } = kVariants[variant];
  const running: OursRunning = await withDeadline(new api.Node(options).connect(descriptor).start(), kStartTimeoutMs, 'ours isolate start()');
  const client: OursClient | undefined = running.client;
  if (client === undefined) {
    await running.close();
    throw new Error('start() resolved without a client');
  }
  let closed = false;
  return firstCall({
    key,
    label,
    transport: kIsolateTransport,
    // A fresh payload per call: the runtime may transfer (detach) what it is given.
    call: () => client.call(new Uint8Array(kPayloadBytes)),
    close: async () => {
      if (closed) return;
      closed = true;
      await withDeadline(running.close(), kCloseTimeoutMs, 'ours isolate close()');
    },
  });
}

interface EchoApi {
  echo(x: Uint8Array): Uint8Array;
}

/**
 * An echo worker (`file`, beside this one) given the second port of a MessageChannel in
 * `workerData.port`. `closer(release)` makes the subject's close(): once, it releases the RPC
 * library's side, closes our port and terminates the worker.
 */
function portWorker(file: string, label: string, log: (line: string) => void): { port: MessagePort; closer(release: () => void): () => Promise<void> } {
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(echoUrl(file), { workerData: { port: port2 }, transferList: [port2] });
  worker.on('error', (err) => log(`${label} worker error: ${err.message}`));
  let closed = false;
  return {
    port: port1,
    closer: (release) => async () => {
      if (closed) return;
      closed = true;
      release();
      port1.close();
      await worker.terminate();
    },
  };
}

/** comlink over a MessageChannel whose second port was transferred to the worker. */
async function startComlink(log: (line: string) => void): Promise<IsolateSubject> {
  const { port, closer } = portWorker('comlink-echo-worker.js', 'comlink', log);
  const remote = Comlink.wrap<EchoApi>(nodeEndpoint(port));
  return firstCall({
    key: 'comlink',
    label: 'comlink',
    transport: kIsolateTransport,
    call: () => remote.echo(new Uint8Array(kPayloadBytes)),
    close: closer(() => remote[Comlink.releaseProxy]()),
  });
}

/** birpc over a MessageChannel whose second port was transferred to the worker. */
async function startBirpc(log: (line: string) => void): Promise<IsolateSubject> {
  const { port, closer } = portWorker('birpc-echo-worker.js', 'birpc', log);
  const remote = createBirpc<EchoApi, Record<string, never>>(
    {},
    { post: (data) => port.postMessage(data), on: (handler) => port.on('message', handler), timeout: kStartTimeoutMs },
  );
  return firstCall({
    key: 'birpc',
    label: 'birpc',
    transport: kIsolateTransport,
    call: () => remote.echo(new Uint8Array(kPayloadBytes)),
    close: closer(() => remote.$close()),
  });
}

/** piscina with a task that returns its argument; `atomics: undefined` keeps piscina's default. */
async function startPiscina(atomics: 'disabled' | undefined): Promise<IsolateSubject> {
  const pool = new Piscina({
    filename: echoUrl('piscina-echo-task.js').href,
    ...(atomics === undefined ? {} : { atomics }),
  });
  let closed = false;
  return firstCall({
    key: atomics === undefined ? 'piscina' : `piscina-atomics-${atomics}`,
    label: atomics === undefined ? 'piscina run(), defaults' : `piscina run(), atomics ${atomics}`,
    transport: kIsolateTransport,
    call: () => pool.run(new Uint8Array(kPayloadBytes)),
    close: async () => {
      if (closed) return;
      closed = true;
      await pool.destroy();
    },
  });
}

/** Starts comlink, ours (when the runtime exports `isolate`) and piscina, and measures them. */
export async function runIsolate(
  api: OursApi | undefined,
  config: BenchConfig,
  log: (line: string) => void,
): Promise<IsolateResult> {
  const result: IsolateResult = { transport: kIsolateTransport, subjects: [], skipped: [] };
  const subjects: IsolateSubject[] = [];
  const tryStart = async (what: string, start: () => Promise<IsolateSubject>): Promise<void> => {
    log(`isolate: starting ${what}`);
    try {
      subjects.push(await start());
    } catch (err) {
      log(`isolate: ${what} not measured (${(err as Error).message})`);
      result.skipped.push(`isolate ${what}: ${(err as Error).message}`);
    }
  };
  try {
    // The baseline first: without it there are no ratios, so its failure fails the bench.
    log('isolate: starting comlink worker');
    subjects.push(await startComlink(log));
    if (api?.isolate !== undefined) await tryStart('ours isolate', () => startOursIsolate(api, 'default'));
    // Without the poll window: every message pays a sleep and a wake-up (shown for comparison).
    if (api?.isolate !== undefined) await tryStart("ours isolate idle 'sleep'", () => startOursIsolate(api, 'block'));
    // The spin strategy: both threads busy-poll their ring before sleeping (opt-in: it burns cores).
    if (api?.isolate !== undefined) await tryStart('ours isolate spin', () => startOursIsolate(api, 'spin'));
    await tryStart('birpc', () => startBirpc(log));
    await tryStart('piscina (default options)', () => startPiscina(undefined));
    await tryStart("piscina (atomics: 'disabled')", () => startPiscina('disabled'));
    // The bare ring ping-pong under ours: the floor of its round trip, the ceiling of its calls/s.
    await tryStart('thread hop', () => startThreadHop(kIsolateTransport, { pollMicros: kIdlePresets.balanced.isolatePollMicros }));
    const summaries = await measureInterleaved(subjects, config, { pipelined: true, log });
    result.subjects = subjects.map((s) => ({ key: s.key, label: s.label, summary: summaries.get(s)! }));
    return result;
  } finally {
    for (const subject of subjects) await subject.close().catch((err: Error) => log(`close: ${err.message}`));
  }
}

export function isolateRows(result: IsolateResult, inflight: number): ResultRow[] {
  const base = result.subjects.find((s) => s.key === 'comlink');
  if (base === undefined) return [];
  const withTransport = (s: (typeof result.subjects)[number]) => ({ ...s, transport: result.transport });
  const subjects = result.subjects.map(withTransport).filter((s) => s.key !== 'hop');
  const rows = comparisonRows({
    subjects,
    baseline: subjects.find((s) => s.key === 'comlink')!,
    baselineName: 'comlink',
    inflight,
    // Only ours is held to a target; piscina is shown for reference.
    targetsFor: (s) => (s.key === 'ours-isolate' ? { rtMax: kIsolateRoundTripRatioMax, rateMin: kIsolateCallsPerSecRatioMin } : undefined),
  }).concat(spinRow(result));
  const hop = result.subjects.find((s) => s.key === 'hop');
  if (hop !== undefined) {
    rows.push(...floorRows(0, 'comlink rt', hop.summary.roundTrip.medianUs, result.transport, kIsolateRoundTripRatioMax, base.summary.roundTrip.medianUs));
    rows.push(ceilingRow(hop.summary.pipelined!.callsPerSec, `comlink x${inflight}`, base.summary.pipelined!.callsPerSec, inflight, result.transport, kIsolateCallsPerSecRatioMin));
  }
  return rows;
}

/** The spin strategy's thread-to-thread round trip against its absolute target. */
function spinRow(result: IsolateResult): ResultRow[] {
  const spin = result.subjects.find((s) => s.key === 'ours-isolate-spin');
  if (spin === undefined) return [];
  const us = spin.summary.roundTrip.medianUs;
  return [
    {
      scenario: `  spin strategy rt, main <-> plugin thread (idleTuning.spinMicros ${kSpinMicros})`,
      transport: kIsolateTransport,
      medianUs: us,
      p99Us: spin.summary.roundTrip.p99Us,
      target: `<= ${kSpinRoundTripMaxUs} µs`,
      verdict: atMost(us, kSpinRoundTripMaxUs),
    },
  ];
}
