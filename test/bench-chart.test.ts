import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { renderHtml, renderSvg } from '../bench/lib/chart/page.js';
import { panelsOf } from '../bench/lib/chart/panels.js';
import type { RunResults } from '../bench/lib/results.js';
import { whichTransport } from '../bench/lib/which.js';
import { tempDir } from './helpers.js';

const kChromium = '/usr/bin/chromium';
const kAllPanels = ['panel-round-trip', 'panel-calls', 'panel-fanout', 'panel-sweep', 'panel-busy'];

/** A real quick run (tcp, unix, shm, isolate, busy, peers, sweep, fanout): every panel has data. */
function fixture(): RunResults {
  return JSON.parse(fs.readFileSync(new URL('../../test/fixtures/bench-results.json', import.meta.url), 'utf8')) as RunResults;
}

/**
 * Runs in the page: measures every <text> of every panel with getBBox() and writes what is wrong
 * into the DOM as JSON, for --dump-dom to carry out. A label must lie inside its SVG and left of
 * the plot it labels, and no two texts of a panel may overlap.
 */
const kChecker = `<script>
(() => {
  const problems = [];
  const panels = [...document.querySelectorAll('svg.panel')];
  let texts = 0;
  for (const svg of panels) {
    const w = Number(svg.getAttribute('width')), h = Number(svg.getAttribute('height'));
    const plotLeft = Number(svg.dataset.plotLeft);
    const boxes = [];
    for (const t of svg.querySelectorAll('text')) {
      texts++;
      const b = t.getBBox();
      const what = svg.id + ': "' + t.textContent + '"';
      if (b.width <= 0) problems.push(what + ' has no width');
      if (b.x < 0 || b.y < 0 || b.x + b.width > w + 0.5 || b.y + b.height > h + 0.5) problems.push(what + ' leaves its panel (' + [b.x, b.y, b.width, b.height].map(Math.round) + ' in ' + w + 'x' + h + ')');
      if (t.classList.contains('label') && b.x + b.width > plotLeft) problems.push(what + ' runs into the bars (right edge ' + Math.round(b.x + b.width) + ' > ' + plotLeft + ')');
      boxes.push([b, t.textContent]);
    }
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [a, at] = boxes[i], [b, bt] = boxes[j];
      if (a.x < b.x + b.width - 0.5 && b.x < a.x + a.width - 0.5 && a.y < b.y + b.height - 0.5 && b.y < a.y + a.height - 0.5) problems.push(svg.id + ': "' + at + '" overlaps "' + bt + '"');
    }
  }
  const names = [...document.querySelectorAll('[data-name]')].map((e) => e.dataset.name);
  const out = document.createElement('pre');
  out.id = 'verdict';
  out.textContent = JSON.stringify({ panels: panels.map((p) => p.id), texts, names, problems });
  document.body.appendChild(out);
})();
</script>`;

/** A panel drawn wrong on purpose: its label is wider than the label column and runs off the left edge. */
const kControl =
  '<svg xmlns="http://www.w3.org/2000/svg" class="panel" id="control-clipped" data-plot-left="100" width="300" height="40" viewBox="0 0 300 40">' +
  '<text class="label" x="120" y="24" font-size="12" text-anchor="end">a label far too long for its column of one hundred px</text>' +
  '<rect x="100" y="12" width="50" height="16" fill="#888"/></svg>';

