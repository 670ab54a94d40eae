/**
 * Busy host: the serving process's main thread is blocked in CPU slices (20 ms, then one turn
 * of the event loop, lib/busy.ts) while it serves over a Unix socket. A handler module running
 * in the connection worker should keep answering: DESIGN §6 asks its p99, over all calls of the
 * run pooled, ≤ 1 ms or ≤ 1.5x the floor, a raw echo server in a worker thread of the same kind
 * of busy process (what any server that keeps off its main thread gets). A main-thread handler
 * can only answer between slices, so its p99 shows the stall (~one slice), as do the peers users
 * pick today (grpc-js, vscode-jsonrpc, zeromq.js), whose servers run on the main thread.
 *
 * Then the worker handler over shm, with the defaults and with the opt-in poll window on both
 * ends (info rows): what a window costs a busy host whose machine has no core to spare.
 * Every figure here is pooled over the rounds (lib/rounds.ts `pooled`).
 */

import { makeTempDir, removeTempDir } from './lib/children.js';
import type { OursApi } from './lib/ours-api.js';
import { measureInterleaved, type BenchConfig, type SubjectSummary } from './lib/rounds.js';
import type { Subject } from './lib/subject.js';
import { atMost, type ResultRow } from './lib/table.js';
import { OursUnavailableError, kPeerPollIdle, startOursSubject } from './ours.js';
import { startGrpc, startJsonRpc, startZmq } from './peers.js';
import { startRawSubject } from './raw.js';

export const kBusySliceMs = 20;
let serial = 0;
/** DESIGN §6: the worker-module handler's p99 while the host's main thread is busy. */
export const kBusyWorkerP99TargetUs = 1000;
/** …or at most this multiple of the floor's p99 (a raw echo server in a worker thread of a busy process). */
export const kBusyFloorRatioMax = 1.5;

/** The peers measured on a busy host, each a server on its busy main thread over a Unix socket. */
const kBusyPeers = [
  { key: 'grpc', label: 'grpc-js unary', start: startGrpc },
  { key: 'jsonrpc', label: 'vscode-jsonrpc', start: startJsonRpc },
  { key: 'zmq', label: 'zeromq.js dealer/router', start: startZmq },
] as const;

export interface BusyHostResult {
  sliceMs: number;
  worker?: SubjectSummary;
  main?: SubjectSummary;
  /** The worker handler with a client whose connection worker sleeps at once (client idle 'sleep'). */
  workerClientSleeps?: SubjectSummary;
  /** The worker handler over shm: defaults, and idle kPeerPollIdle on both ends. */
  shm?: SubjectSummary;
  shmPoll?: SubjectSummary;
  /** The floor: a raw echo server in a worker thread of a busy process. */
  floor?: SubjectSummary;
  /** Peers' servers on a busy main thread, by label. */
  peers: Array<{ label: string; summary: SubjectSummary }>;
  /** Why a handler mode was not measured. */
  skipped: string[];
}

