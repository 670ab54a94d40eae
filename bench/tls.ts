/**
 * The cost of TLS: ours over plain TCP beside ours over `tcp(address, { tls })`, both with the
 * worker-module handler, server in a child process, measured in the same interleaved rounds: a
 * 16-byte round trip and calls/s with 64 in flight, then a 1 MiB echo (one call in flight, request
 * bytes per second). Then connection set-up (connect + start() of a client node, server in this
 * process) plain and with TLS, like the handshake section. The certificate (P-256, TLS 1.3) is
 * made for the run with the openssl CLI. No target: the rows say what TLS costs, as info.
 */
import { Node, tcp, type RunningNode } from '../src/index.js';
import { median, withDeadline } from './lib/measure.js';
import { makeTempDir, removeTempDir } from './lib/children.js';
import type { OursApi } from './lib/ours-api.js';
import { measureInterleaved, type BenchConfig, type SubjectSummary } from './lib/rounds.js';
import type { Subject } from './lib/subject.js';
import { comparisonRows, type ResultRow } from './lib/table.js';
import { startOursSubject } from './ours.js';
import { kEchoBytes, patterned, summarise, timedRound, type EchoSummary } from './shm.js';
import { makeCa, makeLeaf, opensslInstalled } from '../test/tls-certs.js';

const kStallSlackMs = 15_000;

export interface SetupSummary {
  medianUs: number;
  p99Us: number;
  samples: number;
}

export interface TlsResult {
  transport: 'tcp';
  /** plain first (the baseline), then tls. */
  subjects: Array<{ key: string; label: string; transport: string; summary: SubjectSummary }>;
  echo?: { bytes: number; subjects: Array<{ key: string; label: string; summary: EchoSummary }> };
  /** Median and p99 connection set-up, µs: plain, then TLS. */
  setup?: { plain: SetupSummary; tls: SetupSummary };
  skipped: string[];
}

export async function runTls(
  api: OursApi,
  config: BenchConfig,
  echoConfig: Pick<BenchConfig, 'rounds' | 'warmupMs' | 'durationMs'>,
  log: (line: string) => void,
): Promise<TlsResult> {
  const result: TlsResult = { transport: 'tcp', subjects: [], skipped: [] };
  if (!opensslInstalled()) {
    result.skipped.push('tls: /usr/bin/openssl is missing (it makes the run\'s certificate)');
    log('tls: skipped - /usr/bin/openssl is missing');
    return result;
  }
  const dir = await makeTempDir();
  const subjects: Subject[] = [];
  try {
    const ca = makeCa(dir, 'bench-ca');
    const leaf = makeLeaf(dir, ca, 'bench-server', { ips: ['127.0.0.1'] });
    log('tls: starting ours tcp server (plain)');
    subjects.push(await startOursSubject(api, { transport: 'tcp', handler: 'worker', dir, name: 'plain', label: 'ours tcp plain' }));
    log('tls: starting ours tcp server (tls)');
    subjects.push(
      await startOursSubject(api, { transport: 'tcp', handler: 'worker', dir, name: 'tls', label: 'ours tcp + TLS 1.3', tls: { certFile: leaf.certFile, keyFile: leaf.keyFile, ca: ca.cert } }),
    );
    const summaries = await measureInterleaved(subjects, config, { pipelined: true, log });
    result.subjects = subjects.map((s) => ({ key: s.key, label: s.label, transport: 'tcp', summary: summaries.get(s)! }));
    result.echo = await measureEcho(subjects, echoConfig, log, result.skipped);
    result.setup = await measureSetup({ cert: leaf.cert, key: leaf.key, ca: ca.cert }, { rounds: echoConfig.rounds, perRound: echoConfig.durationMs >= 500 ? 60 : 20 }, log);
    return result;
  } finally {
    for (const subject of subjects) await subject.close().catch((err: Error) => log(`close: ${err.message}`));
    await removeTempDir(dir);
  }
}

/** 1 MiB echo over plain and TLS, interleaved round by round. */
async function measureEcho(
  subjects: readonly Subject[],
  config: Pick<BenchConfig, 'rounds' | 'warmupMs' | 'durationMs'>,
  log: (line: string) => void,
  skipped: string[],
): Promise<TlsResult['echo']> {
  const source = patterned(kEchoBytes);
  const echoes: Array<{ subject: Subject; call: () => Promise<unknown>; rounds: Awaited<ReturnType<typeof timedRound>>[] }> = [];
  for (const subject of subjects) {
    const send = subject.callBytes!.bind(subject);
    let payload = patterned(kEchoBytes);
    const call = (): Promise<unknown> => {
      if (payload.byteLength === 0) payload = patterned(kEchoBytes);
      return send(payload);
    };
    try {
      const reply = await withDeadline(call(), kStallSlackMs, `tls ${subject.label} 1 MiB echo`);
      if (!(reply instanceof Uint8Array) || reply.byteLength !== kEchoBytes || reply[kEchoBytes - 1] !== source[kEchoBytes - 1]) {
        throw new Error('the reply is not the 1 MiB payload');
      }
    } catch (err) {
      log(`tls: ${subject.label} 1 MiB echo not measured (${(err as Error).message})`);
      skipped.push(`tls ${subject.label} 1 MiB echo: ${(err as Error).message}`);
      return undefined;
    }
    echoes.push({ subject, call, rounds: [] });
  }
  const stallMs = config.warmupMs + config.durationMs + kStallSlackMs;
  for (let round = 0; round < config.rounds; round++) {
    for (const echo of echoes) {
      const r = await withDeadline(timedRound(echo.call, config), stallMs, `tls ${echo.subject.key} 1 MiB echo`);
      echo.rounds.push(r);
      log(`round ${round + 1}/${config.rounds}  ${`tcp ${echo.subject.key} 1 MiB`.padEnd(22)} ${Math.round(r.mbPerSec).toLocaleString('en-US')} MB/s (median echo ${r.medianUs.toFixed(0)} µs, ${r.calls} calls)`);
    }
  }
  return { bytes: kEchoBytes, subjects: echoes.map((e) => ({ key: e.subject.key, label: e.subject.label, summary: summarise(e.rounds) })) };
}

