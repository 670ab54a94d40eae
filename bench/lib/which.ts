/**
 * "Which transport should I use?", answered from one run's own figures: per use, the transport of
 * ours that won in this run, its figure, and its ratio to raw and to the best peer measured. Rows
 * whose sections did not run are left out.
 */

import { catalog, type Entry } from './catalog.js';
import { sizeLabel } from './figures.js';
import type { SubjectSummary } from './rounds.js';
import type { RunResults, WhichRow } from './results.js';

function x(v: number): string {
  return `${v.toFixed(2)}x`;
}

function us(v: number): string {
  return v >= 1000 ? `${(v / 1000).toFixed(2)} ms` : `${v.toFixed(1)} µs`;
}

function rate(v: number): string {
  return `${Math.round(v).toLocaleString('en-US')} calls/s`;
}

/** The lowest or highest by `f`, or undefined for none. */
function best<T>(items: readonly T[], f: (t: T) => number, want: 'min' | 'max'): T | undefined {
  let out: T | undefined;
  for (const item of items) if (out === undefined || (want === 'min' ? f(item) < f(out) : f(item) > f(out))) out = item;
  return out;
}

const name = (e: Entry) => `${e.transport}: ${e.subject}`;

/** The table's rows, in a fixed order of uses. */
export function whichTransport(r: RunResults): WhichRow[] {
  const rows: WhichRow[] = [];
  const all = catalog(r);
  const sameMachine = all.filter((e) => e.transport !== 'isolate');
  const ours = sameMachine.filter((e) => e.kind === 'ours');
  const peers = sameMachine.filter((e) => e.kind === 'peer');
  const rawOf = (e: Entry) => all.find((o) => o.transport === e.transport && o.kind === 'raw');

  const fastest = best(ours, (e) => e.rtUs, 'min');
  if (fastest !== undefined) {
    const raw = rawOf(fastest);
    const peer = best(peers, (e) => e.rtUs, 'min');
    rows.push({
      use: 'lowest latency, same machine',
      winner: name(fastest),
      figure: `${us(fastest.rtUs)} round trip`,
      vsRaw: raw === undefined ? '-' : `${x(fastest.rtUs / raw.rtUs)} (time)`,
      vsPeer: peer === undefined ? '-' : `${x(fastest.rtUs / peer.rtUs)} ${peer.subject} ${peer.transport}`,
    });
  }

  const withRate = (es: Entry[]) => es.filter((e) => e.rate !== undefined);
  const busiest = best(withRate(ours), (e) => e.rate!, 'max');
  if (busiest !== undefined) {
    const raw = rawOf(busiest);
    const peer = best(withRate(peers), (e) => e.rate!, 'max');
    rows.push({
      use: 'most calls/s',
      winner: name(busiest),
      figure: `${rate(busiest.rate!)}, ${r.config.inflight} in flight`,
      vsRaw: raw?.rate === undefined ? '-' : `${x(busiest.rate! / raw.rate)} (rate)`,
      vsPeer: peer === undefined ? '-' : `${x(busiest.rate! / peer.rate!)} ${peer.subject} ${peer.transport}`,
    });
  }

  // Large payloads: every ours figure at 1 MiB, the one size the sweep and the shm echo share.
  const kLarge = 1 << 20;
  const large: Array<{ winner: string; mbPerSec: number }> = [];
  for (const s of r.sweep?.subjects ?? []) {
    const p = s.points.find((q) => q.bytes === kLarge);
    if (s.key !== 'raw' && p !== undefined) large.push({ winner: `${s.transport}: ${s.label}`, mbPerSec: p.mbPerSec });
  }
  if (r.shm?.echo?.bytes === kLarge) for (const s of r.shm.echo.subjects) large.push({ winner: `shm: ${s.label}`, mbPerSec: s.summary.mbPerSec });
  const biggest = best(large, (l) => l.mbPerSec, 'max');
  if (biggest !== undefined) {
    const raw = r.sweep?.subjects.find((s) => s.key === 'raw')?.points.find((p) => p.bytes === kLarge);
    const memcpy = r.shm?.echo?.memcpy.mbPerSec;
    rows.push({
      use: 'large payloads',
      winner: biggest.winner,
      figure: `${biggest.mbPerSec.toFixed(0)} MB/s, ${sizeLabel(kLarge)} echo${memcpy === undefined ? '' : ` (memcpy ${memcpy.toFixed(0)})`}`,
      vsRaw: raw === undefined ? '-' : `${x(biggest.mbPerSec / raw.mbPerSec)} raw unix (rate)`,
      vsPeer: 'no peer in the sweep',
    });
  }

  const busy = r.busyHost;
  if (busy !== undefined) {
    const p = (s: SubjectSummary) => s.pooled ?? s.roundTrip;
    const candidates: Array<[string, SubjectSummary | undefined]> = [
      ['unix: ours worker handler', busy.worker],
      ['unix: ours main-thread handler', busy.main],
      ['shm: ours worker handler', busy.shm],
    ];
    const present = candidates.filter((c): c is [string, SubjectSummary] => c[1] !== undefined);
    const calmest = best(present, ([, s]) => p(s).p99Us, 'min');
    if (calmest !== undefined) {
      const peer = best(busy.peers, (q) => p(q.summary).p99Us, 'min');
      const figure = p(calmest[1]);
      rows.push({
        use: 'busy host (main thread blocked)',
        winner: calmest[0],
        figure: `p99 ${us(figure.p99Us)}, p50 ${us(figure.medianUs)}`,
        vsRaw: busy.floor === undefined ? '-' : `${x(figure.p99Us / p(busy.floor).p99Us)} floor p99 (time)`,
        vsPeer: peer === undefined ? '-' : `${x(figure.p99Us / p(peer.summary).p99Us)} ${peer.label} p99`,
      });
    }
  }

  // Only tcp leaves the machine; within it the rate decides (the latency row says the rest).
  const tcp = best(withRate(ours.filter((e) => e.transport === 'tcp')), (e) => e.rate!, 'max');
  if (tcp !== undefined) {
    const raw = rawOf(tcp);
    const peer = best(withRate(peers.filter((e) => e.transport === 'tcp')), (e) => e.rate!, 'max');
    rows.push({
      use: 'across machines (tcp)',
      winner: name(tcp),
      figure: `${rate(tcp.rate!)}, ${us(tcp.rtUs)} round trip`,
      vsRaw: raw?.rate === undefined ? '-' : `${x(tcp.rate! / raw.rate)} (rate)`,
      vsPeer: peer === undefined ? '-' : `${x(tcp.rate! / peer.rate!)} ${peer.subject} tcp`,
    });
  }

  const isolate = all.filter((e) => e.transport === 'isolate');
  const plugin = best(isolate.filter((e) => e.kind === 'ours'), (e) => e.rtUs, 'min');
  if (plugin !== undefined) {
    const peer = best(isolate.filter((e) => e.kind === 'peer'), (e) => e.rtUs, 'min');
    rows.push({
      use: 'plugins in-process',
      winner: name(plugin),
      figure: `${us(plugin.rtUs)} round trip${plugin.rate === undefined ? '' : `, ${rate(plugin.rate)}`}`,
      vsRaw: '- (no raw in-process)',
      vsPeer: peer === undefined ? '-' : `${x(plugin.rtUs / peer.rtUs)} ${peer.subject} (time)`,
    });
  }
  return rows;
}

/** The table as fixed-width text for the end of a run. */
export function formatWhich(rows: readonly WhichRow[]): string {
  if (rows.length === 0) return 'which transport: no section that answers it was run';
  const header: WhichRow = { use: 'use', winner: 'won in this run', figure: 'figure', vsRaw: 'vs raw', vsPeer: 'vs best peer' };
  const keys: Array<keyof WhichRow> = ['use', 'winner', 'figure', 'vsRaw', 'vsPeer'];
  const widths = keys.map((k) => Math.max(...[header, ...rows].map((r) => r[k].length)));
  const line = (r: WhichRow) => keys.map((k, i) => r[k].padEnd(widths[i]!)).join('  ').trimEnd();
  return ['which transport (from this run; for times a ratio below 1 is better, for rates one above 1):', line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
