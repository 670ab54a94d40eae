/**
 * The chart's panels, one question each, built from the structured results: round trip and
 * calls/s by transport, fan-out, payload sweep, busy host. A panel whose section did not run is
 * left out (undefined).
 */

import type { SubjectSummary } from '../rounds.js';
import type { RunResults } from '../results.js';
import { catalog, kPanelTransports, reference, referenceName, type Entry, type PanelTransport } from '../catalog.js';
import { sizeLabel } from '../figures.js';
import { barPanel, human, linePanel, type Bar, type Panel, type Series } from './svg.js';

const kOurs = '#1f5fae';
const kOursMain = '#6d9fe0';
const kRaw = '#8c8c8c';
const kBound = '#4d4d4d';
const kPeerColors: Array<[string, string]> = [
  ['grpc', '#d9822b'],
  ['vscode', '#c0504d'],
  ['zeromq', '#8e5ea2'],
  ['node fork', '#5b9b3a'],
  ['comlink', '#d9822b'],
  ['birpc', '#c0504d'],
  ['piscina', '#5b9b3a'],
];

function peerColor(subject: string): string {
  return kPeerColors.find(([prefix]) => subject.startsWith(prefix))?.[1] ?? '#b5a33a';
}

function entryColor(e: Entry): string {
  if (e.kind === 'raw') return kRaw;
  if (e.kind === 'ours') return e.subject.includes('main-thread') ? kOursMain : kOurs;
  return peerColor(e.subject);
}

const kGroupNames: Record<PanelTransport, string> = {
  tcp: 'tcp (loopback)',
  unix: 'unix socket (and fork IPC)',
  shm: 'shm (shared memory rings)',
  isolate: 'isolate (worker thread of this process)',
};

function ratio(x: number): string {
  return `${x >= 10 ? x.toFixed(0) : x.toFixed(2)}x`;
}

/** Panels 1 and 2: one figure of every catalogue entry, grouped by transport, each with its ratio to the transport's reference. */
function transportPanel(r: RunResults, what: 'rt' | 'rate'): Panel | undefined {
  const entries = catalog(r).filter((e) => (what === 'rt' ? e.rtUs > 0 : (e.rate ?? 0) > 0));
  if (entries.length === 0) return undefined;
  const order: Record<Entry['kind'], number> = { ours: 0, raw: 1, peer: 2 };
  const value = (e: Entry) => (what === 'rt' ? e.rtUs : e.rate!);
  const groups = kPanelTransports
    .map((t) => {
      const of = entries.filter((e) => e.transport === t).sort((a, b) => order[a.kind] - order[b.kind]);
      const ref = reference(of, t);
      const bars: Bar[] = of.map((e) => ({
        label: `${e.subject} · ${t}`,
        name: `${t} · ${e.subject} · ${what === 'rt' ? 'round trip median' : `calls/s x${r.config.inflight}`}`,
        value: value(e),
        color: entryColor(e),
        note: ref === undefined ? undefined : e === ref ? '(reference)' : `${ratio(value(e) / value(ref))} ${referenceName(ref)}`,
      }));
      return { name: kGroupNames[t], bars };
    })
    .filter((g) => g.bars.length > 0);
  const rt = what === 'rt';
  return barPanel({
    id: rt ? 'panel-round-trip' : 'panel-calls',
    title: rt ? 'Round trip by transport: median µs, one call in flight (shorter is better)' : `Calls/s by transport with ${r.config.inflight} calls in flight (longer is better)`,
    note:
      `${r.payloadBytes}-byte echo, server in another process (isolate: a worker thread). Ratio written after each bar: its figure over the transport's raw ping-pong ` +
      '(isolate: over comlink), from this run. Peers were measured in their own section, with fewer rounds; rounds of one section are interleaved.',
    groups,
    unit: rt ? ' µs' : '/s',
    scale: 'log',
    axis: rt ? 'round trip, µs (log scale)' : 'calls per second (log scale)',
  });
}

/** Panel 3: calls/s against the number of connections of one client, ours beside raw and the bare multiplexed chain. */
function fanoutPanel(r: RunResults): Panel | undefined {
  const rates = r.fanout?.rates.filter((x) => x.raw !== undefined || x.ours !== undefined || x.chain !== undefined) ?? [];
  if (rates.length === 0) return undefined;
  const groups = rates.map((row) => {
    const n = row.connections;
    const bars: Bar[] = [];
    const raw = row.raw?.callsPerSec;
    const chain = row.chain?.callsPerSec;
    if (row.ours !== undefined) {
      const notes = [raw === undefined ? '' : `${ratio(row.ours.callsPerSec / raw)} raw`, chain === undefined ? '' : `${ratio(row.ours.callsPerSec / chain)} chain`].filter((s) => s !== '');
      bars.push({ label: `ours, ${n} Node${n === 1 ? '' : 's'}`, name: `unix · ours · calls/s at ${n} connections`, value: row.ours.callsPerSec, color: kOurs, note: notes.join(', ') });
    }
    if (raw !== undefined) bars.push({ label: `raw net sockets, ${n}`, name: `unix · raw · calls/s at ${n} connections`, value: raw, color: kRaw, note: '(reference)' });
    if (chain !== undefined) {
      bars.push({ label: `bare multiplexed chain, ${n}`, name: `unix · bare multiplexed chain · calls/s at ${n} connections`, value: chain, color: kBound, note: raw === undefined ? undefined : `${ratio(chain / raw)} raw` });
    }
    return { name: `${n} connection${n === 1 ? '' : 's'}`, bars };
  });
  return barPanel({
    id: 'panel-fanout',
    title: `Fan-out: calls/s of one client process against its number of connections, ${r.fanoutConfig.inflight} calls in flight in all (unix)`,
    note: 'raw: that many net sockets; bare multiplexed chain: main thread + one worker holding every socket (the bound for this design); ours: one Node per connection. Ratios: ours over raw and over the chain.',
    groups,
    unit: '/s',
    scale: 'linear',
    axis: 'calls per second (linear scale)',
  });
}

