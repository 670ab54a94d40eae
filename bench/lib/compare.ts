/**
 * Before and after: each figure of a run against the same figure of an earlier one, in the manner
 * of criterion's change report. A change counts only when the two runs' per-round ranges do not
 * overlap; a figure whose section keeps no per-round figures gets its change % and says so,
 * rather than a spread made up for it.
 */

import { figuresOf, type Figure } from './figures.js';
import type { RunResults } from './results.js';

export type ChangeVerdict = 'improved' | 'regressed' | 'noise' | 'no spread';

export interface Change {
  id: string;
  unit: string;
  better: Figure['better'];
  before: number;
  after: number;
  /** (after - before) / before, in percent; its sign is the figure's, not better-or-worse. */
  changePct: number;
  /** [lowest, highest] of each run's rounds; absent where either run keeps no per-round figures. */
  beforeRange?: [number, number];
  afterRange?: [number, number];
  verdict: ChangeVerdict;
}

export interface Comparison {
  changes: Change[];
  /** Figures only one of the two runs has (sections not run, subjects renamed). */
  onlyBefore: string[];
  onlyAfter: string[];
  /** What differs between the two runs' machines, commits and modes. */
  notes: string[];
}

function range(values: readonly number[]): [number, number] {
  return [Math.min(...values), Math.max(...values)];
}

/** The verdict for one figure: ranges that overlap are noise; otherwise the direction decides. */
export function changeOf(before: Figure, after: Figure): Change {
  const changePct = ((after.value - before.value) / before.value) * 100;
  const base = { id: before.id, unit: before.unit, better: before.better, before: before.value, after: after.value, changePct };
  if (before.rounds === undefined || after.rounds === undefined || before.rounds.length === 0 || after.rounds.length === 0) {
    return { ...base, verdict: 'no spread' };
  }
  const beforeRange = range(before.rounds);
  const afterRange = range(after.rounds);
  const overlap = beforeRange[0] <= afterRange[1] && afterRange[0] <= beforeRange[1];
  const rose = afterRange[0] > beforeRange[1];
  const verdict: ChangeVerdict = overlap ? 'noise' : rose === (before.better === 'higher') ? 'improved' : 'regressed';
  return { ...base, beforeRange, afterRange, verdict };
}

/** Every figure both runs have, in the later run's order. */
export function compareRuns(before: RunResults, after: RunResults): Comparison {
  const old = new Map(figuresOf(before).map((f) => [f.id, f]));
  const now = figuresOf(after);
  const changes: Change[] = [];
  for (const f of now) {
    const b = old.get(f.id);
    if (b !== undefined && b.value !== 0) changes.push(changeOf(b, f));
  }
  const nowIds = new Set(now.map((f) => f.id));
  const notes: string[] = [];
  // Runs kept before the machine was recorded still have their CPUs and node: compare those then.
  const both = before.machine !== undefined && after.machine !== undefined;
  const describe = (r: RunResults) =>
    `${r.cpus.length} x ${r.cpus[0] ?? 'unknown CPU'}, node ${r.node}${both ? `, kernel ${r.machine!.kernel}` : ''}`;
  if (describe(before) !== describe(after)) notes.push(`different machines: before ${describe(before)}; after ${describe(after)}`);
  if (before.quick !== after.quick) notes.push(`before was a ${before.quick ? 'quick' : 'full'} run, after a ${after.quick ? 'quick' : 'full'} one: rounds differ in number and length`);
  return {
    changes,
    onlyBefore: [...old.keys()].filter((id) => !nowIds.has(id)),
    onlyAfter: now.filter((f) => !old.has(f.id)).map((f) => f.id),
    notes,
  };
}

function num(v: number): string {
  const a = Math.abs(v);
  return a >= 1000 ? Math.round(v).toLocaleString('en-US') : a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

const kVerdictText: Record<ChangeVerdict, string> = {
  improved: 'Performance has improved.',
  regressed: 'Performance has regressed.',
  noise: 'No change in performance detected (no change beyond noise: the rounds overlap).',
  'no spread': 'Spread unknown: this section keeps no per-round figures.',
};

/** The report as text: one block per figure, then a count of each verdict. */
export function formatComparison(c: Comparison, names: { before: string; after: string }): string {
  const out: string[] = [`comparing ${names.after} (after) against ${names.before} (before)`, ...c.notes.map((n) => `note: ${n}`), ''];
  for (const ch of c.changes) {
    const sign = ch.changePct >= 0 ? '+' : '';
    const spread =
      ch.beforeRange === undefined || ch.afterRange === undefined
        ? ''
        : `  rounds: before ${num(ch.beforeRange[0])}..${num(ch.beforeRange[1])}, after ${num(ch.afterRange[0])}..${num(ch.afterRange[1])}`;
    out.push(`${ch.id}`);
    out.push(`    ${num(ch.before)} -> ${num(ch.after)} ${ch.unit}  change: ${sign}${ch.changePct.toFixed(2)}% (${ch.better} is better)${spread}`);
    out.push(`    ${kVerdictText[ch.verdict]}`);
  }
  const count = (v: ChangeVerdict) => c.changes.filter((ch) => ch.verdict === v).length;
  out.push(
    '',
    `${c.changes.length} figures compared: ${count('improved')} improved, ${count('regressed')} regressed, ` +
      `${count('noise')} no change beyond noise, ${count('no spread')} without per-round figures (change % only)`,
  );
  if (c.onlyBefore.length > 0) out.push(`only in before (not measured after): ${c.onlyBefore.length} figures, e.g. ${c.onlyBefore.slice(0, 3).join('; ')}`);
  if (c.onlyAfter.length > 0) out.push(`only in after (new): ${c.onlyAfter.length} figures, e.g. ${c.onlyAfter.slice(0, 3).join('; ')}`);
  return `${out.join('\n')}\n`;
}
