/**
 * Writes docs/BENCH-RESULTS.md and its chart (docs/bench-results.svg) from one kept run.
 * Usage: `node dist/bench/report.js [results.json] [--out dir]` (default: bench/results/latest.json,
 * the last run, written into docs/).
 */

import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderSvg } from './lib/chart/page.js';
import { renderMarkdown } from './lib/markdown.js';
import { runFileName, type RunResults } from './lib/results.js';

const repoDir = fileURLToPath(new URL('../..', import.meta.url));
const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const docs = outAt < 0 ? path.join(repoDir, 'docs') : path.resolve(args.splice(outAt, 2)[1] ?? '.');
const source = path.resolve(args[0] ?? path.join(repoDir, 'bench/results/latest.json'));

let results: RunResults;
try {
  results = JSON.parse(await readFile(source, 'utf8')) as RunResults;
} catch (err) {
  process.stderr.write(`cannot read a run from ${source}: ${(err as Error).message}\nrun \`npm run bench\` first, or give a kept run (bench/results/runs/*.json)\n`);
  process.exit(2);
}
await writeFile(path.join(docs, 'bench-results.svg'), renderSvg(results));
// latest.json is overwritten by the next run: name the copy every run keeps instead.
const kept = path.basename(source) === 'latest.json' ? path.join('bench/results/runs', runFileName(results)) : path.relative(repoDir, source);
await writeFile(path.join(docs, 'BENCH-RESULTS.md'), renderMarkdown(results, { source: kept, chart: 'bench-results.svg' }));
process.stdout.write(`wrote BENCH-RESULTS.md and bench-results.svg in ${docs} from ${path.relative(repoDir, source)}\n`);
