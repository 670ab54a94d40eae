/**
 * Shared memory: ogurpchik over `shm(name, { capacity })` between the bench process and a server
 * child (ours-server.ts --kind shm), with the worker-module handler and the main-thread handler,
 * against the raw Node Unix-socket ping-pong (raw.ts) measured in the same interleaved rounds.
 * DESIGN §6 targets: calls/s with 64 in flight ≥ 2.5× raw unix with the defaults (3× is where we
 * aim); round trip ≤ 0.6× raw unix with the 'latency' idle preset (the defaults' beside it).
 *
 * Then a 1 MiB echo over shm (one call in flight, request bytes per second) beside a memcpy
 * baseline taken in the same rounds: copying 1 MiB into a SharedArrayBuffer with
 * `Uint8Array.set`. Target: ≥ 25% of the memcpy bandwidth. Beside it, in the same rounds, the
 * bounds that say where its floor lies here: a fresh 1 MiB buffer filled from shared memory (what
 * each receiving end that keeps the bytes pays per message) and the bare cross-process ring chain
 * echoing 1 MiB in rings of the same capacity, without the runtime.
 *
 * Needs the native addon; without it the section prints a skipped line. Every service name is
 * `bench-<pid>-<n>`, and whatever the runtime leaves in /dev/shm or its control-socket directory
 * under that name is reported as a warning and removed (also on SIGINT/SIGTERM, via children.ts).
 */

import { dirname } from 'node:path';
import { findLeftovers, makeTempDir, removeTempDir, sweepLeftovers, trackLeftovers } from './lib/children.js';
import { median, withDeadline } from './lib/measure.js';
import type { OursApi } from './lib/ours-api.js';
import { measureInterleaved, type BenchConfig, type SubjectSummary } from './lib/rounds.js';
import type { Subject } from './lib/subject.js';
import { atLeast, comparisonRows, type ResultRow } from './lib/table.js';
import { kDefaultRingBytes as kOursRingBytes } from '../src/main/options.js';
import { pathRows } from './lib/bounds.js';
import { kChainLabels, startRingChain } from './lib/ring-chain.js';
import { bytesToFill } from '../src/bytes.js';
import { kThreadHopLabel, startThreadHop, type ThreadHopSubject } from './lib/thread-hop.js';
import { OursUnavailableError, kClientSleepsKey, kPeerPollIdle, kPeerPollKey, startOursClientSleeping, startOursPeerPolling, startOursSubject } from './ours.js';
import { startRawSubject } from './raw.js';

/** DESIGN §6 shm targets, relative to the raw Unix ping-pong / memcpy of the same run. */
export const kShmRoundTripRatioMax = 0.6;
export const kShmCallsPerSecRatioMin = 2.5;
export const kShmEchoShareMin = 0.25;

export const kEchoBytes = 1 << 20;
/** Each ring's data area: a 1 MiB message (plus its envelope) fits whole. */
export const kShmCapacity = 2 << 20;

const kStallSlackMs = 15_000;
const kUnstableSpread = 1.5;

export interface EchoRound {
  mbPerSec: number;
  /** Median time of one 1 MiB echo (or one copy), µs. */
  medianUs: number;
  calls: number;
}

export interface EchoSummary {
  /** Median of rounds. */
  mbPerSec: number;
  medianUs: number;
  rounds: EchoRound[];
}

export interface ShmResult {
  transport: 'shm';
  capacity: number;
  /** raw unix ping-pong first, then ours per handler. */
  subjects: Array<{ key: string; label: string; transport: string; summary: SubjectSummary }>;
  echo?: {
    bytes: number;
    memcpy: EchoSummary;
    subjects: Array<{ key: string; label: string; summary: EchoSummary }>;
    /** The same echo through the main <-> worker hop alone (ours' default ringBytes): a ceiling for ours. */
    hop?: EchoSummary;
    /** A fresh 1 MiB buffer filled from shared memory, as a receiver that keeps the bytes makes one per message. */
    fresh?: EchoSummary;
    /** The same echo over the bare cross-process ring chain (main <-> other process, rings as ours'): a ceiling for ours. */
    chain?: EchoSummary;
  };
  skipped: string[];
  warnings: string[];
}