/** Chromium headless with a fresh profile; resolves with its stdout, killed (by pid) if it outlives `timeoutMs`. */
function chromium(args: string[], profile: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      kChromium,
      ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`, ...args],
      { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    // Its renderer and GPU processes are in its process group: end them with it.
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // The group has already gone.
      }
      if (code === 0) resolve(out);
      else reject(new Error(`chromium exited with ${code}: ${err.slice(-2000)}`));
    });
  });
}

describe('bench chart', function () {
  this.timeout(150_000);

  it('leaves out the panels of sections not run', () => {
    const r = fixture();
    const tcpOnly: RunResults = { ...r, groups: r.groups.filter((g) => g.transport === 'tcp'), shm: undefined, isolate: { ...r.isolate, subjects: [] }, busyHost: undefined, peers: undefined, sweep: undefined, fanout: undefined };
    assert.deepEqual(panelsOf(tcpOnly).map((p) => p.id), ['panel-round-trip', 'panel-calls']);
    assert.deepEqual(panelsOf(r).map((p) => p.id), kAllPanels);
    const which = whichTransport(tcpOnly).map((w) => w.use);
    assert.deepEqual(which, ['lowest latency, same machine', 'most calls/s', 'across machines (tcp)']);
  });

  it('which-transport rows come from the run: the lowest ours round trip wins', () => {
    const r = fixture();
    const ours = [...r.groups.flatMap((g) => g.subjects.filter((s) => s.key === 'ours-worker' || s.key === 'ours-main').map((s) => ({ at: `${g.transport}: ${s.label}`, rt: s.summary.roundTrip.medianUs }))), ...r.shm!.subjects.filter((s) => s.key === 'ours-worker' || s.key === 'ours-main').map((s) => ({ at: `shm: ${s.label}`, rt: s.summary.roundTrip.medianUs }))];
    const fastest = ours.reduce((a, b) => (b.rt < a.rt ? b : a));
    const row = whichTransport(r).find((w) => w.use === 'lowest latency, same machine')!;
    assert.equal(row.winner, fastest.at);
    assert.deepEqual(whichTransport(r).map((w) => w.use), ['lowest latency, same machine', 'most calls/s', 'large payloads', 'busy host (main thread blocked)', 'across machines (tcp)', 'plugins in-process']);
  });

  it('renders every panel in headless Chromium with every label whole and every bar named once', async function () {
    if (!fs.existsSync(kChromium)) {
      // .ci/run installs Debian's chromium: under CI a missing browser is a failure, elsewhere a skip.
      if (process.env.CI) throw new Error(`${kChromium} is missing (.ci/run installs the chromium package)`);
      this.skip();
    }
    const tmp = tempDir();
    try {
      const html = renderHtml(fixture()).replace('</body>', `${kControl}\n${kChecker}\n</body>`);
      const page = path.join(tmp.dir, 'page.html');
      fs.writeFileSync(page, html);
      const dom = await chromium(['--virtual-time-budget=5000', '--dump-dom', `file://${page}`], path.join(tmp.dir, 'profile-dom'));
      const m = /<pre id="verdict">([^<]*)<\/pre>/.exec(dom);
      assert.ok(m, 'the checker wrote no verdict into the page');
      const verdict = JSON.parse(m[1]!.replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')) as { panels: string[]; texts: number; names: string[]; problems: string[] };
      assert.deepEqual(verdict.panels, [...kAllPanels, 'control-clipped']);
      // The control proves the checker sees a clipped label; the real panels must have none.
      assert.ok(verdict.problems.some((p) => p.startsWith('control-clipped:') && p.includes('leaves its panel')), verdict.problems.join('\n'));
      assert.ok(verdict.problems.some((p) => p.startsWith('control-clipped:') && p.includes('runs into the bars')), verdict.problems.join('\n'));
      assert.deepEqual(verdict.problems.filter((p) => !p.startsWith('control-clipped:')), []);
      assert.ok(verdict.texts > 100, `only ${verdict.texts} texts measured`);
      assert.ok(verdict.names.length > 60, `only ${verdict.names.length} named bars and series`);
      assert.deepEqual(verdict.names.filter((n, i) => verdict.names.indexOf(n) !== i), [], 'bar names repeat');

      // The stacked SVG file and a screenshot of the page, for a person to look at (BENCH_CHART_PNG keeps it).
      const svg = renderSvg(fixture());
      for (const id of kAllPanels) assert.ok(svg.includes(`id="${id}"`), `${id} missing from latest.svg`);
      const png = process.env.BENCH_CHART_PNG ?? path.join(tmp.dir, 'page.png');
      await chromium(['--hide-scrollbars', '--window-size=1200,3600', `--screenshot=${png}`, `file://${page}`], path.join(tmp.dir, 'profile-png'));
      const head = fs.readFileSync(png).subarray(0, 8);
      assert.deepEqual([...head], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'not a PNG');
    } finally {
      tmp.remove();
    }
  });
});
