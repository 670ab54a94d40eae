/**
 * Payload sweep: echo 16 B, 1 KiB, 64 KiB, 1 MiB and 4 MiB with one call in flight, for the raw
 * Unix-socket ping-pong (raw.ts) and ogurpchik over unix and tcp (worker-module handler).
 * MB/s = request bytes (10^6) per second. For information: no target. Rounds are interleaved
 * across sizes and subjects, and each figure is the median of rounds.
 */

import { makeTempDir, removeTempDir } from './lib/children.js';
import { median, withDeadline } from './lib/measure.js';
import type { OursApi } from './lib/ours-api.js';
import type { BenchConfig } from './lib/rounds.js';
import type { Subject } from './lib/subject.js';
import type { ResultRow } from './lib/table.js';
import { OursUnavailableError, startOursSubject } from './ours.js';
import { startRawSubject } from './raw.js';

export const kSweepSizes = [16, 1024, 64 << 10, 1 << 20, 4 << 20] as const;

const kStallSlackMs = 15_000;
const kUnstableSpread = 1.5;

export type SweepConfig = Pick<BenchConfig, 'rounds' | 'warmupMs' | 'durationMs'>;

export interface SweepRound {
  mbPerSec: number;
  medianUs: number;
  calls: number;
}

export interface SweepPoint {
  bytes: number;
  /** Median of rounds. */
  mbPerSec: number;
  medianUs: number;
  rounds: SweepRound[];
}

export interface SweepResult {
  subjects: Array<{ key: string; label: string; transport: string; points: SweepPoint[] }>;
  skipped: string[];
  warnings: string[];
}

export function sizeLabel(bytes: number): string {
  if (bytes >= 1 << 20) return `${bytes / (1 << 20)} MiB`;
  if (bytes >= 1024) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}

function patterned(bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = (i * 131 + 7) & 0xff;
  return out;
}

/** Calls `op` back to back: `warmupMs` untimed, then `durationMs` timed (at least 3 calls). */
async function timedRound(op: () => Promise<unknown>, bytes: number, config: SweepConfig): Promise<SweepRound> {
  const warmEnd = performance.now() + config.warmupMs;
  do await op();
  while (performance.now() < warmEnd);
  const times: number[] = [];
  const start = performance.now();
  const end = start + config.durationMs;
  let t = start;
  while (t < end || times.length < 3) {
    await op();
    const done = performance.now();
    times.push((done - t) * 1000);
    t = done;
  }
  return { mbPerSec: (times.length * bytes) / ((t - start) / 1000) / 1e6, medianUs: median(times), calls: times.length };
}

/** A call of `bytes` through `subject`, with a fresh buffer whenever the runtime detached the last one. */
function sender(subject: Subject, bytes: number): () => Promise<unknown> {
  const send = subject.callBytes!.bind(subject);
  const source = patterned(bytes);
  let payload = source.slice();
  return () => {
    if (payload.byteLength === 0) payload = source.slice();
    return send(payload);
  };
}

export async function runSweep(api: OursApi | undefined, config: SweepConfig, log: (line: string) => void): Promise<SweepResult> {
  const result: SweepResult = { subjects: [], skipped: [], warnings: [] };
  const dir = await makeTempDir();
  const subjects: Subject[] = [];
  try {
    log('sweep: starting raw unix server');
    subjects.push(await startRawSubject('unix', dir));
    if (api !== undefined) {
      for (const transport of ['unix', 'tcp'] as const) {
        log(`sweep: starting ours ${transport} server (worker handler)`);
        try {
          subjects.push(await startOursSubject(api, { transport, handler: 'worker', dir, name: `sweep-${transport}` }));
        } catch (err) {
          if (!(err instanceof OursUnavailableError)) throw err;
          log(`sweep: ours ${transport} not measured (${err.message})`);
          result.skipped.push(`sweep ours ${transport}: ${err.message}`);
        }
      }
    }
    // Check every echo once, within a deadline, before timing anything.
    const ops = new Map<Subject, Array<() => Promise<unknown>>>();
    for (const subject of subjects) {
      const perSize: Array<() => Promise<unknown>> = [];
      for (const bytes of kSweepSizes) {
        const op = sender(subject, bytes);
        const reply = await withDeadline(op(), kStallSlackMs, `sweep ${subject.transport} ${subject.key} ${sizeLabel(bytes)} echo`);
        if (!(reply instanceof Uint8Array) || reply.byteLength !== bytes || reply[bytes - 1] !== ((bytes - 1) * 131 + 7) % 256) {
          throw new Error(`sweep: ${subject.transport} ${subject.key} ${sizeLabel(bytes)}: the reply is not the payload`);
        }
        perSize.push(op);
      }
      ops.set(subject, perSize);
    }
    const rounds = new Map<Subject, SweepRound[][]>(subjects.map((s) => [s, kSweepSizes.map(() => [])]));
    const stallMs = config.warmupMs + config.durationMs + kStallSlackMs;
    for (let round = 0; round < config.rounds; round++) {
      for (const [i, bytes] of kSweepSizes.entries()) {
        for (const subject of subjects) {
          const name = `${subject.transport} ${subject.key} ${sizeLabel(bytes)}`;
          const r = await withDeadline(timedRound(ops.get(subject)![i]!, bytes, config), stallMs, `sweep ${name}`);
          rounds.get(subject)![i]!.push(r);
          log(
            `round ${round + 1}/${config.rounds}  ${name.padEnd(26)} ${r.mbPerSec.toFixed(r.mbPerSec < 10 ? 2 : 0)} MB/s ` +
              `(median ${r.medianUs.toFixed(1)} µs, ${r.calls} calls)`,
          );
        }
      }
    }
    for (const subject of subjects) {
      const points = kSweepSizes.map((bytes, i) => {
        const rs = rounds.get(subject)![i]!;
        return { bytes, mbPerSec: median(rs.map((r) => r.mbPerSec)), medianUs: median(rs.map((r) => r.medianUs)), rounds: rs };
      });
      const label = subject.key === 'raw' ? 'raw ping-pong' : subject.label;
      result.subjects.push({ key: subject.key, label, transport: subject.transport, points });
      for (const p of points) {
        const values = p.rounds.map((r) => r.mbPerSec);
        const lo = Math.min(...values);
        const hi = Math.max(...values);
        if (hi > lo * kUnstableSpread) {
          result.warnings.push(
            `unstable: sweep ${subject.transport} ${label} ${sizeLabel(p.bytes)} ranged ${lo.toFixed(1)}-${hi.toFixed(1)} MB/s over ${values.length} rounds`,
          );
        }
      }
    }
  } finally {
    for (const subject of subjects) await subject.close().catch((err: Error) => log(`close: ${err.message}`));
    await removeTempDir(dir);
  }
  return result;
}

/** Rows by size, then subject; ours rows carry their ratio to raw unix at the same size (info). */
export function sweepRows(result: SweepResult): ResultRow[] {
  const rows: ResultRow[] = [];
  const raw = result.subjects.find((s) => s.key === 'raw');
  for (const [i, bytes] of kSweepSizes.entries()) {
    for (const subject of result.subjects) {
      const p = subject.points[i]!;
      const base = raw?.points[i];
      rows.push({
        scenario: `${subject.label} ${sizeLabel(bytes)}`,
        transport: subject.transport,
        medianUs: p.medianUs,
        mbPerSec: p.mbPerSec,
        ...(subject === raw || base === undefined
          ? {}
          : { baseline: `raw unix ${sizeLabel(bytes)}`, ratio: p.mbPerSec / base.mbPerSec, verdict: 'info' as const }),
      });
    }
  }
  return rows;
}
