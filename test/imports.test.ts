/**
 * scripts/check-imports.mjs: src/ has no import cycle and main/ and worker/ never import each
 * other; the check fails, naming the cycle or the import, on fixtures that break either rule.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const script = path.join(repo, 'scripts', 'check-imports.mjs');
const fixtures = path.join(repo, 'test', 'fixtures');

/** Runs the check on `root` (relative to the repo); resolves with its exit code and output. */
function check(root?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const args = root === undefined ? [script] : [script, root];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: repo, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

describe('import check (scripts/check-imports.mjs)', function () {
  this.timeout(30_000);

  it('passes on src/ (its default root): no cycle, main/ and worker/ independent', async () => {
    const { code, stdout, stderr } = await check();
    assert.equal(code, 0, stderr);
    assert.match(stdout, /no import cycles/);
    assert.equal((await check('src')).code, 0);
  });

  it('fails on a cycle and names it, marking a type-only edge; imports quoted in comments and strings do not count', async () => {
    const { code, stderr } = await check(path.join(fixtures, 'import-cycle'));
    assert.equal(code, 1, stderr);
    assert.match(stderr, /^import cycle: a\.ts -> b\.ts -> a\.ts$/m);
    assert.match(stderr, /^import cycle: c\.ts -> d\.ts -> \(type\) c\.ts$/m);
    assert.doesNotMatch(stderr, /[ef]\.ts/, 'e.ts names f.ts only in a comment and a string');
    assert.match(stderr, /2 cycle\(s\), 0 main\/worker import\(s\)/);
  });

  it('fails when main/ imports worker/ or worker/ imports main/ (a type-only import too), naming each', async () => {
    const { code, stderr } = await check(path.join(fixtures, 'import-boundary'));
    assert.equal(code, 1, stderr);
    assert.match(stderr, /^forbidden import: main\/spec\.ts imports worker\/task\.ts /m);
    assert.match(stderr, /^forbidden import: worker\/hook\.ts imports main\/spec\.ts /m);
    assert.doesNotMatch(stderr, /protocol\/shared\.ts/, 'both sides may import what lives beside them');
    assert.match(stderr, /0 cycle\(s\), 2 main\/worker import\(s\)/);
  });

  it('exits 2 when the root is not a directory', async () => {
    const { code, stderr } = await check(path.join(fixtures, 'no-such-dir'));
    assert.equal(code, 2);
    assert.match(stderr, /not a directory/);
  });

  it('runs in `npm test` before mocha, so CI fails on a cycle', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const test = pkg.scripts.test;
    const at = test.indexOf('node scripts/check-imports.mjs');
    assert.ok(at >= 0 && at < test.indexOf('mocha'), test);
    assert.equal(pkg.scripts['check:imports'], 'node scripts/check-imports.mjs');
  });
});