export async function runBusyHost(
  api: OursApi,
  config: BenchConfig,
  log: (line: string) => void,
): Promise<BusyHostResult> {
  const result: BusyHostResult = { sliceMs: kBusySliceMs, skipped: [], peers: [] };
  const dir = await makeTempDir();
  const busyArgs = ['--busy-slice-ms', String(kBusySliceMs)];
  /** Starts one server at a time and measures it alone, pooled. */
  const measureAlone = async (subject: { close(): Promise<void> } & Parameters<typeof measureInterleaved>[0][number]): Promise<SubjectSummary | undefined> => {
    try {
      return (await measureInterleaved([subject], config, { pipelined: false, pooled: true, log })).get(subject);
    } finally {
      await subject.close().catch((err: Error) => log(`close: ${err.message}`));
    }
  };
  try {
    log(`busy host: starting the floor, a raw unix echo server in a worker thread (${kBusySliceMs} ms slices on its main thread)`);
    result.floor = await measureAlone(await startRawSubject('unix', dir, { serverArgs: ['--in-worker', ...busyArgs], name: 'busy-floor', label: 'raw echo server in a worker thread' }));
    for (const peer of kBusyPeers) {
      log(`busy host: starting ${peer.label} unix server (${kBusySliceMs} ms slices)`);
      try {
        const summary = await measureAlone(await peer.start('unix', dir, busyArgs));
        if (summary !== undefined) result.peers.push({ label: peer.label, summary });
      } catch (err) {
        log(`busy host: ${peer.label} not measured (${(err as Error).message})`);
        result.skipped.push(`${peer.label}: ${(err as Error).message}`);
      }
    }
    // One busy server at a time: two busy main threads at once would fill both cores of a
    // 2-core machine, which measures the scheduler, not a busy host.
    for (const mode of ['worker', 'main', 'workerClientSleeps'] as const) {
      const handler = mode === 'main' ? 'main' : 'worker';
      const what = mode === 'workerClientSleeps' ? `${handler} handler, client with idle 'sleep'` : `${handler} handler`;
      log(`busy host: starting ours unix server (${what}, ${kBusySliceMs} ms slices)`);
      let subject: Subject;
      try {
        subject = await startOursSubject(api, {
          transport: 'unix',
          handler,
          dir,
          busySliceMs: kBusySliceMs,
          name: `busy-${mode}`,
          ...(mode === 'workerClientSleeps' ? { clientIdle: 'sleep' as const } : {}),
        });
      } catch (err) {
        if (!(err instanceof OursUnavailableError)) throw err;
        log(`ours: runtime not available yet (busy host, ${what}: ${err.message})`);
        result.skipped.push(`${what}: ${err.message}`);
        continue;
      }
      result[mode] = await measureAlone(subject);
    }
    const native = await import('../src/native/addon.js').catch(() => undefined);
    if (api.shm === undefined || native === undefined || !native.nativeAvailable()) {
      result.skipped.push('shm: the native addon is not built');
      return result;
    }
    for (const idle of [undefined, kPeerPollIdle]) {
      const what = idle === undefined ? 'defaults' : `idle '${idle}'`;
      log(`busy host: starting ours shm server (worker handler, ${what}, ${kBusySliceMs} ms slices)`);
      let subject: Subject;
      try {
        subject = await startOursSubject(api, {
          transport: 'shm',
          handler: 'worker',
          dir,
          busySliceMs: kBusySliceMs,
          shmName: `bench-${process.pid}-busy-${++serial}`,
          ...(idle === undefined ? {} : { idle }),
        });
      } catch (err) {
        if (!(err instanceof OursUnavailableError)) throw err;
        result.skipped.push(`shm ${what}: ${err.message}`);
        continue;
      }
      result[idle === undefined ? 'shm' : 'shmPoll'] = await measureAlone(subject);
    }
    return result;
  } finally {
    await removeTempDir(dir);
  }
}

/** The pooled figures of a summary (every call of every round), as the busy host judges them. */
function pooledOf(summary: SubjectSummary): { medianUs: number; p99Us: number } {
  const { medianUs, p99Us } = summary.pooled ?? summary.roundTrip;
  return { medianUs, p99Us };
}

export function busyHostRows(result: BusyHostResult): ResultRow[] {
  const rows: ResultRow[] = [];
  const scenario = (handler: string) => `busy host ${result.sliceMs}ms, ${handler} rt`;
  const floor = result.floor === undefined ? undefined : pooledOf(result.floor);
  if (floor !== undefined) rows.push({ scenario: scenario('floor: raw echo server in a worker thread'), transport: 'unix', ...floor });
  if (result.worker !== undefined) {
    const figures = pooledOf(result.worker);
    // DESIGN §6: ≤ 1 ms, or ≤ 1.5x the floor when the machine's own floor is above that.
    const bound = Math.max(kBusyWorkerP99TargetUs, floor === undefined ? 0 : kBusyFloorRatioMax * floor.p99Us);
    rows.push({
      scenario: scenario('worker handler'),
      transport: 'unix',
      ...figures,
      ...(floor === undefined ? {} : { baseline: 'floor p99', ratio: figures.p99Us / floor.p99Us }),
      target: `p99 <= ${kBusyWorkerP99TargetUs} µs or <= ${kBusyFloorRatioMax}x floor`,
      verdict: atMost(figures.p99Us, bound),
    });
  }
  if (result.workerClientSleeps !== undefined) {
    rows.push({ scenario: scenario("worker handler, client idle 'sleep'"), transport: 'unix', ...pooledOf(result.workerClientSleeps), verdict: 'info' });
  }
  for (const [summary, label] of [
    [result.shm, 'worker handler'],
    [result.shmPoll, `worker handler, idle '${kPeerPollIdle}' both ends`],
  ] as const) {
    if (summary === undefined) continue;
    rows.push({ scenario: scenario(label), transport: 'shm', ...pooledOf(summary), verdict: 'info' });
  }
  if (result.main !== undefined) {
    rows.push({ scenario: scenario('main-thread handler'), transport: 'unix', ...pooledOf(result.main), target: `(stalls ~${result.sliceMs} ms)`, verdict: 'info' });
  }
  for (const peer of result.peers) {
    const figures = pooledOf(peer.summary);
    rows.push({
      scenario: scenario(`${peer.label} server`),
      transport: 'unix',
      ...figures,
      ...(result.worker === undefined ? {} : { baseline: 'ours worker handler p99', ratio: figures.p99Us / pooledOf(result.worker).p99Us }),
      verdict: 'info',
    });
  }
  return rows;
}
