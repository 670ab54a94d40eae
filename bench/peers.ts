/**
 * Peers: what users pick today for RPC between Node processes, beside ogurpchik over a Unix socket
 * (worker-module handler, ours-server.ts) in the same interleaved rounds (lib/rounds.ts):
 * - Node `child_process.fork` IPC with `serialization: 'json'`; the child echoes every message
 *   (fork-echo-child.ts) and replies are matched to calls by an id carried in the message; the
 *   16 bytes travel base64-encoded, as bytes must through JSON.
 * - grpc-js unary calls over TCP and over a Unix socket (grpc-server.ts), raw bytes both ways.
 * - vscode-jsonrpc requests over TCP and over a Unix socket (jsonrpc-server.ts), the 16 bytes as
 *   base64 (JSON-RPC carries text).
 * - zeromq.js, a Dealer against a Router (zmq-server.ts) over tcp and ipc (a Unix socket): each
 *   message is [call id, 16 bytes], echoed unchanged; sends are queued, as zeromq.js allows one
 *   send in progress per socket.
 * Every subject echoes 16 bytes. DESIGN §6 targets: ours calls/s (64 in flight) ≥ 8× grpc-js's,
 * and ahead of zeromq.js's and vscode-jsonrpc's.
 */

import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { StreamMessageReader, StreamMessageWriter, createMessageConnection } from 'vscode-jsonrpc/node';
import { connectSocket, forkIpcChild, makeTempDir, removeTempDir, startServerChild, type ServerAddress } from './lib/children.js';
import type { OursApi } from './lib/ours-api.js';
import { measureInterleaved, type BenchConfig, type Measured, type SubjectSummary } from './lib/rounds.js';
import { kPayloadBytes } from './lib/subject.js';
import { atLeast, type ResultRow } from './lib/table.js';
import { OursUnavailableError, startOursSubject } from './ours.js';
import { deserializeBytes, kGrpcEchoPath, serializeBytes } from './grpc-service.js';

/** DESIGN §6: every transport's calls/s ≥ 8× grpc-js's. */
export const kGrpcCallsPerSecRatioMin = 8;
/** DESIGN §6: and ahead of zeromq.js's and vscode-jsonrpc's. */
const kAheadRatioMin = 1;

const kConnectTimeoutMs = 10_000;

export interface PeerSubject extends Measured {
  readonly label: string;
  close(): Promise<void>;
}

export interface PeersResult {
  transport: string;
  /** ours first (when measured), then the peers. */
  subjects: Array<{ key: string; label: string; transport: string; summary: SubjectSummary }>;
  skipped: string[];
}

interface Pending {
  resolve(body: Buffer): void;
  reject(err: Error): void;
}

async function startForkIpc(): Promise<PeerSubject> {
  const child = await forkIpcChild(new URL('./fork-echo-child.js', import.meta.url), { label: 'fork IPC echo child' });
  const proc: ChildProcess = child.process;
  const pending = new Map<number, Pending>();
  let nextId = 0;
  proc.on('message', (m: { id: number; b: string }) => {
    const waiter = pending.get(m.id);
    if (waiter === undefined) return;
    pending.delete(m.id);
    waiter.resolve(Buffer.from(m.b, 'base64'));
  });
  proc.once('exit', () => {
    const gone = new Error('fork IPC child exited');
    for (const waiter of pending.values()) waiter.reject(gone);
    pending.clear();
  });
  return {
    key: 'fork-ipc',
    label: 'node fork IPC (json)',
    transport: 'ipc',
    call: () =>
      new Promise<Buffer>((resolve, reject) => {
        if (!proc.connected) {
          reject(new Error('fork IPC channel closed'));
          return;
        }
        const id = ++nextId;
        pending.set(id, { resolve, reject });
        proc.send({ id, b: Buffer.from(new Uint8Array(kPayloadBytes)).toString('base64') });
      }),
    close: () => child.stop(),
  };
}

/** `serverArgs` go to every peer's server child (the busy host's `--busy-slice-ms <ms>`). */
export async function startGrpc(kind: 'tcp' | 'unix', dir: string, serverArgs: string[] = []): Promise<PeerSubject> {
  const args = [...(kind === 'tcp' ? ['--kind', 'tcp'] : ['--kind', 'unix', '--path', join(dir, 'grpc.sock')]), ...serverArgs];
  const server = await startServerChild(new URL('./grpc-server.js', import.meta.url), args, {
    label: `grpc-js ${kind} server`,
  });
  const address = server.address as Extract<ServerAddress, { kind: 'tcp' | 'unix' }>;
  const target = address.kind === 'tcp' ? `${address.host}:${address.port}` : `unix://${address.path}`;
  let client: grpc.Client | undefined;
  try {
    client = new grpc.Client(target, grpc.credentials.createInsecure());
    const c = client;
    await new Promise<void>((resolve, reject) =>
      c.waitForReady(Date.now() + kConnectTimeoutMs, (err) => (err === undefined ? resolve() : reject(err))),
    );
  } catch (err) {
    client?.close();
    await server.stop();
    throw err;
  }
  const c = client;
  return {
    key: `grpc-${kind}`,
    label: `grpc-js unary`,
    transport: kind,
    call: () =>
      new Promise<Buffer>((resolve, reject) => {
        c.makeUnaryRequest(kGrpcEchoPath, serializeBytes, deserializeBytes, new Uint8Array(kPayloadBytes), (err, reply) =>
          err === null && reply !== undefined ? resolve(reply) : reject(err ?? new Error('grpc-js: empty reply')),
        );
      }),
    close: async () => {
      c.close();
      await server.stop();
    },
  };
}

