/**
 * An SVG chart of one bench run: round-trip latency and calls/s per scenario (log scales, since
 * they span three orders of magnitude), and MB/s against payload size from the sweep. Plain
 * string building, no dependencies; the SVG opens in any browser.
 */
import type { SweepResult } from '../sweep.js';
import type { ResultRow } from './table.js';

const kWidth = 1000;
const kLabelWidth = 330;
const kBarHeight = 16;
const kGap = 4;
const kColors = ['#3b6ea5', '#c0504d', '#9bbb59', '#8064a2', '#f79646', '#4bacc6', '#7f7f7f', '#d4a017'];

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Maps a value on a log scale [lo, hi] to [0, width]. */
function logScale(lo: number, hi: number, width: number): (v: number) => number {
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  return (v) => (Math.max(0, Math.min(b, Math.log10(Math.max(v, lo))) - a) / (b - a)) * width;
}

function decadeTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let t = 10 ** Math.floor(Math.log10(lo)); t <= hi * 1.0001; t *= 10) if (t >= lo) ticks.push(t);
  return ticks;
}

function human(v: number, unit: string): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M${unit}`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k${unit}`;
  return `${v < 1 ? +v.toPrecision(2) : +v.toFixed(1)}${unit}`;
}

/** One panel of horizontal bars on a log axis; returns its SVG and height. */
function barPanel(title: string, bars: { label: string; value: number; marker?: number; color: string }[], lo: number, hi: number, unit: string, y0: number): { svg: string; height: number } {
  const plotWidth = kWidth - kLabelWidth - 90;
  const x = logScale(lo, hi, plotWidth);
  const parts: string[] = [`<text x="10" y="${y0 + 18}" font-size="15" font-weight="bold">${escape(title)}</text>`];
  const top = y0 + 34;
  const height = bars.length * (kBarHeight + kGap);
  for (const t of decadeTicks(lo, hi)) {
    const tx = kLabelWidth + x(t);
    parts.push(`<line x1="${tx}" y1="${top - 4}" x2="${tx}" y2="${top + height}" stroke="#ddd"/>`);
    parts.push(`<text x="${tx}" y="${top + height + 14}" font-size="10" text-anchor="middle" fill="#555">${human(t, unit)}</text>`);
  }
  bars.forEach((bar, i) => {
    const y = top + i * (kBarHeight + kGap);
    const w = Math.max(1, x(bar.value));
    parts.push(`<text x="${kLabelWidth - 6}" y="${y + kBarHeight - 4}" font-size="11" text-anchor="end">${escape(bar.label)}</text>`);
    parts.push(`<rect x="${kLabelWidth}" y="${y}" width="${w.toFixed(1)}" height="${kBarHeight}" fill="${bar.color}"/>`);
    if (bar.marker !== undefined) {
      const mx = kLabelWidth + x(bar.marker);
      parts.push(`<line x1="${mx}" y1="${y}" x2="${mx}" y2="${y + kBarHeight}" stroke="#222" stroke-width="2"><title>p99 ${human(bar.marker, unit)}</title></line>`);
    }
    parts.push(`<text x="${kLabelWidth + w + 4}" y="${y + kBarHeight - 4}" font-size="10" fill="#333">${human(bar.value, unit)}</text>`);
  });
  return { svg: parts.join('\n'), height: 34 + height + 26 };
}

