import assert from 'node:assert/strict';
import { compareRuns, formatComparison, type Change } from '../bench/lib/compare.js';
import type { SubjectSummary } from '../bench/lib/rounds.js';
import type { RunResults } from '../bench/lib/results.js';

const kConfig = { rounds: 3, warmupMs: 1, durationMs: 1, maxSamples: 1, inflight: 64 };

/** A subject measured in three rounds: round-trip medians `rt` µs and calls/s `rate`. */
function summary(rt: number[], rate: number[]): SubjectSummary {
  const mid = (v: number[]) => [...v].sort((a, b) => a - b)[1]!;
  return {
    roundTrip: { medianUs: mid(rt), p99Us: mid(rt) * 2, samples: 100 },
    pipelined: { callsPerSec: mid(rate) },
    rounds: {
      roundTrip: rt.map((m) => ({ medianUs: m, p99Us: m * 2, samples: 100 })),
      pipelined: rate.map((callsPerSec) => ({ callsPerSec })),
    },
  };
}

/** The smallest results object: ours over tcp, and fan-out at one connection (a section with no per-round figures). */
function run(rt: number[], rate: number[], fanoutRate: number): RunResults {
  return {
    date: '2026-01-01T00:00:00.000Z',
    node: 'v20.0.0',
    platform: 'linux x64',
    cpus: ['cpu', 'cpu'],
    quick: true,
    config: kConfig,
    busyConfig: kConfig,
    isolateConfig: kConfig,
    shmConfig: kConfig,
    peersConfig: kConfig,
    sweepConfig: kConfig,
    tlsConfig: kConfig,
    fanoutConfig: kConfig,
    scaleConfig: { ...kConfig, soakMinutes: 0 },
    only: ['tcp', 'fanout'],
    payloadBytes: 16,
    elapsedSec: 1,
    skipped: [],
    warnings: [],
    groups: [{ transport: 'tcp', subjects: [{ key: 'ours-worker', label: 'ours worker handler', summary: summary(rt, rate) }] }],
    isolate: { transport: 'worker', subjects: [], skipped: [] },
    fanout: { rates: [{ connections: 1, ours: { callsPerSec: fanoutRate, cpuUsPerCall: 10 } }], skipped: [] },
    rows: [],
  };
}

function change(changes: Change[], id: string): Change {
  const c = changes.find((x) => x.id === id);
  assert.ok(c, `no change for ${id} in ${changes.map((x) => x.id).join(', ')}`);
  return c;
}

describe('bench compare', () => {
  it('overlapping rounds are noise, whatever the medians did', () => {
    const before = run([20, 22, 24], [100_000, 110_000, 120_000], 50_000);
    const after = run([23, 25, 27], [90_000, 100_000, 105_000], 50_000);
    const { changes } = compareRuns(before, after);
    const rt = change(changes, 'tcp: ours worker handler rt median');
    assert.equal(rt.verdict, 'noise');
    assert.ok(Math.abs(rt.changePct - ((25 - 22) / 22) * 100) < 1e-9);
    assert.deepEqual(rt.beforeRange, [20, 24]);
    assert.deepEqual(rt.afterRange, [23, 27]);
    assert.equal(change(changes, 'tcp: ours worker handler x64').verdict, 'noise');
    assert.match(formatComparison(compareRuns(before, after), { before: 'a', after: 'b' }), /No change in performance detected \(no change beyond noise/);
  });

  it('disjoint rounds: a shorter time and a higher rate improved, a longer time and a lower rate regressed', () => {
    const slow = run([40, 42, 44], [50_000, 52_000, 54_000], 50_000);
    const fast = run([20, 21, 22], [100_000, 101_000, 102_000], 50_000);
    const better = compareRuns(slow, fast).changes;
    const rt = change(better, 'tcp: ours worker handler rt median');
    assert.equal(rt.verdict, 'improved');
    assert.ok(rt.changePct < 0, 'a time that fell has a negative change');
    const rate = change(better, 'tcp: ours worker handler x64');
    assert.equal(rate.verdict, 'improved');
    assert.ok(rate.changePct > 0, 'a rate that rose has a positive change');
    assert.equal(change(better, 'tcp: ours worker handler rt p99').verdict, 'improved');

    const worse = compareRuns(fast, slow).changes;
    assert.equal(change(worse, 'tcp: ours worker handler rt median').verdict, 'regressed');
    assert.equal(change(worse, 'tcp: ours worker handler x64').verdict, 'regressed');
    const text = formatComparison(compareRuns(fast, slow), { before: 'fast.json', after: 'slow.json' });
    assert.match(text, /Performance has regressed\./);
    assert.match(text, /change: \+100\.00%/);
    assert.match(formatComparison(compareRuns(slow, fast), { before: 'a', after: 'b' }), /Performance has improved\./);
  });

  it('a section without per-round figures gets its change % and no verdict on noise', () => {
    const c = change(compareRuns(run([1, 2, 3], [1, 2, 3], 40_000), run([1, 2, 3], [1, 2, 3], 60_000)).changes, 'fanout 1 connections: ours calls/s');
    assert.equal(c.verdict, 'no spread');
    assert.equal(c.beforeRange, undefined);
    assert.ok(Math.abs(c.changePct - 50) < 1e-9);
  });

  it('says what only one run has and when the machines differ', () => {
    const before = run([1, 2, 3], [1, 2, 3], 1);
    const after: RunResults = { ...run([1, 2, 3], [1, 2, 3], 1), fanout: undefined, cpus: ['other', 'other', 'other', 'other'] };
    const c = compareRuns(before, after);
    assert.ok(c.onlyBefore.includes('fanout 1 connections: ours calls/s'));
    assert.match(c.notes.join('\n'), /different machines/);
  });
});