let serviceCounter = 0;

/** The section; `echoConfig` gives the rounds and lengths of the 1 MiB echo rounds. */
export async function runShm(
  api: OursApi,
  config: BenchConfig,
  echoConfig: Pick<BenchConfig, 'rounds' | 'warmupMs' | 'durationMs'>,
  log: (line: string) => void,
): Promise<ShmResult> {
  const result: ShmResult = { transport: 'shm', capacity: kShmCapacity, subjects: [], skipped: [], warnings: [] };
  if (api.shm === undefined) {
    result.skipped.push('shm: the runtime does not export shm()');
    log('shm: skipped - the runtime does not export shm()');
    return result;
  }
  const native = await import('../src/native/addon.js').catch((err: Error) => err);
  if (native instanceof Error || !native.nativeAvailable()) {
    const why = native instanceof Error ? native.message : 'the native addon is not built (npm run build:native)';
    result.skipped.push(`shm: ${why}`);
    log(`shm: skipped - ${why}`);
    return result;
  }
  // Names carry this pid, so that anything left behind is recognisably ours.
  const token = `bench-${process.pid}-`;
  trackLeftovers('/dev/shm', token);
  const controlDir = await import('../src/transport/shm.js').then(
    (m) => dirname(m.shmControlPath('x')),
    () => undefined,
  );
  if (controlDir !== undefined) trackLeftovers(controlDir, token);

  const dir = await makeTempDir();
  const ours: Subject[] = [];
  let raw: Subject | undefined;
  let hop: ThreadHopSubject | undefined;
  const chains: Subject[] = [];
  let polling: Subject | undefined;
  let sleeping: Subject | undefined;
  try {
    for (const handler of ['worker', 'main'] as const) {
      const shmName = `${token}${++serviceCounter}`;
      log(`shm: starting ours server (${handler} handler, service ${shmName})`);
      try {
        ours.push(await startOursSubject(api, { transport: 'shm', handler, dir, shmName, shmCapacity: kShmCapacity }));
      } catch (err) {
        if (!(err instanceof OursUnavailableError)) throw err;
        log(`shm: ours not measured (${handler} handler: ${err.message})`);
        result.skipped.push(`shm ${handler}: ${err.message}`);
      }
    }
    if (ours.length > 0) {
      // The opt-in poll window on both ends, for machines with cores to spare (info rows; the busy-host section shows its cost).
      const shmName = `${token}${++serviceCounter}`;
      log(`shm: starting ours server (worker handler, idle '${kPeerPollIdle}', service ${shmName})`);
      polling = await startOursPeerPolling(api, { transport: 'shm', dir, shmName, shmCapacity: kShmCapacity }).catch((err: Error) => {
        if (!(err instanceof OursUnavailableError)) throw err;
        result.skipped.push(`shm idle '${kPeerPollIdle}': ${err.message}`);
        return undefined;
      });
      // The default client window off (info rows): what the client worker's poll window gives.
      const sleepName = `${token}${++serviceCounter}`;
      log(`shm: starting ours server (worker handler, client with idle 'sleep', service ${sleepName})`);
      sleeping = await startOursClientSleeping(api, { transport: 'shm', dir, shmName: sleepName, shmCapacity: kShmCapacity }).catch((err: Error) => {
        if (!(err instanceof OursUnavailableError)) throw err;
        result.skipped.push(`shm client idle 'sleep': ${err.message}`);
        return undefined;
      });
      log('shm: starting raw unix server (baseline)');
      raw = await startRawSubject('unix', dir);
      // Every call through ours also crosses the thread hop: a floor for its round trip.
      hop = await startThreadHop('shm', { pollMicros: 0 });
      // Every call through ours crosses the bare chain main <-> worker <-> other process: its floor and ceiling.
      for (const kind of ['via-worker', 'direct'] as const) {
        log(`shm: starting the ${kChainLabels[kind]}`);
        chains.push(await startRingChain(kind, token));
      }
      const subjects = [raw, ...ours, ...(polling === undefined ? [] : [polling]), ...(sleeping === undefined ? [] : [sleeping]), hop, ...chains];
      const summaries = await measureInterleaved(subjects, config, { pipelined: true, log });
      result.subjects = subjects.map((s) => ({
        key: s === raw ? 'raw-unix' : s.key,
        label: s === raw ? 'raw unix ping-pong' : s.label,
        transport: s === raw ? 'unix' : s.transport,
        summary: summaries.get(s)!,
      }));
      await hop.close();
      for (const chain of chains.splice(0)) await chain.close();
      // Every 1 MiB echo through ours crosses the main <-> worker hop both ways, through rings of
      // the default ringBytes: that hop alone bounds ours' echo bandwidth from above.
      hop = await startThreadHop('shm', { pollMicros: 0, capacity: kOursRingBytes, payloadBytes: kEchoBytes });
      // The cross-process rings alone, of the capacity ours' are given here, without the runtime:
      // the path a main-thread client's echo takes (a copy into each ring, none out of it).
      log(`shm: starting the ${kChainLabels.direct} for the 1 MiB echo`);
      chains.push(await startRingChain('direct', token, { capacity: kShmCapacity, payloadBytes: kEchoBytes }));
      result.echo = await measureEcho(ours, echoConfig, log, result.skipped, hop, chains[0]);
      for (const chain of chains.splice(0)) await chain.close();
    }
  } finally {
    await hop?.close().catch((err: Error) => log(`close: ${err.message}`));
    for (const chain of chains) await chain.close().catch((err: Error) => log(`close: ${err.message}`));
    for (const subject of [...ours, ...(polling === undefined ? [] : [polling]), ...(sleeping === undefined ? [] : [sleeping]), ...(raw === undefined ? [] : [raw])]) {
      await subject.close().catch((err: Error) => log(`close: ${err.message}`));
    }
    await removeTempDir(dir);
  }
  // Every server child has exited by now (close() waits for it): nothing of ours may remain.
  const left = findLeftovers();
  if (left.length > 0) {
    sweepLeftovers();
    result.warnings.push(`shm: removed ${left.length} leftover(s) after closing: ${left.join(', ')}`);
  } else {
    log('shm: all server children stopped; nothing of ours left in /dev/shm or the control-socket directory');
  }
  for (const s of result.echo?.subjects ?? []) spreadWarning(result.warnings, `shm ${s.label} 1 MiB echo`, s.summary);
  if (result.echo !== undefined) spreadWarning(result.warnings, 'memcpy 1 MiB', result.echo.memcpy);
  if (result.echo?.fresh !== undefined) spreadWarning(result.warnings, 'fresh 1 MiB buffer + copy', result.echo.fresh);
  if (result.echo?.chain !== undefined) spreadWarning(result.warnings, 'bare ring chain 1 MiB echo', result.echo.chain);
  return result;
}

