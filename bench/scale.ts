/**
 * Scale: one ours server (worker-module handler over a Unix socket, a child process) under load
 * from many connections at once, beside the raw Node echo server (raw-server.ts) under the same
 * load in the same interleaved rounds; then the server's memory. DESIGN §6 targets:
 * - calls/s with 1, 8, 64 and 512 concurrent connections; at 512 it keeps ≥ 70% of its peak;
 * - 1,000 idle connections cost the server ≤ 200 MiB RSS in all;
 * - steady calls leave its RSS flat: within 10% after warm-up (DESIGN asks for 10 minutes of
 *   calls: `--soak-minutes 10`; a shorter soak is printed as info, not as a verdict).
 *
 * The load comes from this process over raw sockets speaking ours' wire format (lib/wire-load.ts),
 * 8 calls in flight per connection: far cheaper per call than any runtime's client, so that what
 * is measured is the server. RSS is read from /proc/<pid>/status (Linux; elsewhere the memory rows
 * are skipped).
 */
import fs from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, startServerChild, type ServerChild } from './lib/children.js';
import { median } from './lib/measure.js';
import type { BenchConfig } from './lib/rounds.js';
import { atLeast, atMost, type ResultRow } from './lib/table.js';
import { openSockets, wireLoad, type WireAddress } from './lib/wire-load.js';

export const kScaleConnections = [1, 8, 64, 512] as const;
export const kPerConnection = 8;
/** The same server with its address served from this many pool threads (ServeOptions.threads), measured beside it (info). */
export const kScaleThreads = 2;
/** DESIGN §6: at 512 connections, at least this share of the peak calls/s. */
export const kKeepShareMin = 0.7;
export const kIdleConnections = 1000;
export const kIdleRssMaxMiB = 200;
/** DESIGN §6: RSS after warm-up stays within this fraction of where it started. */
export const kRssDriftMax = 0.1;
export const kSoakTargetMinutes = 10;

export interface ScaleResult {
  /** Median calls/s per connection count, per server; `oursThreads` is ours with kScaleThreads threads (absent when it could not start: no native addon). */
  rates: Array<{ connections: number; ours: number; raw: number; oursThreads?: number }>;
  memory?: {
    /** The server's RSS with no connection, and with kIdleConnections idle ones, MiB. */
    emptyMiB: number;
    idleMiB: number;
    /** The soak: minutes of steady calls; median RSS of its first and of its last fifth after warm-up, and the highest seen, MiB. */
    soakMinutes: number;
    startMiB: number;
    endMiB: number;
    peakMiB: number;
  };
  skipped: string[];
}

export interface ScaleConfig extends Pick<BenchConfig, 'rounds' | 'warmupMs' | 'durationMs'> {
  soakMinutes: number;
}

function rssMiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Number(m[1]) / 1024;
  } catch {
    return undefined;
  }
}

function addressOf(server: ServerChild): WireAddress {
  const a = server.address;
  if (a.kind !== 'unix') throw new Error(`scale: expected a unix server, got ${a.kind}`);
  return { path: a.path };
}

export async function runScale(config: ScaleConfig, log: (line: string) => void): Promise<ScaleResult> {
  const result: ScaleResult = { rates: [], skipped: [] };
  const dir = await makeTempDir();
  let ours: ServerChild | undefined;
  let raw: ServerChild | undefined;
  let threaded: ServerChild | undefined;
  try {
    ours = await startServerChild(new URL('./ours-server.js', import.meta.url), ['--kind', 'unix', '--path', join(dir, 'ours.sock'), '--handler', 'worker'], {
      label: 'ours unix server (worker handler)',
    });
    raw = await startServerChild(new URL('./raw-server.js', import.meta.url), ['--kind', 'unix', '--path', join(dir, 'raw.sock')], { label: 'raw unix server' });
    try {
      threaded = await startServerChild(
        new URL('./ours-server.js', import.meta.url),
        ['--kind', 'unix', '--path', join(dir, 'ours-threads.sock'), '--handler', 'worker', '--threads', String(kScaleThreads)],
        { label: `ours unix server (worker handler, ${kScaleThreads} threads)` },
      );
    } catch (err) {
      result.skipped.push(`scale with ${kScaleThreads} threads: ${(err as Error).message}`);
    }
    const emptyMiB = rssMiB(ours.pid);
    for (const connections of kScaleConnections) {
      const rounds: Array<{ ours: number; raw: number; threads?: number }> = [];
      const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
      for (let round = 0; round < config.rounds; round++) {
        const o = await wireLoad(addressOf(ours), connections, kPerConnection, config);
        const r = await wireLoad(addressOf(raw), connections, kPerConnection, config);
        const t = threaded === undefined ? undefined : await wireLoad(addressOf(threaded), connections, kPerConnection, config);
        rounds.push({ ours: o, raw: r, threads: t });
        log(`scale: round ${round + 1}/${config.rounds}, ${connections} connections x ${kPerConnection} in flight: ours ${fmt(o)} calls/s, raw ${fmt(r)} calls/s${t === undefined ? '' : `, ours with ${kScaleThreads} threads ${fmt(t)} calls/s`}`);
      }
      result.rates.push({
        connections,
        ours: median(rounds.map((x) => x.ours)),
        raw: median(rounds.map((x) => x.raw)),
        ...(threaded === undefined ? {} : { oursThreads: median(rounds.map((x) => x.threads!)) }),
      });
    }
    if (emptyMiB === undefined) {
      result.skipped.push('scale memory: no /proc/<pid>/status here');
      return result;
    }
    log(`scale: opening ${kIdleConnections} idle connections to ours`);
    const idle = await openSockets(addressOf(ours), kIdleConnections);
    // Let the server take them all in (accept, set up, and any lazy allocation) before reading.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const idleMiB = rssMiB(ours.pid) ?? Number.NaN;
    for (const socket of idle) socket.destroy();
    log(`scale: ours server RSS ${emptyMiB.toFixed(0)} MiB empty, ${idleMiB.toFixed(0)} MiB with ${kIdleConnections} idle connections`);

    // The soak: steady calls on 64 connections, RSS sampled every second after a warm-up tenth.
    const soakMs = config.soakMinutes * 60_000;
    const warmMs = Math.max(2000, soakMs / 10);
    log(`scale: soak, ${config.soakMinutes} min of steady calls on 64 connections`);
    const samples: number[] = [];
    const sampler = setInterval(() => {
      const v = rssMiB(ours!.pid);
      if (v !== undefined) samples.push(v);
    }, 1000);
    try {
      await wireLoad(addressOf(ours), 64, kPerConnection, { warmupMs: warmMs, durationMs: soakMs });
    } finally {
      clearInterval(sampler);
    }
    const afterWarmUp = samples.slice(Math.floor(warmMs / 1000));
    const measured = afterWarmUp.length > 0 ? afterWarmUp : samples;
    // RSS saws up and down by ~10% between collections (seen: 119-134 MiB over 150 s of calls, no
    // trend), so the soak compares the medians of its first and last fifths, not two samples.
    const fifth = Math.max(1, Math.floor(measured.length / 5));
    result.memory = {
      emptyMiB,
      idleMiB,
      soakMinutes: config.soakMinutes,
      startMiB: median(measured.slice(0, fifth)),
      endMiB: median(measured.slice(-fifth)),
      peakMiB: Math.max(...measured),
    };
  } finally {
    await ours?.stop();
    await raw?.stop();
    await threaded?.stop();
    await removeTempDir(dir);
  }
  return result;
}

