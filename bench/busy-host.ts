/**
 * Busy host: the serving process's main thread is blocked in CPU slices (20 ms, then one turn
 * of the event loop) while it serves over a Unix socket. A handler module running in the
 * connection worker should keep answering (p99 ≤ 1 ms, DESIGN §6); a main-thread handler can
 * only answer between slices, so its p99 shows the stall (~one slice).
 *
 * Then the worker handler over shm, with the defaults and with the opt-in poll window on both
 * ends (info rows): what a window costs a busy host whose machine has no core to spare.
 */

import { makeTempDir, removeTempDir } from './lib/children.js';
import type { OursApi } from './lib/ours-api.js';
import { measureInterleaved, type BenchConfig, type SubjectSummary } from './lib/rounds.js';
import type { Subject } from './lib/subject.js';
import { atMost, type ResultRow } from './lib/table.js';
import { OursUnavailableError, kPeerPollMicros, startOursSubject, type HandlerMode } from './ours.js';

export const kBusySliceMs = 20;
let serial = 0;
/** DESIGN §6: the worker-module handler's p99 while the host's main thread is busy. */
export const kBusyWorkerP99TargetUs = 1000;

export interface BusyHostResult {
  sliceMs: number;
  worker?: SubjectSummary;
  main?: SubjectSummary;
  /** The worker handler with a client whose connection worker sleeps at once (clientPollMicros 0). */
  workerClientSleeps?: SubjectSummary;
  /** The worker handler over shm: defaults, and peerPollMicros kPeerPollMicros on both ends. */
  shm?: SubjectSummary;
  shmPoll?: SubjectSummary;
  /** Why a handler mode was not measured. */
  skipped: string[];
}

export async function runBusyHost(
  api: OursApi,
  config: BenchConfig,
  log: (line: string) => void,
): Promise<BusyHostResult> {
  const result: BusyHostResult = { sliceMs: kBusySliceMs, skipped: [] };
  const dir = await makeTempDir();
  try {
    // One busy server at a time: two busy main threads at once would fill both cores of a
    // 2-core machine, which measures the scheduler, not a busy host.
    for (const mode of ['worker', 'main', 'workerClientSleeps'] as const) {
      const handler = mode === 'main' ? 'main' : 'worker';
      const what = mode === 'workerClientSleeps' ? `${handler} handler, client with clientPollMicros 0` : `${handler} handler`;
      log(`busy host: starting ours unix server (${what}, ${kBusySliceMs} ms slices)`);
      let subject: Subject;
      try {
        subject = await startOursSubject(api, {
          transport: 'unix',
          handler,
          dir,
          busySliceMs: kBusySliceMs,
          name: `busy-${mode}`,
          ...(mode === 'workerClientSleeps' ? { clientPollMicros: 0 } : {}),
        });
      } catch (err) {
        if (!(err instanceof OursUnavailableError)) throw err;
        log(`ours: runtime not available yet (busy host, ${what}: ${err.message})`);
        result.skipped.push(`${what}: ${err.message}`);
        continue;
      }
      try {
        const summaries = await measureInterleaved([subject], config, { pipelined: false, log });
        result[mode] = summaries.get(subject);
      } finally {
        await subject.close().catch((err: Error) => log(`close: ${err.message}`));
      }
    }
    const native = await import('../src/shm/native.js').catch(() => undefined);
    if (api.shm === undefined || native === undefined || !native.nativeAvailable()) {
      result.skipped.push('shm: the native addon is not built');
      return result;
    }
    for (const peerPollMicros of [undefined, kPeerPollMicros]) {
      const what = peerPollMicros === undefined ? 'defaults' : `peerPollMicros ${peerPollMicros}`;
      log(`busy host: starting ours shm server (worker handler, ${what}, ${kBusySliceMs} ms slices)`);
      let subject: Subject;
      try {
        subject = await startOursSubject(api, {
          transport: 'shm',
          handler: 'worker',
          dir,
          busySliceMs: kBusySliceMs,
          shmName: `bench-${process.pid}-busy-${++serial}`,
          ...(peerPollMicros === undefined ? {} : { peerPollMicros }),
        });
      } catch (err) {
        if (!(err instanceof OursUnavailableError)) throw err;
        result.skipped.push(`shm ${what}: ${err.message}`);
        continue;
      }
      try {
        const summaries = await measureInterleaved([subject], config, { pipelined: false, log });
        result[peerPollMicros === undefined ? 'shm' : 'shmPoll'] = summaries.get(subject);
      } finally {
        await subject.close().catch((err: Error) => log(`close: ${err.message}`));
      }
    }
    return result;
  } finally {
    await removeTempDir(dir);
  }
}

export function busyHostRows(result: BusyHostResult): ResultRow[] {
  const rows: ResultRow[] = [];
  const scenario = (handler: string) => `busy host ${result.sliceMs}ms, ${handler} rt`;
  if (result.worker !== undefined) {
    const { medianUs, p99Us } = result.worker.roundTrip;
    rows.push({
      scenario: scenario('worker handler'),
      transport: 'unix',
      medianUs,
      p99Us,
      target: `p99 <= ${kBusyWorkerP99TargetUs} µs`,
      verdict: atMost(p99Us, kBusyWorkerP99TargetUs),
    });
  }
  if (result.workerClientSleeps !== undefined) {
    const { medianUs, p99Us } = result.workerClientSleeps.roundTrip;
    rows.push({ scenario: scenario('worker handler, clientPollMicros 0'), transport: 'unix', medianUs, p99Us, verdict: 'info' });
  }
  for (const [summary, label] of [
    [result.shm, 'worker handler'],
    [result.shmPoll, `worker handler, peerPollMicros ${kPeerPollMicros} both ends`],
  ] as const) {
    if (summary === undefined) continue;
    rows.push({ scenario: scenario(label), transport: 'shm', medianUs: summary.roundTrip.medianUs, p99Us: summary.roundTrip.p99Us, verdict: 'info' });
  }
  if (result.main !== undefined) {
    const { medianUs, p99Us } = result.main.roundTrip;
    rows.push({
      scenario: scenario('main-thread handler'),
      transport: 'unix',
      medianUs,
      p99Us,
      target: `(stalls ~${result.sliceMs} ms)`,
      verdict: 'info',
    });
  }
  return rows;
}
