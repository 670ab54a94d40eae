/**
 * Fan-out: one client process (this one) with 1, 8, 64 and 512 connections to one server, 64
 * calls in flight in all, spread over the connections in turn. Three clients, each against a
 * server child over unix:
 * - raw: that many raw `net` sockets (raw.ts's client, a FIFO of resolvers each) to the raw echo
 *   server;
 * - bare multiplexed chain (the bound row): the main thread and ONE worker with ONE ring pair
 *   between them, the worker holding all the sockets to the same raw echo server
 *   (mux-relay-worker.ts): what a data plane with one ring pair per thread pair costs, with
 *   nothing else of the runtime;
 * - ours: that many `Node`s, one `connect(unix(path))` each, to an ours server (worker handler).
 * DESIGN §6 targets: ours ≥ 1.0x raw's calls/s at 1 and 8 connections, and ≥ 0.8x the bare
 * multiplexed chain at every count. The client's CPU per call (this process, all its threads) is
 * printed beside each.
 *
 * Each subject runs alone: its connections are opened before its turn and closed after it, so
 * raw is never measured beside another subject's idle or polling threads. Rounds interleave the
 * subjects, so that a swing in CPU speed hits them alike.
 */
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { createRing, RingWriter } from '../src/shm/ring.js';
import { kIdlePresets } from '../src/idle.js';
import { makeTempDir, removeTempDir, startServerChild, type ServerChild } from './lib/children.js';
import { median, pipelined, withDeadline } from './lib/measure.js';
import type { OursApi, OursRunning } from './lib/ours-api.js';
import { ringCaller, workerEnder } from './lib/ring-caller.js';
import type { BenchConfig } from './lib/rounds.js';
import { kPayloadBytes } from './lib/subject.js';
import { atLeast, type ResultRow } from './lib/table.js';
import { RawPingClient } from './raw.js';

export const kFanoutConnections = [1, 8, 64, 512] as const;
/** DESIGN §6: ours against raw at these counts. */
const kRawRatioCounts: ReadonlySet<number> = new Set([1, 8]);
const kRawRatioMin = 1.0;
const kBoundRatioMin = 0.8;
const kRingCapacity = 1 << 20;
const kConnectTimeoutMs = 30_000;

type Key = 'raw' | 'chain' | 'ours';
const kKeys: readonly Key[] = ['raw', 'chain', 'ours'];

export interface FanoutFigure {
  callsPerSec: number;
  /** CPU time of this whole process (every thread) per call, µs. */
  cpuUsPerCall: number;
}

export interface FanoutResult {
  rates: Array<{ connections: number } & Partial<Record<Key, FanoutFigure>>>;
  skipped: string[];
}

/** An open client of one subject: `call` spreads calls over its connections in turn. */
interface Open {
  call(): Promise<unknown>;
  close(): Promise<void>;
}

async function openRaw(server: ServerChild, connections: number): Promise<Open> {
  const clients = await Promise.all(Array.from({ length: connections }, () => RawPingClient.connect(server.address)));
  let next = 0;
  const payload = new Uint8Array(kPayloadBytes);
  return {
    call() {
      const client = clients[next]!;
      next = (next + 1) % clients.length;
      return client.call(payload);
    },
    close: async () => {
      await Promise.all(clients.map((c) => c.close()));
    },
  };
}

async function openChain(server: ServerChild, connections: number): Promise<Open> {
  const a = server.address;
  if (a.kind !== 'unix') throw new Error(`fanout: expected a unix server, got ${a.kind}`);
  const fromMain = createRing(kRingCapacity);
  const toMain = createRing(kRingCapacity);
  const worker = new Worker(new URL('./mux-relay-worker.js', import.meta.url), {
    workerData: { fromMain, toMain, address: { path: a.path }, connections, pollMicros: kIdlePresets.balanced.clientPollMicros },
  });
  const endWorker = workerEnder(worker);
  // The tag picks the socket (tag % connections): consecutive calls go to consecutive sockets.
  const caller = ringCaller(new RingWriter(fromMain), toMain);
  await withDeadline(caller.call(), kConnectTimeoutMs, `fanout chain with ${connections} sockets: first call`);
  return {
    call: caller.call,
    close: async () => {
      await caller.close();
      await endWorker();
    },
  };
}

async function openOurs(api: OursApi, path: string, connections: number): Promise<Open> {
  const nodes: OursRunning[] = [];
  try {
    // Started a batch at a time: 512 start()s at once only queue up behind one another.
    for (let i = 0; i < connections; i += 64) {
      const batch = Array.from({ length: Math.min(64, connections - i) }, () => new api.Node().connect(api.unix(path)).start());
      nodes.push(...(await withDeadline(Promise.all(batch), kConnectTimeoutMs, `fanout: ${connections} ours clients start()`)));
    }
  } catch (err) {
    await Promise.all(nodes.map((n) => n.close()));
    throw err;
  }
  const clients = nodes.map((n) => n.client!);
  let next = 0;
  return {
    call() {
      const client = clients[next]!;
      next = (next + 1) % clients.length;
      // A fresh payload per call: the runtime may transfer (detach) what it is given.
      return client.call(new Uint8Array(kPayloadBytes));
    },
    close: async () => {
      await Promise.all(nodes.map((n) => n.close()));
    },
  };
}

