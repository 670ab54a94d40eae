import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { caption } from '../bench/lib/chart/page.js';
import { kGeneratedMarker, renderMarkdown } from '../bench/lib/markdown.js';
import type { RunResults } from '../bench/lib/results.js';
import { whichTransport } from '../bench/lib/which.js';
import { tempDir } from './helpers.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const fixturePath = path.join(repo, 'test/fixtures/bench-results.json');

function fixture(): RunResults {
  return JSON.parse(fs.readFileSync(fixturePath, 'utf8')) as RunResults;
}

describe('bench results page (docs/BENCH-RESULTS.md)', function () {
  this.timeout(20_000);

  it('shows every row, the which-transport table and each missed target of the run it is made from', () => {
    const r = fixture();
    const page = renderMarkdown(r, { source: 'fixture.json' });
    assert.ok(page.startsWith(kGeneratedMarker));
    assert.ok(page.includes(caption(r)), 'names the run');
    for (const row of r.rows) assert.ok(page.includes(row.scenario), `row "${row.scenario}" missing`);
    for (const w of r.which ?? whichTransport(r)) assert.ok(page.includes(`| ${w.use} | ${w.winner} |`), `which row "${w.use}" missing`);
    const missed = r.rows.filter((x) => x.verdict === 'MISS');
    const passed = r.rows.filter((x) => x.verdict === 'PASS');
    assert.ok(page.includes(`${passed.length} rows meet their target and ${missed.length} miss it`));
    for (const m of missed) assert.ok(page.includes(`| ${m.scenario.trim()} | ${m.transport} |`), `missed row "${m.scenario}" not listed`);
  });

  it('is written by `bench/report.js` from a kept run, chart beside it', async () => {
    const tmp = tempDir();
    after(() => tmp.remove());
    const out = tmp.dir;
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(repo, 'dist/bench/report.js'), fixturePath, '--out', out], { timeout: 15_000 });
    assert.match(stdout, /wrote BENCH-RESULTS\.md/);
    const page = fs.readFileSync(path.join(out, 'BENCH-RESULTS.md'), 'utf8');
    assert.equal(page, renderMarkdown(fixture(), { source: 'test/fixtures/bench-results.json', chart: 'bench-results.svg' }));
    assert.match(fs.readFileSync(path.join(out, 'bench-results.svg'), 'utf8'), /^<svg /);
  });

  it('the committed page was generated, not written by hand', () => {
    const page = fs.readFileSync(path.join(repo, 'docs/BENCH-RESULTS.md'), 'utf8');
    assert.ok(page.startsWith(kGeneratedMarker), 'docs/BENCH-RESULTS.md must come from `npm run bench:doc`');
    assert.match(page, /## Every row/);
  });
});
