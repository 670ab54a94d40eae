/**
 * Every figure of one run as a flat list with a stable name, which way is better, and the
 * per-round figures it came from where the section keeps them: what a comparison of two runs
 * walks. Read from the structured results, not from the text table's labels.
 */

import type { SubjectSummary } from './rounds.js';
import type { RunResults } from './results.js';

/** One measured figure; `rounds` is absent where the section keeps no per-round figures. */
export interface Figure {
  /** Unique within a run and the same across runs: section, transport, subject, what. */
  id: string;
  unit: string;
  better: 'lower' | 'higher';
  value: number;
  rounds?: number[];
}

export function sizeLabel(bytes: number): string {
  return bytes >= 1 << 20 ? `${bytes / (1 << 20)} MiB` : bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} B`;
}

/** Round trip median and p99 and, when measured, calls/s of one interleaved subject. */
function summaryFigures(name: string, summary: SubjectSummary, inflight: number): Figure[] {
  const { rounds } = summary;
  // A pooled summary (busy host) is over every call of every round; the rounds still give its spread.
  const rt = summary.pooled ?? summary.roundTrip;
  const out: Figure[] = [
    { id: `${name} rt median`, unit: 'µs', better: 'lower', value: rt.medianUs, rounds: rounds.roundTrip.map((r) => r.medianUs) },
    { id: `${name} rt p99`, unit: 'µs', better: 'lower', value: rt.p99Us, rounds: rounds.roundTrip.map((r) => r.p99Us) },
  ];
  if (summary.pipelined !== undefined) {
    out.push({ id: `${name} x${inflight}`, unit: 'calls/s', better: 'higher', value: summary.pipelined.callsPerSec, rounds: rounds.pipelined.map((r) => r.callsPerSec) });
  }
  return out;
}

/** Every figure of `r`, in the order of the table. */
export function figuresOf(r: RunResults): Figure[] {
  const out: Figure[] = [];
  const inflight = r.config.inflight;
  for (const g of r.groups) for (const s of g.subjects) out.push(...summaryFigures(`${g.transport}: ${s.label}`, s.summary, inflight));
  if (r.shm !== undefined) {
    for (const s of r.shm.subjects) out.push(...summaryFigures(`shm section ${s.transport}: ${s.label}`, s.summary, r.shmConfig.inflight));
    const echo = r.shm.echo;
    if (echo !== undefined) {
      const size = sizeLabel(echo.bytes);
      const mb = (name: string, e: { mbPerSec: number; rounds: Array<{ mbPerSec: number }> }): Figure => ({
        id: `shm section: ${size} ${name} MB/s`, unit: 'MB/s', better: 'higher', value: e.mbPerSec, rounds: e.rounds.map((x) => x.mbPerSec),
      });
      out.push(mb('memcpy', echo.memcpy), ...echo.subjects.map((s) => mb(`echo ${s.label}`, s.summary)));
      if (echo.hop !== undefined) out.push(mb('echo through the thread hop alone', echo.hop));
      if (echo.fresh !== undefined) out.push(mb('a fresh buffer + copy', echo.fresh));
      if (echo.chain !== undefined) out.push(mb('echo through the bare cross-process ring chain alone', echo.chain));
    }
  }
  for (const s of r.isolate.subjects) out.push(...summaryFigures(`worker isolate: ${s.label}`, s.summary, r.isolateConfig.inflight));
  if (r.handshake !== undefined) {
    for (const [scheme, s] of Object.entries(r.handshake.setup)) {
      out.push({ id: `handshake ${scheme}: set-up median`, unit: 'µs', better: 'lower', value: s.medianUs });
    }
  }
  const busy = r.busyHost;
  if (busy !== undefined) {
    const kinds: Array<[string, SubjectSummary | undefined]> = [
      ['ours worker handler', busy.worker],
      ['ours main-thread handler', busy.main],
      ["ours worker handler, client idle 'sleep'", busy.workerClientSleeps],
      ['ours worker handler over shm', busy.shm],
      ["ours worker handler over shm, idle 'latency'", busy.shmPoll],
      ['floor (raw echo in a worker thread)', busy.floor],
      ...busy.peers.map((p): [string, SubjectSummary] => [p.label, p.summary]),
    ];
    for (const [label, summary] of kinds) if (summary !== undefined) out.push(...summaryFigures(`busy host: ${label}`, summary, r.busyConfig.inflight));
  }
  if (r.peers !== undefined) for (const s of r.peers.subjects) out.push(...summaryFigures(`peers ${s.transport}: ${s.label}`, s.summary, r.peersConfig.inflight));
  if (r.sweep !== undefined) {
    for (const s of r.sweep.subjects) {
      for (const p of s.points) {
        out.push({ id: `sweep ${s.transport}: ${s.label} ${sizeLabel(p.bytes)} MB/s`, unit: 'MB/s', better: 'higher', value: p.mbPerSec, rounds: p.rounds.map((x) => x.mbPerSec) });
      }
    }
  }
  if (r.tls !== undefined) {
    for (const s of r.tls.subjects) out.push(...summaryFigures(`tls: ${s.label}`, s.summary, r.tlsConfig.inflight));
    for (const s of r.tls.echo?.subjects ?? []) {
      out.push({ id: `tls: ${sizeLabel(r.tls.echo!.bytes)} echo ${s.label} MB/s`, unit: 'MB/s', better: 'higher', value: s.summary.mbPerSec, rounds: s.summary.rounds.map((x) => x.mbPerSec) });
    }
    if (r.tls.setup !== undefined) {
      out.push({ id: 'tls: set-up plain median', unit: 'µs', better: 'lower', value: r.tls.setup.plain.medianUs });
      out.push({ id: 'tls: set-up TLS median', unit: 'µs', better: 'lower', value: r.tls.setup.tls.medianUs });
    }
  }
  for (const c of r.view?.cases ?? []) {
    out.push({ id: `view: ${c.codec} ${c.path} median`, unit: 'µs', better: 'lower', value: c.medianUs });
    out.push({ id: `view: ${c.codec} ${c.path} copied`, unit: 'B/req', better: 'lower', value: c.copiedPerRequest });
  }
  for (const row of r.fanout?.rates ?? []) {
    for (const key of ['raw', 'chain', 'ours'] as const) {
      const f = row[key];
      if (f === undefined) continue;
      out.push({ id: `fanout ${row.connections} connections: ${key} calls/s`, unit: 'calls/s', better: 'higher', value: f.callsPerSec });
      out.push({ id: `fanout ${row.connections} connections: ${key} CPU/call`, unit: 'µs', better: 'lower', value: f.cpuUsPerCall });
    }
  }
  for (const row of r.scale?.rates ?? []) {
    for (const key of ['raw', 'ours', 'oursThreads'] as const) {
      const v = row[key];
      if (v !== undefined) out.push({ id: `scale ${row.connections} connections: ${key} calls/s`, unit: 'calls/s', better: 'higher', value: v });
    }
  }
  const mem = r.scale?.memory;
  if (mem !== undefined) {
    out.push({ id: 'scale: RSS idle connections', unit: 'MiB', better: 'lower', value: mem.idleMiB });
    out.push({ id: 'scale: RSS soak end', unit: 'MiB', better: 'lower', value: mem.endMiB });
  }
  return out.filter((f) => Number.isFinite(f.value));
}