/** connect + start() + close of a client node, plain and TLS alternating per round; servers in this process. */
async function measureSetup(pem: { cert: string; key: string; ca: string }, options: { rounds: number; perRound: number }, log: (line: string) => void): Promise<TlsResult['setup']> {
  const servers: RunningNode[] = [];
  try {
    const plain = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }).start();
    servers.push(plain);
    const secure = await new Node().serve(tcp('127.0.0.1:0', { tls: { cert: pem.cert, key: pem.key } }), { onRequest: (r: unknown) => r }).start();
    servers.push(secure);
    const kinds = [
      { name: 'plain' as const, transport: () => tcp(plain.addresses[0] as { host: string; port: number }), samples: [] as number[] },
      { name: 'tls' as const, transport: () => tcp(secure.addresses[0] as { host: string; port: number }, { tls: { ca: pem.ca } }), samples: [] as number[] },
    ];
    for (let round = 0; round < options.rounds; round++) {
      log(`tls: connection set-up, round ${round + 1}/${options.rounds}`);
      for (const kind of kinds) {
        for (let i = 0; i < options.perRound; i++) {
          const t0 = process.hrtime.bigint();
          const client = await withDeadline(new Node().connect(kind.transport()).start(), kStallSlackMs, `tls ${kind.name} connection set-up`);
          const us = Number(process.hrtime.bigint() - t0) / 1000;
          await client.close();
          if (i > 0) kind.samples.push(us); // the first of each round warms up
        }
      }
    }
    const summary = (samples: number[]): SetupSummary => {
      const sorted = samples.sort((a, b) => a - b);
      return { medianUs: median(sorted), p99Us: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))], samples: sorted.length };
    };
    return { plain: summary(kinds[0].samples), tls: summary(kinds[1].samples) };
  } finally {
    for (const server of servers) await server.close().catch(() => {});
  }
}

export function tlsRows(result: TlsResult, inflight: number): ResultRow[] {
  const plain = result.subjects.find((s) => s.key === 'plain');
  if (plain === undefined) return [];
  const rows = comparisonRows({ subjects: result.subjects, baseline: plain, baselineName: 'ours tcp plain', inflight, targetsFor: () => undefined });
  const echo = result.echo;
  const plainEcho = echo?.subjects.find((s) => s.key === 'plain');
  if (echo !== undefined && plainEcho !== undefined) {
    for (const subject of echo.subjects) {
      const isBase = subject === plainEcho;
      rows.push({
        scenario: `${subject.label} 1 MiB echo`,
        transport: 'tcp',
        medianUs: subject.summary.medianUs,
        mbPerSec: subject.summary.mbPerSec,
        ...(isBase ? {} : { baseline: 'ours tcp plain 1 MiB', ratio: subject.summary.mbPerSec / plainEcho.summary.mbPerSec, verdict: 'info' as const }),
      });
    }
  }
  const setup = result.setup;
  if (setup !== undefined) {
    rows.push({ scenario: 'connection set-up, plain tcp', transport: 'tcp', medianUs: setup.plain.medianUs, p99Us: setup.plain.p99Us });
    rows.push({
      scenario: 'connection set-up, TLS 1.3',
      transport: 'tcp',
      medianUs: setup.tls.medianUs,
      p99Us: setup.tls.p99Us,
      baseline: 'set-up, plain tcp',
      ratio: setup.tls.medianUs / setup.plain.medianUs,
      verdict: 'info',
    });
  }
  return rows;
}

/** A subject whose 1 MiB rounds differ by more than 1.5x. */
export function tlsWarnings(result: TlsResult): string[] {
  const out: string[] = [];
  for (const s of result.echo?.subjects ?? []) {
    const values = s.summary.rounds.map((r) => r.mbPerSec);
    if (Math.max(...values) > Math.min(...values) * 1.5) {
      out.push(`unstable: tls ${s.label} 1 MiB echo ranged ${Math.round(Math.min(...values))}-${Math.round(Math.max(...values))} MB/s over ${values.length} rounds (median ${Math.round(median(values))})`);
    }
  }
  return out;
}
