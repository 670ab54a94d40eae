/**
 * The shape of one run's results (bench/results/latest.json and runs/*.json), and the facts about
 * the run that make two of them comparable: the commit it measured and the machine it ran on.
 * The chart, the which-transport table and the comparison read this object, never the text table.
 */

import { execFileSync } from 'node:child_process';
import { cpus, release } from 'node:os';
import type { BusyHostResult } from '../busy-host.js';
import type { FanoutResult } from '../fanout.js';
import type { HandshakeResult } from '../handshake.js';
import type { IsolateResult } from '../isolate.js';
import type { PeersResult } from '../peers.js';
import type { ScaleConfig, ScaleResult } from '../scale.js';
import type { ShmResult } from '../shm.js';
import type { SweepConfig, SweepResult } from '../sweep.js';
import type { TlsResult } from '../tls.js';
import type { ViewResult } from '../view.js';
import type { IdleResult } from '../idle.js';
import type { BenchConfig, SubjectSummary } from './rounds.js';
import type { SocketKind } from './subject.js';
import type { ResultRow } from './table.js';

/** One transport's interleaved subjects (the tcp and unix sections). */
export interface GroupResult {
  transport: SocketKind;
  subjects: Array<{ key: string; label: string; summary: SubjectSummary }>;
}

/** Where a run ran: what a comparison has to match before its figures mean anything. */
export interface Machine {
  cpuModel: string;
  cpuCount: number;
  node: string;
  kernel: string;
  platform: string;
}

/** One line of the which-transport table (lib/which.ts). */
export interface WhichRow {
  use: string;
  winner: string;
  figure: string;
  vsRaw: string;
  vsPeer: string;
}

/** Everything one run writes; sections not run are absent (or empty, for isolate). */
export interface RunResults {
  date: string;
  /** `git rev-parse --short HEAD`, with `-dirty` when the tree had changes; 'unknown' outside git. */
  commit?: string;
  machine?: Machine;
  node: string;
  platform: string;
  cpus: string[];
  quick: boolean;
  config: BenchConfig;
  busyConfig: BenchConfig;
  isolateConfig: BenchConfig;
  shmConfig: BenchConfig;
  peersConfig: BenchConfig;
  sweepConfig: SweepConfig;
  tlsConfig: BenchConfig;
  fanoutConfig: BenchConfig;
  scaleConfig: ScaleConfig;
  only: string[];
  payloadBytes: number;
  elapsedSec: number;
  skipped: string[];
  warnings: string[];
  groups: GroupResult[];
  shm?: ShmResult;
  isolate: IsolateResult;
  busyHost?: BusyHostResult;
  handshake?: HandshakeResult;
  peers?: PeersResult;
  sweep?: SweepResult;
  tls?: TlsResult;
  view?: ViewResult;
  /** The idle policy's presets (bench/idle.ts). */
  idle?: IdleResult;
  fanout?: FanoutResult;
  scale?: ScaleResult;
  rows: ResultRow[];
  which?: WhichRow[];
}

/** This machine, as a comparison needs it. */
export function machineInfo(): Machine {
  const cpu = cpus();
  return {
    cpuModel: cpu[0]?.model.trim() ?? 'unknown CPU',
    cpuCount: cpu.length,
    node: process.version,
    kernel: release(),
    platform: `${process.platform} ${process.arch}`,
  };
}

/** The commit in `dir`, marked dirty when tracked files differ from it; 'unknown' when git cannot say. */
export function commitId(dir: string): string {
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const head = git('rev-parse', '--short', 'HEAD');
    // Untracked files (results written by earlier runs) do not change what was measured.
    return git('status', '--porcelain', '--untracked-files=no') === '' ? head : `${head}-dirty`;
  } catch {
    return 'unknown';
  }
}

/** The file name a run is kept under: its date (colons would not survive every file system) and commit. */
export function runFileName(results: Pick<RunResults, 'date' | 'commit'>): string {
  const date = results.date.replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  return `${date}-${results.commit ?? 'unknown'}.json`;
}