async function measure(open: Open, config: BenchConfig): Promise<FanoutFigure> {
  let calls = 0;
  const call = (): Promise<unknown> => {
    calls++;
    return open.call();
  };
  const cpu = process.cpuUsage();
  const { callsPerSec } = await withDeadline(
    pipelined(call, { inflight: config.inflight, warmupMs: config.warmupMs, durationMs: config.durationMs }),
    config.warmupMs + config.durationMs + 15_000,
    'fanout measurement',
  );
  const used = process.cpuUsage(cpu);
  return { callsPerSec, cpuUsPerCall: (used.user + used.system) / calls };
}

export async function runFanout(api: OursApi | undefined, config: BenchConfig, log: (line: string) => void): Promise<FanoutResult> {
  const result: FanoutResult = { rates: [], skipped: [] };
  const dir = await makeTempDir();
  let raw: ServerChild | undefined;
  let ours: ServerChild | undefined;
  try {
    raw = await startServerChild(new URL('./raw-server.js', import.meta.url), ['--kind', 'unix', '--path', join(dir, 'raw.sock')], { label: 'raw unix server (fanout)' });
    if (api !== undefined) {
      ours = await startServerChild(new URL('./ours-server.js', import.meta.url), ['--kind', 'unix', '--path', join(dir, 'ours.sock'), '--handler', 'worker'], {
        label: 'ours unix server (fanout, worker handler)',
      });
    } else {
      result.skipped.push('fanout ours: runtime not available');
    }
    const oursPath = join(dir, 'ours.sock');
    for (const connections of kFanoutConnections) {
      const rounds: Array<Partial<Record<Key, FanoutFigure>>> = [];
      for (let round = 0; round < config.rounds; round++) {
        const figures: Partial<Record<Key, FanoutFigure>> = {};
        for (const key of kKeys) {
          if (key === 'ours' && ours === undefined) continue;
          const open = key === 'raw' ? await openRaw(raw, connections) : key === 'chain' ? await openChain(raw, connections) : await openOurs(api!, oursPath, connections);
          try {
            figures[key] = await measure(open, config);
          } finally {
            await open.close();
          }
        }
        rounds.push(figures);
        const fmt = (f: FanoutFigure | undefined) => (f === undefined ? '-' : `${Math.round(f.callsPerSec).toLocaleString('en-US')} calls/s (${f.cpuUsPerCall.toFixed(1)} µs CPU/call)`);
        log(`fanout: round ${round + 1}/${config.rounds}, ${connections} connections, ${config.inflight} in flight: raw ${fmt(figures.raw)}, bare chain ${fmt(figures.chain)}, ours ${fmt(figures.ours)}`);
      }
      const entry: FanoutResult['rates'][number] = { connections };
      for (const key of kKeys) {
        const mine = rounds.map((r) => r[key]).filter((f): f is FanoutFigure => f !== undefined);
        if (mine.length > 0) entry[key] = { callsPerSec: median(mine.map((f) => f.callsPerSec)), cpuUsPerCall: median(mine.map((f) => f.cpuUsPerCall)) };
      }
      result.rates.push(entry);
    }
  } finally {
    await raw?.stop();
    await ours?.stop();
    await removeTempDir(dir);
  }
  return result;
}

/** CPU per call goes in the scenario text: the table has no column for it. */
function cpuNote(f: FanoutFigure): string {
  return `${f.cpuUsPerCall.toFixed(1)} µs CPU/call`;
}

export function fanoutRows(result: FanoutResult, inflight: number): ResultRow[] {
  const rows: ResultRow[] = [];
  for (const r of result.rates) {
    const n = r.connections;
    const label = `${n} conn${n === 1 ? '' : 's'} x${inflight} in all`;
    if (r.raw !== undefined) rows.push({ scenario: `fanout raw sockets, ${label} (${cpuNote(r.raw)})`, transport: 'unix', callsPerSec: r.raw.callsPerSec });
    if (r.chain !== undefined) {
      rows.push({
        scenario: `fanout bare multiplexed chain, ${label} (${cpuNote(r.chain)})`,
        transport: 'unix',
        callsPerSec: r.chain.callsPerSec,
        ...(r.raw === undefined ? {} : { baseline: `raw, ${n} conn.`, ratio: r.chain.callsPerSec / r.raw.callsPerSec, verdict: 'info' as const }),
      });
    }
    if (r.ours !== undefined) {
      if (r.raw !== undefined) {
        const ratio = r.ours.callsPerSec / r.raw.callsPerSec;
        const judged = kRawRatioCounts.has(n);
        rows.push({
          scenario: `fanout ours worker handler, ${label} (${cpuNote(r.ours)})`,
          transport: 'unix',
          callsPerSec: r.ours.callsPerSec,
          baseline: `raw, ${n} conn.`,
          ratio,
          ...(judged ? { target: `>= ${kRawRatioMin.toFixed(2)}x`, verdict: atLeast(ratio, kRawRatioMin) } : { verdict: 'info' as const }),
        });
      }
      if (r.chain !== undefined) {
        const ratio = r.ours.callsPerSec / r.chain.callsPerSec;
        rows.push({
          scenario: `  fanout ours against its bound, ${label}`,
          transport: 'unix',
          callsPerSec: r.ours.callsPerSec,
          baseline: `bare mux chain, ${n} conn.`,
          ratio,
          target: `>= ${kBoundRatioMin.toFixed(2)}x`,
          verdict: atLeast(ratio, kBoundRatioMin),
        });
      }
    }
  }
  return rows;
}