function spreadWarning(warnings: string[], what: string, summary: EchoSummary): void {
  const values = summary.rounds.map((r) => r.mbPerSec);
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  if (hi > lo * kUnstableSpread) {
    warnings.push(`unstable: ${what} ranged ${Math.round(lo)}-${Math.round(hi)} MB/s over ${values.length} rounds`);
  }
}

export function patterned(bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) out[i] = (i * 131 + 7) & 0xff;
  return out;
}

export function summarise(rounds: EchoRound[]): EchoSummary {
  return {
    mbPerSec: median(rounds.map((r) => r.mbPerSec)),
    medianUs: median(rounds.map((r) => r.medianUs)),
    rounds,
  };
}

/** Calls `op` back to back: `warmupMs` untimed, then `durationMs` timed, each call on its own. */
export async function timedRound(op: () => unknown, config: Pick<BenchConfig, 'warmupMs' | 'durationMs'>): Promise<EchoRound> {
  const warmEnd = performance.now() + config.warmupMs;
  while (performance.now() < warmEnd) await op();
  const times: number[] = [];
  const start = performance.now();
  const end = start + config.durationMs;
  let t = start;
  while (t < end) {
    await op();
    const done = performance.now();
    times.push((done - t) * 1000);
    t = done;
  }
  return { mbPerSec: (times.length * kEchoBytes) / ((t - start) / 1000) / 1e6, medianUs: median(times), calls: times.length };
}