/** vscode-jsonrpc (what VS Code's language servers speak) over a socket; bytes travel as base64, as JSON-RPC needs. */
export async function startJsonRpc(kind: 'tcp' | 'unix', dir: string, serverArgs: string[] = []): Promise<PeerSubject> {
  const args = [...(kind === 'tcp' ? ['--kind', 'tcp'] : ['--kind', 'unix', '--path', join(dir, 'jsonrpc.sock')]), ...serverArgs];
  const server = await startServerChild(new URL('./jsonrpc-server.js', import.meta.url), args, { label: `vscode-jsonrpc ${kind} server` });
  let socket: net.Socket;
  try {
    socket = await connectSocket(server.address);
  } catch (err) {
    await server.stop();
    throw err;
  }
  socket.setNoDelay(true);
  socket.on('error', () => {});
  const connection = createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));
  connection.listen();
  const payload = Buffer.from(new Uint8Array(kPayloadBytes)).toString('base64');
  const s = socket;
  return {
    key: `jsonrpc-${kind}`,
    label: 'vscode-jsonrpc',
    transport: kind,
    call: async () => Buffer.from((await connection.sendRequest('echo', payload)) as string, 'base64'),
    close: async () => {
      connection.dispose();
      s.destroy();
      await server.stop();
    },
  };
}

/** zeromq.js Dealer -> Router over tcp or ipc; replies matched by the call id in their first frame. */
export async function startZmq(kind: 'tcp' | 'unix', dir: string, serverArgs: string[] = []): Promise<PeerSubject> {
  const zmq = await import('zeromq');
  const args = [...(kind === 'tcp' ? ['--kind', 'tcp'] : ['--kind', 'unix', '--path', join(dir, 'zmq.sock')]), ...serverArgs];
  const server = await startServerChild(new URL('./zmq-server.js', import.meta.url), args, { label: `zeromq.js ${kind} server` });
  const address = server.address as Extract<ServerAddress, { kind: 'tcp' | 'unix' }>;
  const dealer = new zmq.Dealer({ linger: 0 });
  dealer.connect(address.kind === 'tcp' ? `tcp://${address.host}:${address.port}` : `ipc://${address.path}`);
  const pending = new Map<number, Pending>();
  let nextId = 0;
  let closed = false;
  void (async () => {
    try {
      for await (const [id, body] of dealer) {
        const n = id!.readUInt32LE(0);
        const waiter = pending.get(n);
        if (waiter === undefined) continue;
        pending.delete(n);
        waiter.resolve(body!);
      }
    } catch {
      // closed
    }
    const gone = new Error('zeromq dealer closed');
    for (const waiter of pending.values()) waiter.reject(gone);
    pending.clear();
  })();
  // zeromq.js refuses a send while another is in progress: calls queue behind one another.
  let sending: Promise<void> = Promise.resolve();
  const payload = new Uint8Array(kPayloadBytes);
  return {
    key: `zmq-${kind}`,
    label: 'zeromq.js dealer/router',
    transport: kind,
    call: () =>
      new Promise<Buffer>((resolve, reject) => {
        if (closed) {
          reject(new Error('zeromq dealer closed'));
          return;
        }
        const id = nextId;
        nextId = (nextId + 1) >>> 0;
        pending.set(id, { resolve, reject });
        const head = Buffer.allocUnsafe(4);
        head.writeUInt32LE(id, 0);
        sending = sending.then(() => dealer.send([head, payload])).catch((err: Error) => {
          pending.delete(id);
          reject(err);
        });
      }),
    close: async () => {
      closed = true;
      dealer.close();
      await server.stop();
    },
  };
}

