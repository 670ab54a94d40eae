/**
 * The idle policy (NodeOptions.idle): each preset on both ends, ours worker handler over unix.
 * Per preset: the round trip, calls/s with `inflight` in flight, the CPU this (client) process
 * spends per call over those runs, and the CPU a connected but silent client spends in 1 s.
 */
import { kIdlePresets } from '../src/idle.js';
import { makeTempDir, removeTempDir } from './lib/children.js';
import { inRounds, median, medianOfRoundTrips, pipelined, roundTrip, type RoundTripResult } from './lib/measure.js';
import type { OursApi, OursIdle } from './lib/ours-api.js';
import type { BenchConfig } from './lib/rounds.js';
import type { ResultRow } from './lib/table.js';
import { OursUnavailableError, startOursSubject } from './ours.js';

export interface IdleCase {
  idle: OursIdle;
  roundTrip: RoundTripResult;
  callsPerSec: number;
  /** This process's CPU (user + system, every thread) per call over the measured runs, µs. */
  cpuPerCallUs: number;
  /** This process's CPU in 1 s with the client connected and silent, ms. */
  idleCpuMs: number;
}

export interface IdleResult {
  cases: IdleCase[];
  skipped: string[];
}

const cpuUs = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return u.user + u.system;
};

export async function runIdle(api: OursApi, config: BenchConfig, log: (line: string) => void): Promise<IdleResult> {
  const dir = await makeTempDir();
  const result: IdleResult = { cases: [], skipped: [] };
  try {
    for (const idle of Object.keys(kIdlePresets) as OursIdle[]) {
      log(`idle: starting ours unix server and client (worker handler, idle '${idle}' both ends)`);
      let subject;
      try {
        subject = await startOursSubject(api, { transport: 'unix', handler: 'worker', dir, name: `idle-${idle}`, idle, label: `ours worker handler, idle '${idle}'` });
      } catch (err) {
        if (!(err instanceof OursUnavailableError)) throw err;
        result.skipped.push(`idle '${idle}': ${err.message}`);
        continue;
      }
      try {
        let calls = 0;
        const call = () => {
          calls++;
          return subject.call();
        };
        const rts: RoundTripResult[] = [];
        const rates: number[] = [];
        const cpuFrom = process.cpuUsage();
        await inRounds(config.rounds, async () => {
          rts.push(await roundTrip(call, { warmupMs: config.warmupMs, durationMs: config.durationMs, maxSamples: config.maxSamples }));
          rates.push((await pipelined(call, { inflight: config.inflight, warmupMs: config.warmupMs, durationMs: config.durationMs })).callsPerSec);
        });
        const cpuPerCallUs = cpuUs(cpuFrom) / calls;
        // Let the last windows pass, then measure a silent second.
        await new Promise((r) => setTimeout(r, 50));
        const idleFrom = process.cpuUsage();
        await new Promise((r) => setTimeout(r, 1000));
        const idleCpuMs = cpuUs(idleFrom) / 1000;
        result.cases.push({ idle, roundTrip: medianOfRoundTrips(rts), callsPerSec: median(rates), cpuPerCallUs, idleCpuMs });
      } finally {
        await subject.close();
      }
    }
    return result;
  } finally {
    await removeTempDir(dir);
  }
}

export function idleRows(result: IdleResult, inflight: number): ResultRow[] {
  const rows: ResultRow[] = [];
  const base = result.cases.find((c) => c.idle === 'balanced');
  for (const c of result.cases) {
    const what = `idle '${c.idle}', ours worker handler (client CPU ${c.cpuPerCallUs.toFixed(1)} µs/call, ${c.idleCpuMs.toFixed(1)} ms/s silent)`;
    const vs = base === undefined || c === base ? {} : { baseline: "idle 'balanced'" };
    rows.push({ scenario: `${what} rt`, transport: 'unix', medianUs: c.roundTrip.medianUs, p99Us: c.roundTrip.p99Us, ...vs, ...(base && c !== base ? { ratio: c.roundTrip.medianUs / base.roundTrip.medianUs } : {}), verdict: 'info' });
    rows.push({ scenario: `${what} x${inflight}`, transport: 'unix', callsPerSec: c.callsPerSec, ...vs, ...(base && c !== base ? { ratio: c.callsPerSec / base.callsPerSec } : {}), verdict: 'info' });
  }
  return rows;
}