/** 1 MiB echo over every ours subject, interleaved round by round with the memcpy baseline. */
async function measureEcho(
  ours: readonly Subject[],
  config: Pick<BenchConfig, 'rounds' | 'warmupMs' | 'durationMs'>,
  log: (line: string) => void,
  skipped: string[],
  hop?: ThreadHopSubject,
  chain?: Subject,
): Promise<ShmResult['echo']> {
  const source = patterned(kEchoBytes);
  const target = new Uint8Array(new SharedArrayBuffer(kEchoBytes));
  // `await` of a non-promise still yields a microtask turn per copy, as the echo loop does.
  const memcpy = (): void => target.set(source);
  // What a receiver that keeps a message must do at least once per message: a new buffer (from the
  // allocator the runtime uses for them), filled from shared memory. Kept until the next one.
  target.set(source);
  let kept: Uint8Array | undefined;
  const fresh = (): void => {
    kept = bytesToFill(kEchoBytes);
    kept.set(target);
  };

  const echoes: Array<{ subject: Subject; call: () => Promise<unknown>; rounds: EchoRound[] }> = [];
  for (const subject of ours) {
    if (subject.callBytes === undefined) continue;
    const send = subject.callBytes.bind(subject);
    let payload = patterned(kEchoBytes);
    const call = (): Promise<unknown> => {
      // The runtime may transfer what it is given; then each call needs a fresh buffer.
      if (payload.byteLength === 0) payload = patterned(kEchoBytes);
      return send(payload);
    };
    // Check the echo once, within a deadline, before timing it.
    try {
      const reply = await withDeadline(call(), kStallSlackMs, `shm ${subject.label} 1 MiB echo`);
      if (!(reply instanceof Uint8Array) || reply.byteLength !== kEchoBytes || reply[kEchoBytes - 1] !== source[kEchoBytes - 1]) {
        throw new Error('the reply is not the 1 MiB payload');
      }
    } catch (err) {
      log(`shm: ${subject.label} 1 MiB echo not measured (${(err as Error).message})`);
      skipped.push(`shm ${subject.label} 1 MiB echo: ${(err as Error).message}`);
      continue;
    }
    echoes.push({ subject, call, rounds: [] });
  }
  if (echoes.length === 0) return undefined;

  const memcpyRounds: EchoRound[] = [];
  const hopRounds: EchoRound[] = [];
  const freshRounds: EchoRound[] = [];
  const chainRounds: EchoRound[] = [];
  const stallMs = config.warmupMs + config.durationMs + kStallSlackMs;
  for (let round = 0; round < config.rounds; round++) {
    const prefix = `round ${round + 1}/${config.rounds}  `;
    const copy = await timedRound(memcpy, config);
    memcpyRounds.push(copy);
    log(`${prefix}${'memcpy 1 MiB'.padEnd(22)} ${Math.round(copy.mbPerSec).toLocaleString('en-US')} MB/s (median copy ${copy.medianUs.toFixed(1)} µs)`);
    const f = await timedRound(fresh, config);
    freshRounds.push(f);
    log(`${prefix}${'fresh 1 MiB + copy'.padEnd(22)} ${Math.round(f.mbPerSec).toLocaleString('en-US')} MB/s (median ${f.medianUs.toFixed(1)} µs)`);
    if (chain !== undefined) {
      const r = await withDeadline(timedRound(chain.call, config), stallMs, 'bare ring chain 1 MiB echo');
      chainRounds.push(r);
      log(`${prefix}${'bare ring chain 1 MiB'.padEnd(22)} ${Math.round(r.mbPerSec).toLocaleString('en-US')} MB/s (median echo ${r.medianUs.toFixed(0)} µs, ${r.calls} calls)`);
    }
    if (hop !== undefined) {
      const r = await withDeadline(timedRound(hop.call, config), stallMs, 'thread hop 1 MiB echo');
      hopRounds.push(r);
      log(`${prefix}${'thread hop 1 MiB'.padEnd(22)} ${Math.round(r.mbPerSec).toLocaleString('en-US')} MB/s (median echo ${r.medianUs.toFixed(0)} µs, ${r.calls} calls)`);
    }
    for (const echo of echoes) {
      const name = `shm ${echo.subject.key} 1 MiB`;
      const r = await withDeadline(timedRound(echo.call, config), stallMs, `${name} echo`);
      echo.rounds.push(r);
      log(`${prefix}${name.padEnd(22)} ${Math.round(r.mbPerSec).toLocaleString('en-US')} MB/s (median echo ${r.medianUs.toFixed(0)} µs, ${r.calls} calls)`);
    }
  }
  return {
    bytes: kEchoBytes,
    memcpy: summarise(memcpyRounds),
    subjects: echoes.map((e) => ({ key: e.subject.key, label: e.subject.label, summary: summarise(e.rounds) })),
    ...(hopRounds.length > 0 ? { hop: summarise(hopRounds) } : {}),
    fresh: summarise(freshRounds),
    ...(chainRounds.length > 0 ? { chain: summarise(chainRounds) } : {}),
  };
}

