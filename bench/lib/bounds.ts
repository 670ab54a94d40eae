/**
 * Rows for a bare path measured beside ours (a chain of the hops ours' calls cross, with nothing of
 * the runtime): its own figures against the baseline (info), and, for the path ours takes, the
 * floor of ours' round trip and the ceiling of its calls/s, marked reachable or unreachable
 * against the targets. Not verdicts on ours: whether the targets lie within what that path
 * allows on this machine at all.
 */
import type { SubjectSummary } from './rounds.js';
import type { ResultRow } from './table.js';

export interface MeasuredPath {
  label: string;
  summary: SubjectSummary;
}

export interface PathRowsOptions {
  transport: string;
  /** e.g. "raw unix": the rows say "<name> rt" and "<name> x64". */
  baselineName: string;
  inflight: number;
  /** Given for the path ours takes: the targets its floor and ceiling are held against. */
  bounds?: { rtMax: number; rateMin: number; what: string };
}

export function pathRows(path: MeasuredPath, baseline: MeasuredPath, options: PathRowsOptions): ResultRow[] {
  const { transport, baselineName, inflight } = options;
  const rt = path.summary.roundTrip.medianUs;
  const rate = path.summary.pipelined?.callsPerSec ?? Number.NaN;
  const rtRatio = rt / baseline.summary.roundTrip.medianUs;
  const rateRatio = rate / (baseline.summary.pipelined?.callsPerSec ?? Number.NaN);
  const rows: ResultRow[] = [
    { scenario: `${path.label} rt`, transport, medianUs: rt, p99Us: path.summary.roundTrip.p99Us, baseline: `${baselineName} rt`, ratio: rtRatio, verdict: 'info' },
    { scenario: `${path.label} x${inflight}`, transport, callsPerSec: rate, baseline: `${baselineName} x${inflight}`, ratio: rateRatio, verdict: 'info' },
  ];
  const bounds = options.bounds;
  if (bounds !== undefined) {
    rows.push(
      {
        scenario: `  floor of ours rt: ${bounds.what}`,
        transport,
        medianUs: rt,
        baseline: `${baselineName} rt`,
        ratio: rtRatio,
        target: `<= ${bounds.rtMax.toFixed(2)}x`,
        verdict: rtRatio > bounds.rtMax ? 'unreachable' : 'reachable',
      },
      {
        scenario: `  ceiling of ours x${inflight}: ${bounds.what}`,
        transport,
        callsPerSec: rate,
        baseline: `${baselineName} x${inflight}`,
        ratio: rateRatio,
        target: `>= ${bounds.rateMin.toFixed(2)}x`,
        verdict: rateRatio < bounds.rateMin ? 'unreachable' : 'reachable',
      },
    );
  }
  return rows;
}
