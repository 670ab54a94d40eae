/**
 * SVG building blocks for the bench's charts: text measured before it is placed (no font metrics
 * here, so widths are estimated on the wide side), a horizontal grouped-bar panel and a log-log
 * line panel. Each panel is a standalone <svg> whose layout grows to fit its longest text, so no
 * label is cut off whatever the subject names are. Plain string building, no dependencies.
 */

export const kFont = "'DejaVu Sans', Verdana, Arial, sans-serif";
const kTitleSize = 15;
const kTextSize = 12;
const kSmallSize = 11;
const kBarHeight = 16;
const kRowGap = 5;
const kMargin = 12;

/** One panel: an id for the page, its title (for the HTML heading) and a standalone SVG. */
export interface Panel {
  id: string;
  title: string;
  width: number;
  height: number;
  svg: string;
}

export function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * Width of `text` in px at `size`. DejaVu Sans (the usual sans-serif on Linux) is wide: these
 * per-character factors are at or above its advance widths, so a layout made with them fits
 * whichever of the listed fonts renders it.
 */
export function textWidth(text: string, size: number): number {
  let em = 0;
  for (const ch of text) {
    if (' .,:;\'|!()[]ijlft'.includes(ch)) em += 0.42;
    else if ('mwMW@%'.includes(ch)) em += 1.02;
    else if (ch >= 'A' && ch <= 'Z') em += 0.8;
    else em += 0.68;
  }
  return Math.ceil(em * size) + 2;
}