export function shmRows(result: ShmResult, inflight: number): ResultRow[] {
  const rows: ResultRow[] = [];
  const raw = result.subjects.find((s) => s.key === 'raw-unix');
  const hop = result.subjects.find((s) => s.key === 'hop');
  const chains = result.subjects.filter((s) => s.key === 'chain-via-worker' || s.key === 'chain-direct');
  if (raw !== undefined) {
    rows.push(
      ...comparisonRows({
        subjects: result.subjects.filter((s) => s !== hop && !chains.includes(s)),
        baseline: raw,
        baselineName: 'raw unix',
        inflight,
        // calls/s is judged with the defaults, the round trip with the 'latency' preset; the
        // defaults' round trip and a client that sleeps at once are shown beside them.
        targetsFor: (s) =>
          s.key === kClientSleepsKey ? undefined : s.key === kPeerPollKey ? { rtMax: kShmRoundTripRatioMax, rateMin: kShmCallsPerSecRatioMin } : { rateMin: kShmCallsPerSecRatioMin },
      }),
    );
    if (hop !== undefined) rows.push({ scenario: `${kThreadHopLabel} rt`, transport: 'shm', medianUs: hop.summary.roundTrip.medianUs, verdict: 'info' });
    for (const chain of chains) {
      rows.push(
        ...pathRows(chain, raw, {
          transport: 'shm',
          baselineName: 'raw unix',
          inflight,
          // A main-thread caller reads and writes the shm rings itself: the chain without the worker hop is the one it crosses.
          ...(chain.key === 'chain-direct' ? { bounds: { rtMax: kShmRoundTripRatioMax, rateMin: kShmCallsPerSecRatioMin, what: 'the bare ring chain it crosses (no worker hop)' } } : {}),
        }),
      );
    }
  }
  const echo = result.echo;
  if (echo !== undefined) {
    rows.push({
      scenario: 'memcpy 1 MiB into a SAB',
      transport: 'memory',
      medianUs: echo.memcpy.medianUs,
      mbPerSec: echo.memcpy.mbPerSec,
    });
    for (const subject of echo.subjects) {
      const share = subject.summary.mbPerSec / echo.memcpy.mbPerSec;
      rows.push({
        scenario: `${subject.label} 1 MiB echo`,
        transport: 'shm',
        medianUs: subject.summary.medianUs,
        mbPerSec: subject.summary.mbPerSec,
        baseline: 'memcpy 1 MiB',
        ratio: share,
        target: `>= ${kShmEchoShareMin.toFixed(2)}x`,
        verdict: atLeast(share, kShmEchoShareMin),
      });
    }
    if (echo.hop !== undefined) {
      const share = echo.hop.mbPerSec / echo.memcpy.mbPerSec;
      rows.push({
        scenario: `${kThreadHopLabel} 1 MiB echo`,
        transport: 'shm',
        medianUs: echo.hop.medianUs,
        mbPerSec: echo.hop.mbPerSec,
        verdict: 'info',
      });
      rows.push({
        scenario: '  ceiling of ours 1 MiB echo: the thread hop alone',
        transport: 'shm',
        mbPerSec: echo.hop.mbPerSec,
        baseline: 'memcpy 1 MiB',
        ratio: share,
        target: `>= ${kShmEchoShareMin.toFixed(2)}x`,
        // Not a verdict on ours: whether the target lies below what the hop alone allows here.
        verdict: share < kShmEchoShareMin ? 'unreachable' : 'reachable',
      });
    }
    rows.push(...echoBoundRows(echo));
  }
  return rows;
}

