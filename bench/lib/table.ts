/**
 * Formats benchmark results as a plain fixed-width text table, readable in a terminal and in a
 * log file alike (no colours, no box-drawing characters).
 */

/**
 * For a bound row (the best any runtime of this design could do on this machine, see
 * lib/thread-hop.ts): 'unreachable' when the bound itself misses the target, 'reachable' when it
 * leaves room. Not a verdict on ours.
 */
export type Verdict = 'PASS' | 'MISS' | 'info' | 'unreachable' | 'reachable';

/** One line of the table; figures a scenario does not measure are left undefined. */
export interface ResultRow {
  scenario: string;
  transport: string;
  medianUs?: number;
  p99Us?: number;
  callsPerSec?: number;
  /** Bandwidth in MB/s (10^6 bytes); its column appears only when some row has it. */
  mbPerSec?: number;
  /** Payload bytes the runtime copied per request; its column appears only when some row has it. */
  copiedBytes?: number;
  /** A process's resident memory, MiB; its column appears only when some row has it. */
  rssMiB?: number;
  /** Name of the row this one is compared with, e.g. "raw tcp, 1 in flight". */
  baseline?: string;
  /** This row's figure over the baseline's (time for round trips, rate for calls/s). */
  ratio?: number;
  /** Human-readable target, e.g. "<= 1.50x". */
  target?: string;
  verdict?: Verdict;
}

interface Column {
  header: string;
  align: 'left' | 'right';
  cell(row: ResultRow): string;
}

const dash = '-';

function us(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return dash;
  return value >= 1000 ? value.toFixed(0) : value.toFixed(1);
}

function rate(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return dash;
  return Math.round(value).toLocaleString('en-US');
}

/** MB/s: whole numbers, but small payloads' figures keep two significant decimals. */
function bandwidth(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return dash;
  return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : rate(value);
}

const allColumns: Column[] = [
  { header: 'scenario', align: 'left', cell: (r) => r.scenario },
  { header: 'transport', align: 'left', cell: (r) => r.transport },
  { header: 'median µs', align: 'right', cell: (r) => us(r.medianUs) },
  { header: 'p99 µs', align: 'right', cell: (r) => us(r.p99Us) },
  { header: 'calls/s', align: 'right', cell: (r) => rate(r.callsPerSec) },
  { header: 'MB/s', align: 'right', cell: (r) => bandwidth(r.mbPerSec) },
  { header: 'copied B/req', align: 'right', cell: (r) => rate(r.copiedBytes) },
  { header: 'RSS MiB', align: 'right', cell: (r) => (r.rssMiB === undefined || !Number.isFinite(r.rssMiB) ? dash : r.rssMiB.toFixed(0)) },
  { header: 'baseline', align: 'left', cell: (r) => r.baseline ?? dash },
  {
    header: 'ratio',
    align: 'right',
    cell: (r) => (r.ratio === undefined || !Number.isFinite(r.ratio) ? dash : `${r.ratio.toFixed(2)}x`),
  },
  { header: 'target', align: 'left', cell: (r) => r.target ?? dash },
  { header: 'result', align: 'left', cell: (r) => r.verdict ?? dash },
];

/** The whole table as one string: header, rule, one line per row; `null` rows become blank lines. */
export function formatTable(rows: ReadonlyArray<ResultRow | null>): string {
  const hasBandwidth = rows.some((row) => row?.mbPerSec !== undefined);
  const hasCopies = rows.some((row) => row?.copiedBytes !== undefined);
  const hasRss = rows.some((row) => row?.rssMiB !== undefined);
  const columns = allColumns.filter(
    (c) => (hasBandwidth || c.header !== 'MB/s') && (hasCopies || c.header !== 'copied B/req') && (hasRss || c.header !== 'RSS MiB'),
  );
  const cells = rows.map((row) => (row === null ? null : columns.map((c) => c.cell(row))));
  const widths = columns.map((c, i) =>
    Math.max(c.header.length, ...cells.map((line) => (line === null ? 0 : line[i]!.length))),
  );
  const render = (line: readonly string[]): string =>
    line
      .map((text, i) => (columns[i]!.align === 'left' ? text.padEnd(widths[i]!) : text.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  const out = [render(columns.map((c) => c.header)), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const line of cells) out.push(line === null ? '' : render(line));
  return out.join('\n');
}

/** PASS when `value` is at most `limit` (times, ratios of times). */
export function atMost(value: number, limit: number): Verdict {
  return Number.isFinite(value) && value <= limit ? 'PASS' : 'MISS';
}

/** PASS when `value` is at least `limit` (rates, ratios of rates). */
export function atLeast(value: number, limit: number): Verdict {
  return Number.isFinite(value) && value >= limit ? 'PASS' : 'MISS';
}

/** What a compared subject needs: a label, its transport, and its median-of-rounds figures. */
export interface ComparedSubject {
  label: string;
  transport: string;
  summary: { roundTrip: { medianUs: number; p99Us: number }; pipelined?: { callsPerSec: number } };
}

/** Targets for one subject against the baseline: a round-trip ratio ceiling and a calls/s ratio floor. */
export interface RatioTargets {
  /** Absent: no round-trip target against this baseline (the rt row is info). */
  rtMax?: number;
  rateMin: number;
}

/**
 * The rt and x<inflight> rows of a section: the baseline's own figures, then each other subject's
 * with its ratio to the baseline, judged against `targetsFor(subject)` (undefined: shown as info).
 */
export function comparisonRows<S extends ComparedSubject>(options: {
  subjects: readonly S[];
  baseline: S;
  /** How the baseline is named in the baseline column, e.g. "raw tcp". */
  baselineName: string;
  inflight: number;
  targetsFor(subject: S): RatioTargets | undefined;
}): ResultRow[] {
  const { baseline, baselineName, inflight } = options;
  const rows: ResultRow[] = [];
  for (const subject of options.subjects) {
    const rt = subject.summary.roundTrip;
    const pipe = subject.summary.pipelined!;
    const isBase = subject === baseline;
    const targets = isBase ? undefined : options.targetsFor(subject);
    const rtRatio = rt.medianUs / baseline.summary.roundTrip.medianUs;
    const pipeRatio = pipe.callsPerSec / baseline.summary.pipelined!.callsPerSec;
    rows.push({
      scenario: `${subject.label} rt`,
      transport: subject.transport,
      medianUs: rt.medianUs,
      p99Us: rt.p99Us,
      ...(isBase
        ? {}
        : {
            baseline: `${baselineName} rt`,
            ratio: rtRatio,
            ...(targets?.rtMax !== undefined ? { target: `<= ${targets.rtMax.toFixed(2)}x`, verdict: atMost(rtRatio, targets.rtMax) } : { verdict: 'info' as const }),
          }),
    });
    rows.push({
      scenario: `${subject.label} x${inflight}`,
      transport: subject.transport,
      callsPerSec: pipe.callsPerSec,
      ...(isBase
        ? {}
        : {
            baseline: `${baselineName} x${inflight}`,
            ratio: pipeRatio,
            ...(targets ? { target: `>= ${targets.rateMin.toFixed(2)}x`, verdict: atLeast(pipeRatio, targets.rateMin) } : { verdict: 'info' as const }),
          }),
    });
  }
  return rows;
}