export function scaleRows(result: ScaleResult): ResultRow[] {
  const rows: ResultRow[] = [];
  for (const r of result.rates) {
    const label = `${r.connections} connection${r.connections === 1 ? '' : 's'} x${kPerConnection} in flight`;
    rows.push(
      { scenario: `raw echo server, ${label}`, transport: 'unix', callsPerSec: r.raw },
      { scenario: `ours worker handler, ${label}`, transport: 'unix', callsPerSec: r.ours, baseline: `raw, ${r.connections} conn.`, ratio: r.ours / r.raw, verdict: 'info' },
    );
    if (r.oursThreads !== undefined) {
      rows.push({ scenario: `ours worker handler, ${kScaleThreads} threads, ${label}`, transport: 'unix', callsPerSec: r.oursThreads, baseline: `raw, ${r.connections} conn.`, ratio: r.oursThreads / r.raw, verdict: 'info' });
    }
  }
  if (result.rates.length > 0) {
    const peak = Math.max(...result.rates.map((r) => r.ours));
    const last = result.rates[result.rates.length - 1]!;
    const share = last.ours / peak;
    rows.push({
      scenario: `  ours at ${last.connections} connections: share of its peak`,
      transport: 'unix',
      callsPerSec: last.ours,
      baseline: 'ours peak',
      ratio: share,
      target: `>= ${kKeepShareMin.toFixed(2)}x`,
      verdict: atLeast(share, kKeepShareMin),
    });
    if (last.oursThreads !== undefined) {
      const threadsPeak = Math.max(...result.rates.map((r) => r.oursThreads ?? 0));
      rows.push({
        scenario: `  ours with ${kScaleThreads} threads at ${last.connections} connections: share of its peak`,
        transport: 'unix',
        callsPerSec: last.oursThreads,
        baseline: `ours ${kScaleThreads} threads peak`,
        ratio: last.oursThreads / threadsPeak,
        verdict: 'info',
      });
    }
  }
  const m = result.memory;
  if (m !== undefined) {
    rows.push(
      { scenario: 'ours server RSS, no connection', transport: 'unix', rssMiB: m.emptyMiB },
      {
        scenario: `ours server RSS, ${kIdleConnections.toLocaleString('en-US')} idle connections`,
        transport: 'unix',
        rssMiB: m.idleMiB,
        target: `<= ${kIdleRssMaxMiB} MiB`,
        verdict: atMost(m.idleMiB, kIdleRssMaxMiB),
      },
    );
    const drift = Math.abs(m.endMiB - m.startMiB) / m.startMiB;
    const full = m.soakMinutes >= kSoakTargetMinutes;
    rows.push({
      scenario: `ours server RSS drift over ${m.soakMinutes} min of steady calls (peak ${m.peakMiB.toFixed(0)} MiB)`,
      transport: 'unix',
      rssMiB: m.endMiB,
      baseline: 'RSS after warm-up',
      ratio: m.endMiB / m.startMiB,
      target: `within ${Math.round(kRssDriftMax * 100)}%${full ? '' : ` (${kSoakTargetMinutes} min)`}`,
      // A soak shorter than the target's 10 minutes says something, but not what the target asks.
      verdict: full ? atMost(drift, kRssDriftMax) : 'info',
    });
  }
  return rows;
}