/**
 * Where the floor of ours' 1 MiB echo lies on this machine (not verdicts on ours): a receiver that
 * keeps the bytes makes a fresh buffer per message and fills it; the bare cross-process ring
 * chain echoes with no runtime and no such buffer; a main-thread client's echo costs at least
 * the chain's time plus one such buffer at each receiving end (the server's handler is given its
 * request to keep, the caller its answer).
 */
function echoBoundRows(echo: NonNullable<ShmResult['echo']>): ResultRow[] {
  const rows: ResultRow[] = [];
  const memcpy = echo.memcpy.mbPerSec;
  const bound = (scenario: string, mbPerSec: number, medianUs: number | undefined): ResultRow => {
    const share = mbPerSec / memcpy;
    return {
      scenario,
      transport: 'shm',
      ...(medianUs !== undefined ? { medianUs } : {}),
      mbPerSec,
      baseline: 'memcpy 1 MiB',
      ratio: share,
      target: `>= ${kShmEchoShareMin.toFixed(2)}x`,
      verdict: share < kShmEchoShareMin ? 'unreachable' : 'reachable',
    };
  };
  const fresh = echo.fresh;
  if (fresh !== undefined) rows.push(bound('  ceiling of ours 1 MiB echo: a fresh 1 MiB buffer + copy (the receiver keeps it)', fresh.mbPerSec, fresh.medianUs));
  const chain = echo.chain;
  if (chain !== undefined) {
    rows.push(bound(`  ceiling of ours 1 MiB echo: the ${kChainLabels.direct} alone`, chain.mbPerSec, chain.medianUs));
    if (fresh !== undefined) {
      // Both receiving ends keep what they receive (the handler its request, the caller its answer).
      // Summed as mean times (from MB/s, as the echo's share is): the allocator's cost comes in
      // bursts (when it gives memory back to the system) that a median leaves out.
      const meanUs = (mbPerSec: number): number => kEchoBytes / mbPerSec;
      const us = meanUs(chain.mbPerSec) + 2 * meanUs(fresh.mbPerSec);
      rows.push(bound('  ceiling of ours 1 MiB echo: that chain + a fresh buffer + copy at each receiving end (mean times)', kEchoBytes / us, undefined));
    }
  }
  return rows;
}
