/**
 * Busy host: the serving process's main thread is blocked in CPU slices (20 ms, then one turn
 * of the event loop) while it serves over a Unix socket. A handler module running in the
 * connection worker should keep answering (p99 ≤ 1 ms, DESIGN §6); a main-thread handler can
 * only answer between slices, so its p99 shows the stall (~one slice).
 */

import { makeTempDir, removeTempDir } from './lib/children.js';
import type { OursApi } from './lib/ours-api.js';
import { measureInterleaved, type BenchConfig, type SubjectSummary } from './lib/rounds.js';
import type { Subject } from './lib/subject.js';
import { atMost, type ResultRow } from './lib/table.js';
import { OursUnavailableError, startOursSubject, type HandlerMode } from './ours.js';

export const kBusySliceMs = 20;
/** DESIGN §6: the worker-module handler's p99 while the host's main thread is busy. */
export const kBusyWorkerP99TargetUs = 1000;

export interface BusyHostResult {
  sliceMs: number;
  worker?: SubjectSummary;
  main?: SubjectSummary;
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
    for (const handler of ['worker', 'main'] as const) {
      log(`busy host: starting ours unix server (${handler} handler, ${kBusySliceMs} ms slices)`);
      let subject: Subject;
      try {
        subject = await startOursSubject(api, {
          transport: 'unix',
          handler,
          dir,
          busySliceMs: kBusySliceMs,
          name: `busy-${handler}`,
        });
      } catch (err) {
        if (!(err instanceof OursUnavailableError)) throw err;
        log(`ours: runtime not available yet (busy host, ${handler} handler: ${err.message})`);
        result.skipped.push(`${handler}: ${err.message}`);
        continue;
      }
      try {
        const summaries = await measureInterleaved([subject], config, { pipelined: false, log });
        result[handler] = summaries.get(subject);
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
