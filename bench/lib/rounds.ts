/**
 * Runs several subjects in interleaved rounds — round 1 of every subject, then round 2… — so
 * that a swing in CPU speed during the run (DESIGN §6 saw ~50%) hits competitors alike and the
 * ratios between them stay meaningful.
 */

import {
  medianOfPipelined,
  medianOfRoundTrips,
  pipelined,
  pooledRoundTrips,
  roundTrip,
  withDeadline,
  type PipelinedResult,
  type RoundTripResult,
} from './measure.js';

export interface BenchConfig {
  rounds: number;
  warmupMs: number;
  durationMs: number;
  maxSamples: number;
  inflight: number;
}

export interface Measured {
  call(): Promise<unknown>;
  readonly key: string;
  readonly transport: string;
}

export interface SubjectRounds {
  roundTrip: RoundTripResult[];
  pipelined: PipelinedResult[];
}

export interface SubjectSummary {
  roundTrip: RoundTripResult;
  /** With `pooled`: median and p99 over every round-trip sample of every round taken together. */
  pooled?: RoundTripResult;
  /** Absent when the subject was measured for round trips only. */
  pipelined?: PipelinedResult;
  rounds: SubjectRounds;
}

/** Slack over a measurement's nominal length before it is declared stalled. */
const kStallSlackMs = 15_000;

/** Measures every subject for `config.rounds` rounds; the summary is the median of rounds. */
export async function measureInterleaved(
  subjects: readonly Measured[],
  config: BenchConfig,
  options: { pipelined: boolean; pooled?: boolean; log: (line: string) => void },
): Promise<Map<Measured, SubjectSummary>> {
  const perSubject = new Map<Measured, SubjectRounds>(subjects.map((s) => [s, { roundTrip: [], pipelined: [] }]));
  const samples = new Map<Measured, Float64Array[]>(subjects.map((s) => [s, []]));
  const stallMs = config.warmupMs + config.durationMs + kStallSlackMs;
  for (let round = 0; round < config.rounds; round++) {
    for (const subject of subjects) {
      const name = `${subject.transport} ${subject.key}`;
      const record = perSubject.get(subject)!;
      const keep = options.pooled ? (sorted: Float64Array) => samples.get(subject)!.push(sorted) : undefined;
      const rt = await withDeadline(roundTrip(() => subject.call(), config, keep), stallMs, `${name} round trip`);
      record.roundTrip.push(rt);
      let line = `round ${round + 1}/${config.rounds}  ${name.padEnd(22)} 1 in flight: median ${rt.medianUs.toFixed(1)} µs, p99 ${rt.p99Us.toFixed(1)} µs (${rt.samples} samples)`;
      if (options.pipelined) {
        const pipe = await withDeadline(
          pipelined(() => subject.call(), config),
          stallMs,
          `${name} ${config.inflight} in flight`,
        );
        record.pipelined.push(pipe);
        line += `; ${config.inflight} in flight: ${Math.round(pipe.callsPerSec).toLocaleString('en-US')} calls/s`;
      }
      options.log(line);
    }
  }
  const summaries = new Map<Measured, SubjectSummary>();
  for (const [subject, rounds] of perSubject) {
    summaries.set(subject, {
      roundTrip: medianOfRoundTrips(rounds.roundTrip),
      ...(options.pooled ? { pooled: pooledRoundTrips(samples.get(subject)!) } : {}),
      ...(options.pipelined ? { pipelined: medianOfPipelined(rounds.pipelined) } : {}),
      rounds,
    });
  }
  return summaries;
}