function sweepPanel(sweep: SweepResult, y0: number): { svg: string; height: number } {
  const plotWidth = kWidth - kLabelWidth - 90;
  const plotHeight = 220;
  const sizes = [...new Set(sweep.subjects.flatMap((s) => s.points.map((p) => p.bytes)))].sort((a, b) => a - b);
  const values = sweep.subjects.flatMap((s) => s.points.map((p) => p.mbPerSec)).filter((v) => v > 0);
  if (sizes.length < 2 || values.length === 0) return { svg: '', height: 0 };
  const lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...values)));
  const sx = logScale(sizes[0], sizes[sizes.length - 1], plotWidth);
  const sy = logScale(lo, hi, plotHeight);
  const top = y0 + 34;
  const parts: string[] = [`<text x="10" y="${y0 + 18}" font-size="15" font-weight="bold">Payload sweep: MB/s by payload size, one call in flight (log-log)</text>`];
  for (const t of decadeTicks(lo, hi)) {
    const ty = top + plotHeight - sy(t);
    parts.push(`<line x1="${kLabelWidth}" y1="${ty}" x2="${kLabelWidth + plotWidth}" y2="${ty}" stroke="#ddd"/>`);
    parts.push(`<text x="${kLabelWidth - 6}" y="${ty + 4}" font-size="10" text-anchor="end" fill="#555">${human(t, ' MB/s')}</text>`);
  }
  for (const b of sizes) {
    const tx = kLabelWidth + sx(b);
    const label = b >= 1 << 20 ? `${b / (1 << 20)} MiB` : b >= 1024 ? `${b / 1024} KiB` : `${b} B`;
    parts.push(`<text x="${tx}" y="${top + plotHeight + 14}" font-size="10" text-anchor="middle" fill="#555">${label}</text>`);
  }
  sweep.subjects.forEach((subject, i) => {
    const color = kColors[i % kColors.length];
    const pts = subject.points.filter((p) => p.mbPerSec > 0).map((p) => `${(kLabelWidth + sx(p.bytes)).toFixed(1)},${(top + plotHeight - sy(p.mbPerSec)).toFixed(1)}`);
    parts.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${color}" stroke-width="2"/>`);
    parts.push(`<text x="10" y="${top + 16 + i * 16}" font-size="11" fill="${color}">■ ${escape(`${subject.label} (${subject.transport})`)}</text>`);
  });
  return { svg: parts.join('\n'), height: 34 + plotHeight + 30 };
}

/** The chart for one run's rows (and sweep, if measured). */
export function renderChart(rows: ResultRow[], sweep: SweepResult | undefined, title: string): string {
  const transports = [...new Set(rows.map((r) => r.transport))];
  const color = (r: ResultRow) => kColors[transports.indexOf(r.transport) % kColors.length];
  const latency = rows
    .filter((r) => r.medianUs !== undefined && r.medianUs > 0 && r.callsPerSec === undefined && r.mbPerSec === undefined && !r.scenario.startsWith('  '))
    .map((r) => ({ label: `${r.scenario} [${r.transport}]`, value: r.medianUs!, marker: r.p99Us, color: color(r) }));
  const rate = rows
    // Indented rows are bounds derived from measured rows (floor, ceiling): drawn once, as measured.
    .filter((r) => r.callsPerSec !== undefined && r.callsPerSec > 0 && !r.scenario.startsWith('  '))
    .map((r) => ({ label: `${r.scenario} [${r.transport}]`, value: r.callsPerSec!, color: color(r) }));
  let y = 40;
  const body: string[] = [`<text x="10" y="24" font-size="17" font-weight="bold">${escape(title)}</text>`];
  if (latency.length > 0) {
    const values = latency.flatMap((b) => [b.value, b.marker ?? b.value]);
    const panel = barPanel('Round trip, median (bar) and p99 (tick), µs, log scale', latency, 10 ** Math.floor(Math.log10(Math.min(...values))), 10 ** Math.ceil(Math.log10(Math.max(...values))), ' µs', y);
    body.push(panel.svg);
    y += panel.height;
  }
  if (rate.length > 0) {
    const values = rate.map((b) => b.value);
    const panel = barPanel('Calls/s with 64 in flight, log scale', rate, 10 ** Math.floor(Math.log10(Math.min(...values))), 10 ** Math.ceil(Math.log10(Math.max(...values))), '/s', y);
    body.push(panel.svg);
    y += panel.height;
  }
  if (sweep !== undefined) {
    const panel = sweepPanel(sweep, y);
    body.push(panel.svg);
    y += panel.height;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${kWidth}" height="${y + 10}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n${body.join('\n')}\n</svg>\n`;
}