export async function runPeers(api: OursApi | undefined, config: BenchConfig, log: (line: string) => void): Promise<PeersResult> {
  const result: PeersResult = { transport: 'mixed', subjects: [], skipped: [] };
  const dir = await makeTempDir();
  const subjects: PeerSubject[] = [];
  try {
    if (api !== undefined) {
      log('peers: starting ours unix server (worker handler)');
      try {
        const ours = await startOursSubject(api, { transport: 'unix', handler: 'worker', dir });
        subjects.push({ ...ours, key: 'ours-worker', label: ours.label, transport: 'unix' });
      } catch (err) {
        if (!(err instanceof OursUnavailableError)) throw err;
        log(`peers: ours not measured (${err.message})`);
        result.skipped.push(`peers ours: ${err.message}`);
      }
    }
    log('peers: starting fork IPC child');
    subjects.push(await startForkIpc());
    for (const kind of ['tcp', 'unix'] as const) {
      log(`peers: starting grpc-js ${kind} server`);
      subjects.push(await startGrpc(kind, dir));
    }
    for (const kind of ['tcp', 'unix'] as const) {
      log(`peers: starting vscode-jsonrpc ${kind} server`);
      subjects.push(await startJsonRpc(kind, dir));
    }
    for (const kind of ['tcp', 'unix'] as const) {
      log(`peers: starting zeromq.js ${kind} server`);
      try {
        subjects.push(await startZmq(kind, dir));
      } catch (err) {
        log(`peers: zeromq.js ${kind} not measured (${(err as Error).message})`);
        result.skipped.push(`peers zeromq.js ${kind}: ${(err as Error).message}`);
      }
    }
    const summaries = await measureInterleaved(subjects, config, { pipelined: true, log });
    result.subjects = subjects.map((s) => ({ key: s.key, label: s.label, transport: s.transport, summary: summaries.get(s)! }));
  } finally {
    for (const subject of subjects) await subject.close().catch((err: Error) => log(`close: ${err.message}`));
    await removeTempDir(dir);
  }
  return result;
}

/**
 * Each peer's figures, then ours against each peer: rt rows ratio = ours time / peer time, x rows
 * ratio = ours rate / peer rate; the rows against grpc-js carry the ≥ 8× calls/s target.
 */
export function peersRows(result: PeersResult, inflight: number): ResultRow[] {
  const rows: ResultRow[] = [];
  const ours = result.subjects.find((s) => s.key === 'ours-worker');
  const peers = result.subjects.filter((s) => s !== ours);
  const name = (s: PeersResult['subjects'][number]): string => (s.transport === 'ipc' ? s.label : `${s.label} ${s.transport}`);
  for (const s of peers) {
    rows.push({ scenario: `${s.label} rt`, transport: s.transport, medianUs: s.summary.roundTrip.medianUs, p99Us: s.summary.roundTrip.p99Us });
    rows.push({ scenario: `${s.label} x${inflight}`, transport: s.transport, callsPerSec: s.summary.pipelined!.callsPerSec });
  }
  if (ours === undefined) return rows;
  const rt = ours.summary.roundTrip;
  const pipe = ours.summary.pipelined!;
  for (const s of peers) {
    rows.push({
      scenario: `${ours.label} rt`,
      transport: ours.transport,
      medianUs: rt.medianUs,
      p99Us: rt.p99Us,
      baseline: `${name(s)} rt`,
      ratio: rt.medianUs / s.summary.roundTrip.medianUs,
      verdict: 'info',
    });
  }
  for (const s of peers) {
    const ratio = pipe.callsPerSec / s.summary.pipelined!.callsPerSec;
    const min = s.key.startsWith('grpc-') ? kGrpcCallsPerSecRatioMin : s.key.startsWith('zmq-') || s.key.startsWith('jsonrpc-') ? kAheadRatioMin : undefined;
    rows.push({
      scenario: `${ours.label} x${inflight}`,
      transport: ours.transport,
      callsPerSec: pipe.callsPerSec,
      baseline: `${name(s)} x${inflight}`,
      ratio,
      ...(min !== undefined ? { target: `>= ${min.toFixed(2)}x`, verdict: atLeast(ratio, min) } : { verdict: 'info' as const }),
    });
  }
  return rows;
}

/** One transport's ours x64 figure, measured in its own section of this run. */
export interface SectionRate {
  label: string;
  transport: string;
  callsPerSec: number;
}

/**
 * DESIGN §6 says every transport: ours' calls/s on each transport the run measured (tcp, unix,
 * shm, isolate, tcp+TLS; from their own sections) against the faster of grpc-js's two figures
 * from the peers section. Not interleaved with grpc-js, as the peers rows are, but from the same
 * run. Unix is compared interleaved in peersRows already.
 */
export function grpcEveryTransportRows(result: PeersResult, rates: SectionRate[], inflight: number): ResultRow[] {
  const grpc = result.subjects.filter((s) => s.key.startsWith('grpc-') && s.summary.pipelined !== undefined);
  if (grpc.length === 0) return [];
  const best = grpc.reduce((a, b) => (b.summary.pipelined!.callsPerSec > a.summary.pipelined!.callsPerSec ? b : a));
  const baseline = best.summary.pipelined!.callsPerSec;
  return rates.map((r) => {
    const ratio = r.callsPerSec / baseline;
    return {
      scenario: `${r.label} x${inflight} (its section)`,
      transport: r.transport,
      callsPerSec: r.callsPerSec,
      baseline: `${best.label} ${best.transport} x${inflight}`,
      ratio,
      target: `>= ${kGrpcCallsPerSecRatioMin.toFixed(2)}x`,
      verdict: atLeast(ratio, kGrpcCallsPerSecRatioMin),
    };
  });
}
