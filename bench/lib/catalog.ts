/**
 * One run's subjects by transport, ours beside raw and the peers, with which one is each
 * transport's reference (raw where it was measured): what the round-trip and calls/s panels draw
 * and what the which-transport table picks from. Only the default configurations: opt-in variants
 * and bounds stay in the text table.
 */

import type { SubjectSummary } from './rounds.js';
import type { RunResults } from './results.js';

export type Kind = 'ours' | 'raw' | 'peer';
export type PanelTransport = 'tcp' | 'unix' | 'shm' | 'isolate';

export interface Entry {
  transport: PanelTransport;
  subject: string;
  kind: Kind;
  /** Where it was measured; ratios between entries of one section are the trustworthy ones. */
  section: string;
  rtUs: number;
  p99Us: number;
  /** Calls/s with the section's calls in flight; absent when only round trips were measured. */
  rate?: number;
}

export const kPanelTransports: readonly PanelTransport[] = ['tcp', 'unix', 'shm', 'isolate'];

const kOursKeys: Record<string, string> = { 'ours-worker': 'ours worker handler', 'ours-main': 'ours main-thread handler', 'ours-isolate': 'ours isolate' };

function entry(transport: PanelTransport, subject: string, kind: Kind, section: string, summary: SubjectSummary): Entry {
  return {
    transport,
    subject,
    kind,
    section,
    rtUs: summary.roundTrip.medianUs,
    p99Us: summary.roundTrip.p99Us,
    ...(summary.pipelined === undefined ? {} : { rate: summary.pipelined.callsPerSec }),
  };
}

/** Every default-configured subject of the run, grouped by transport in kPanelTransports order. */
export function catalog(r: RunResults): Entry[] {
  const out: Entry[] = [];
  for (const g of r.groups) {
    for (const s of g.subjects) {
      if (s.key === 'raw') out.push(entry(g.transport, 'raw ping-pong', 'raw', g.transport, s.summary));
      else if (kOursKeys[s.key] !== undefined) out.push(entry(g.transport, kOursKeys[s.key]!, 'ours', g.transport, s.summary));
    }
  }
  for (const s of r.shm?.subjects ?? []) {
    // The shm section measures raw unix as its own baseline: shm's raw reference.
    if (s.key === 'raw-unix') out.push(entry('shm', 'raw unix ping-pong (shm baseline)', 'raw', 'shm', s.summary));
    else if (kOursKeys[s.key] !== undefined) out.push(entry('shm', kOursKeys[s.key]!, 'ours', 'shm', s.summary));
  }
  for (const s of r.isolate.subjects) {
    if (s.key === 'ours-isolate') out.push(entry('isolate', 'ours isolate', 'ours', 'isolate', s.summary));
    else if (s.key === 'comlink' || s.key === 'birpc' || s.key === 'piscina') out.push(entry('isolate', s.label, 'peer', 'isolate', s.summary));
  }
  const unixOurs = out.some((e) => e.transport === 'unix' && e.kind === 'ours');
  for (const s of r.peers?.subjects ?? []) {
    // fork IPC is a socket pair under node's channel: a same-machine peer, shown with unix.
    const transport: PanelTransport = s.transport === 'tcp' ? 'tcp' : 'unix';
    if (s.key === 'ours-worker') {
      if (!unixOurs) out.push(entry('unix', 'ours worker handler (peers section)', 'ours', 'peers', s.summary));
    } else out.push(entry(transport, s.transport === 'ipc' ? `${s.label}, ipc channel` : s.label, 'peer', 'peers', s.summary));
  }
  return kPanelTransports.flatMap((t) => out.filter((e) => e.transport === t));
}

/** The entry a transport's ratios are written against: raw, or the first peer where no raw ran (isolate: comlink). */
export function reference(entries: readonly Entry[], transport: PanelTransport): Entry | undefined {
  const of = entries.filter((e) => e.transport === transport);
  return of.find((e) => e.kind === 'raw') ?? of.find((e) => e.kind === 'peer');
}

/** A short name for an entry's reference in a note: "raw", "comlink". */
export function referenceName(ref: Entry): string {
  return ref.kind === 'raw' ? 'raw' : ref.subject;
}