/** Panel 4: MB/s against payload size per transport, with the shm 1 MiB echo and memcpy's ceiling. */
function sweepPanel(r: RunResults): Panel | undefined {
  const series: Series[] = [];
  for (const s of r.sweep?.subjects ?? []) {
    const raw = s.key === 'raw';
    series.push({
      label: `${raw ? 'raw ping-pong' : s.label} · ${s.transport}`,
      name: `${s.transport} · ${raw ? 'raw ping-pong' : s.label} · MB/s by size`,
      color: raw ? kRaw : s.transport === 'tcp' ? kOursMain : kOurs,
      points: s.points.map((p) => ({ x: p.bytes, y: p.mbPerSec })),
    });
  }
  const echo = r.shm?.echo;
  if (echo !== undefined) {
    for (const s of echo.subjects) {
      series.push({
        label: `${s.label} · shm, ${sizeLabel(echo.bytes)} echo`,
        name: `shm · ${s.label} · MB/s at ${sizeLabel(echo.bytes)}`,
        color: s.label.includes('main-thread') ? '#2a9d8f' : '#e76f51',
        points: [{ x: echo.bytes, y: s.summary.mbPerSec }],
        markers: true,
      });
    }
    series.push({
      label: `memcpy of ${sizeLabel(echo.bytes)} (ceiling): ${human(echo.memcpy.mbPerSec, ' MB/s')}`,
      name: `memory · memcpy · MB/s at ${sizeLabel(echo.bytes)}`,
      color: kBound,
      points: [],
      level: echo.memcpy.mbPerSec,
    });
  }
  if (!series.some((s) => s.points.some((p) => p.y > 0))) return undefined;
  return linePanel({
    id: 'panel-sweep',
    title: 'Payload sweep: MB/s against payload size, one call in flight (higher is better)',
    note: 'Echo of that many bytes; MB/s = request bytes (10^6) per second. Dots: the shm section\'s echo; dashed: memcpy into a SharedArrayBuffer, what no transport can beat.',
    series,
    xLabel: sizeLabel,
    yUnit: ' MB/s',
    axis: 'payload size (log scale); MB/s on a log scale',
  });
}

/** Panel 5: p50 and p99 per server kind while the server's main thread is busy. */
function busyPanel(r: RunResults): Panel | undefined {
  const busy = r.busyHost;
  if (busy === undefined) return undefined;
  const kinds: Array<[string, SubjectSummary | undefined, string]> = [
    ['ours worker handler', busy.worker, kOurs],
    ['ours main-thread handler', busy.main, kOursMain],
    ['floor: raw echo in a worker thread', busy.floor, kBound],
    ...busy.peers.map((p): [string, SubjectSummary, string] => [p.label, p.summary, peerColor(p.label)]),
  ];
  const floor = busy.floor === undefined ? undefined : (busy.floor.pooled ?? busy.floor.roundTrip);
  const groups = kinds
    .filter((k): k is [string, SubjectSummary, string] => k[1] !== undefined)
    .map(([label, summary, color]) => {
      const rt = summary.pooled ?? summary.roundTrip;
      const vsFloor = (v: number, f: number) => (floor === undefined || label.startsWith('floor') ? undefined : `${ratio(v / f)} floor`);
      return {
        name: label,
        bars: [
          { label: `${label}, p50`, name: `unix · ${label} · busy host p50`, value: rt.medianUs, color, note: floor && vsFloor(rt.medianUs, floor.medianUs) },
          { label: `${label}, p99`, name: `unix · ${label} · busy host p99`, value: rt.p99Us, color, note: floor && vsFloor(rt.p99Us, floor.p99Us) },
        ],
      };
    });
  if (groups.length === 0) return undefined;
  return barPanel({
    id: 'panel-busy',
    title: `Busy host: round trip p50 and p99 while the server's main thread runs ${busy.sliceMs} ms CPU slices (shorter is better)`,
    note: 'One server at a time over unix, every call of every round pooled. Floor: a raw echo server in a worker thread of such a process. Peers serve on the busy main thread, as they do.',
    groups,
    unit: ' µs',
    scale: 'log',
    axis: 'round trip, µs (log scale)',
  });
}

/** Every panel the run has data for, in reading order. */
export function panelsOf(r: RunResults): Panel[] {
  return [transportPanel(r, 'rt'), transportPanel(r, 'rate'), fanoutPanel(r), sweepPanel(r), busyPanel(r)].filter((p): p is Panel => p !== undefined);
}
