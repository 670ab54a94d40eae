/**
 * One run as a page: the panels stacked in one SVG file (latest.svg), and an HTML page
 * (latest.html) with the which-transport table, the same panels and the text table. Both are
 * made from the results object alone, so a kept run can be drawn again.
 */

import type { RunResults } from '../results.js';
import { formatTable } from '../table.js';
import { whichTransport } from '../which.js';
import { panelsOf } from './panels.js';
import { escape, kFont } from './svg.js';

const kGap = 16;

/** One line naming the run: quick or full, when, which commit, on what machine. */
export function caption(r: RunResults): string {
  const machine = r.machine === undefined ? `${r.cpus.length} CPUs, node ${r.node}` : `${r.machine.cpuCount} x ${r.machine.cpuModel}, node ${r.machine.node}, kernel ${r.machine.kernel}`;
  return `ogurpchik bench, ${r.quick ? 'quick' : 'full'} run, ${r.date.slice(0, 16).replace('T', ' ')} UTC${r.commit === undefined ? '' : `, commit ${r.commit}`}; ${machine}`;
}

/** Every panel of the run, one under the other, in one SVG document. */
export function renderSvg(r: RunResults): string {
  const panels = panelsOf(r);
  const width = Math.max(640, ...panels.map((p) => p.width));
  const parts: string[] = [`<text x="12" y="22" font-size="14" font-weight="bold">${escape(caption(r))}</text>`];
  let y = 34;
  for (const p of panels) {
    // Nested <svg> elements keep each panel's own coordinates; the xmlns is the outer one's.
    parts.push(p.svg.replace(' xmlns="http://www.w3.org/2000/svg"', '').replace('<svg ', `<svg x="0" y="${y}" `));
    y += p.height + kGap;
  }
  if (panels.length === 0) parts.push(`<text x="12" y="${y + 16}" font-size="13">no section with a chart was run</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 20}" font-family="${escape(kFont)}">\n<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}

function whichTable(r: RunResults): string {
  const rows = r.which ?? whichTransport(r);
  if (rows.length === 0) return '<p>No section that answers it was run.</p>';
  const cells = (c: string[], tag: string) => `<tr>${c.map((x) => `<${tag}>${escape(x)}</${tag}>`).join('')}</tr>`;
  return [
    '<table class="which">',
    cells(['use', 'won in this run', 'figure', 'vs raw', 'vs best peer'], 'th'),
    ...rows.map((w) => cells([w.use, w.winner, w.figure, w.vsRaw, w.vsPeer], 'td')),
    '</table>',
  ].join('\n');
}

/** The page: caption, which-transport table, the panels, the text table and the run's warnings. */
export function renderHtml(r: RunResults): string {
  const panels = panelsOf(r);
  const sections = panels.map((p) => `<section class="chart" data-panel="${escape(p.id)}">\n${p.svg}\n</section>`);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escape(caption(r))}</title>
<style>
body { font-family: ${kFont}; margin: 16px; color: #111; }
table.which { border-collapse: collapse; margin: 8px 0 20px; }
table.which th, table.which td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 13px; }
section.chart { margin: 0 0 18px; overflow-x: auto; }
pre { font-size: 12px; background: #f6f6f6; padding: 8px; overflow-x: auto; }
</style>
</head>
<body>
<h1 style="font-size:18px">${escape(caption(r))}</h1>
<h2 style="font-size:16px">Which transport</h2>
<p style="font-size:13px">From this run's figures: for each use, the transport of ours that won, its figure, and its ratio to raw sockets and to the best peer measured (for times below 1 is better, for rates above 1).</p>
${whichTable(r)}
${sections.join('\n')}
<h2 style="font-size:16px">Table</h2>
<pre>${escape(formatTable(r.rows))}</pre>
${r.warnings.length === 0 && r.skipped.length === 0 ? '' : `<pre>${escape([...r.warnings, ...r.skipped.map((s) => `skipped: ${s}`)].join('\n'))}</pre>`}
</body>
</html>
`;
}