/** Greedy word wrap of `text` into lines no wider than `width` at `size`. */
export function wrap(text: string, width: number, size: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    const next = line === '' ? word : `${line} ${word}`;
    if (line !== '' && textWidth(next, size) > width) {
      lines.push(line);
      line = word;
    } else line = next;
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** A compact figure: 3 significant digits; µs from 1,000 up as ms; k/M suffixes for the rest. */
export function human(v: number, unit = ''): string {
  const f = (x: number) => String(x >= 1000 ? Math.round(x) : +x.toPrecision(3));
  if (unit === ' µs' && v >= 1000) return `${f(v / 1000)} ms`;
  if (v >= 1e6) return `${f(v / 1e6)}M${unit}`;
  if (v >= 1e4) return `${f(v / 1e3)}k${unit}`;
  return `${f(v)}${unit}`;
}

interface Scale {
  at(v: number): number;
  ticks: number[];
}

function logScale(values: number[], length: number): Scale {
  const positive = values.filter((v) => v > 0);
  let lo = 10 ** Math.floor(Math.log10(Math.min(...positive)));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
  if (hi / lo < 100) hi = lo * 100;
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  const ticks: number[] = [];
  for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
  return { at: (v) => ((Math.log10(Math.max(v, lo)) - a) / (b - a)) * length, ticks };
}

function linearScale(values: number[], length: number): Scale {
  const max = Math.max(...values);
  const step = 10 ** Math.floor(Math.log10(max / 4));
  const nice = [1, 2, 2.5, 5, 10].map((m) => m * step).find((s) => max / s <= 6) ?? step * 10;
  const top = Math.ceil(max / nice) * nice;
  const ticks: number[] = [];
  for (let t = 0; t <= top + nice / 2; t += nice) ticks.push(t);
  return { at: (v) => (v / top) * length, ticks };
}

/** The title, and a note under it, wrapped to the panel's width; returns their SVG and height. */
function heading(title: string, note: string | undefined, width: number): { svg: string; height: number } {
  const parts: string[] = [];
  let y = kMargin;
  for (const line of wrap(title, width - 2 * kMargin, kTitleSize)) {
    y += kTitleSize + 4;
    parts.push(`<text class="title" x="${kMargin}" y="${y}" font-size="${kTitleSize}" font-weight="bold">${escape(line)}</text>`);
  }
  for (const line of note === undefined ? [] : wrap(note, width - 2 * kMargin, kSmallSize)) {
    y += kSmallSize + 4;
    parts.push(`<text class="note" x="${kMargin}" y="${y}" font-size="${kSmallSize}" fill="#444">${escape(line)}</text>`);
  }
  return { svg: parts.join('\n'), height: y + 10 };
}

function svgDocument(id: string, width: number, height: number, body: string, plotLeft: number): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" class="panel" id="${escape(id)}" data-plot-left="${plotLeft}" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" font-family="${escape(kFont)}">\n<rect width="100%" height="100%" fill="white"/>\n${body}\n</svg>`
  );
}

export interface Bar {
  /** The label drawn left of the bar. */
  label: string;
  /** Unique on the page: transport + subject + figure. */
  name: string;
  value: number;
  /** Written after the bar, after the value: a ratio, typically. */
  note?: string;
  color: string;
}

export interface BarPanelOptions {
  id: string;
  title: string;
  note?: string;
  groups: Array<{ name: string; bars: Bar[] }>;
  unit: string;
  scale: 'log' | 'linear';
  /** The axis' caption under the ticks. */
  axis: string;
}

const kPlotWidth = 520;

/** Horizontal bars in named groups; the label column and the space after the bars fit their text. */
export function barPanel(o: BarPanelOptions): Panel {
  const bars = o.groups.flatMap((g) => g.bars);
  const valueText = (b: Bar) => `${human(b.value, o.unit)}${b.note === undefined ? '' : `  ${b.note}`}`;
  const labelWidth = Math.max(...bars.map((b) => textWidth(b.label, kTextSize)), ...o.groups.map((g) => textWidth(g.name, kTextSize) - 24), 80);
  const plotLeft = kMargin + 24 + labelWidth + 8;
  const valueWidth = Math.max(...bars.map((b) => textWidth(valueText(b), kSmallSize))) + 8;
  const scale = (o.scale === 'log' ? logScale : linearScale)(bars.map((b) => b.value), kPlotWidth);
  const tickLabels = scale.ticks.map((t) => human(t, o.unit));
  const width = Math.ceil(Math.max(plotLeft + kPlotWidth + valueWidth + kMargin, plotLeft + kPlotWidth + textWidth(tickLabels.at(-1)!, kSmallSize) / 2 + kMargin, 640));
  const head = heading(o.title, o.note, width);
  const parts = [head.svg];
  let y = head.height;
  const plotTop = y;
  for (const group of o.groups) {
    y += kTextSize + 6;
    parts.push(`<text class="group" x="${kMargin}" y="${y}" font-size="${kTextSize}" font-weight="bold">${escape(group.name)}</text>`);
    y += 4;
    for (const bar of group.bars) {
      const w = Math.max(1, scale.at(bar.value));
      const base = y + kBarHeight - 4;
      parts.push(
        `<text class="label" x="${plotLeft - 8}" y="${base}" font-size="${kTextSize}" text-anchor="end">${escape(bar.label)}</text>`,
        `<rect class="bar" data-name="${escape(bar.name)}" x="${plotLeft}" y="${y}" width="${w.toFixed(1)}" height="${kBarHeight}" fill="${bar.color}"><title>${escape(`${bar.name}: ${valueText(bar)}`)}</title></rect>`,
        `<text class="value" x="${(plotLeft + w + 5).toFixed(1)}" y="${base}" font-size="${kSmallSize}" fill="#222">${escape(valueText(bar))}</text>`,
      );
      y += kBarHeight + kRowGap;
    }
  }
  const plotBottom = y + 2;
  const grid: string[] = [];
  for (const [i, t] of scale.ticks.entries()) {
    const x = plotLeft + scale.at(t);
    grid.push(`<line x1="${x.toFixed(1)}" y1="${plotTop}" x2="${x.toFixed(1)}" y2="${plotBottom}" stroke="#e2e2e2"/>`);
    parts.push(`<text class="tick" x="${x.toFixed(1)}" y="${plotBottom + 14}" font-size="${kSmallSize}" text-anchor="middle" fill="#555">${escape(tickLabels[i]!)}</text>`);
  }
  parts.push(`<text class="axis" x="${plotLeft}" y="${plotBottom + 32}" font-size="${kSmallSize}" fill="#555">${escape(o.axis)}</text>`);
  const height = plotBottom + 32 + kMargin;
  // Grid lines go first so the bars are drawn over them.
  return { id: o.id, title: o.title, width, height, svg: svgDocument(o.id, width, height, [...grid, ...parts].join('\n'), plotLeft) };
}

export interface Series {
  label: string;
  name: string;
  color: string;
  points: Array<{ x: number; y: number }>;
  /** A horizontal line at this y across the plot (a ceiling) instead of a polyline. */
  level?: number;
  /** Points only, no line (a figure measured at one size). */
  markers?: boolean;
}

export interface LinePanelOptions {
  id: string;
  title: string;
  note?: string;
  series: Series[];
  xLabel(x: number): string;
  yUnit: string;
  axis: string;
}

const kLinePlotHeight = 260;

/** A log-log line chart; the legend sits right of the plot, one series a line. */
export function linePanel(o: LinePanelOptions): Panel {
  const xs = [...new Set(o.series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const ys = o.series.flatMap((s) => [...s.points.map((p) => p.y), ...(s.level === undefined ? [] : [s.level])]).filter((v) => v > 0);
  const yScale = logScale(ys, kLinePlotHeight);
  const yTickLabels = yScale.ticks.map((t) => human(t, o.yUnit));
  const plotLeft = kMargin + Math.max(...yTickLabels.map((l) => textWidth(l, kSmallSize))) + 8;
  const xAt = (x: number) => (xs.length < 2 ? kPlotWidth / 2 : ((Math.log(x) - Math.log(xs[0]!)) / (Math.log(xs.at(-1)!) - Math.log(xs[0]!))) * kPlotWidth);
  const legendLeft = plotLeft + kPlotWidth + textWidth(o.xLabel(xs.at(-1) ?? 1), kSmallSize) / 2 + 16;
  const legendWidth = Math.max(...o.series.map((s) => textWidth(s.label, kSmallSize))) + 26;
  const width = Math.ceil(Math.max(legendLeft + legendWidth + kMargin, 640));
  const head = heading(o.title, o.note, width);
  const plotTop = head.height + 8;
  const plotBottom = plotTop + kLinePlotHeight;
  const parts = [head.svg];
  for (const [i, t] of yScale.ticks.entries()) {
    const y = plotBottom - yScale.at(t);
    parts.push(`<line x1="${plotLeft}" y1="${y.toFixed(1)}" x2="${plotLeft + kPlotWidth}" y2="${y.toFixed(1)}" stroke="#e2e2e2"/>`);
    parts.push(`<text class="tick" x="${plotLeft - 6}" y="${(y + 4).toFixed(1)}" font-size="${kSmallSize}" text-anchor="end" fill="#555">${escape(yTickLabels[i]!)}</text>`);
  }
  // x tick labels sit low enough that the first clears the lowest y tick label at the corner.
  for (const x of xs) {
    const px = plotLeft + xAt(x);
    parts.push(`<line x1="${px.toFixed(1)}" y1="${plotTop}" x2="${px.toFixed(1)}" y2="${plotBottom}" stroke="#f0f0f0"/>`);
    parts.push(`<text class="tick" x="${px.toFixed(1)}" y="${plotBottom + 19}" font-size="${kSmallSize}" text-anchor="middle" fill="#555">${escape(o.xLabel(x))}</text>`);
  }
  const legendLine = kSmallSize + 8;
  // A legend taller than the plot pushes the panel's height down rather than running off it.
  const legendBottom = plotTop + o.series.length * legendLine;
  o.series.forEach((s, i) => {
    const title = `<title>${escape(s.name)}</title>`;
    if (s.level !== undefined) {
      const y = plotBottom - yScale.at(s.level);
      parts.push(`<line class="series" data-name="${escape(s.name)}" x1="${plotLeft}" y1="${y.toFixed(1)}" x2="${plotLeft + kPlotWidth}" y2="${y.toFixed(1)}" stroke="${s.color}" stroke-width="2" stroke-dasharray="6 4">${title}</line>`);
    } else if (s.markers === true || s.points.length === 1) {
      for (const p of s.points) {
        parts.push(`<circle class="series" data-name="${escape(s.name)}" cx="${(plotLeft + xAt(p.x)).toFixed(1)}" cy="${(plotBottom - yScale.at(p.y)).toFixed(1)}" r="5" fill="${s.color}">${title}</circle>`);
      }
    } else {
      const pts = s.points.filter((p) => p.y > 0).map((p) => `${(plotLeft + xAt(p.x)).toFixed(1)},${(plotBottom - yScale.at(p.y)).toFixed(1)}`);
      parts.push(`<polyline class="series" data-name="${escape(s.name)}" points="${pts.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2.5">${title}</polyline>`);
    }
    const ly = plotTop + i * legendLine + kSmallSize;
    parts.push(`<rect x="${legendLeft}" y="${ly - kSmallSize + 2}" width="14" height="${kSmallSize - 2}" fill="${s.color}"/>`);
    parts.push(`<text class="legend" x="${legendLeft + 20}" y="${ly}" font-size="${kSmallSize}">${escape(s.label)}</text>`);
  });
  const bottom = Math.max(plotBottom + 38, legendBottom + 8);
  parts.push(`<text class="axis" x="${plotLeft}" y="${plotBottom + 37}" font-size="${kSmallSize}" fill="#555">${escape(o.axis)}</text>`);
  const height = bottom + kMargin;
  return { id: o.id, title: o.title, width, height, svg: svgDocument(o.id, width, height, parts.join('\n'), plotLeft) };
}
