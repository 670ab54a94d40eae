/**
 * The type tests of typed proxies: `tsc --noEmit -p test/types/tsconfig.json` must pass, so every
 * `Expect<Equal<…>>` in test/types/proxy.types.ts holds and every `@ts-expect-error` line there is
 * an error. A control run proves the check bites: a false expectation and a needless
 * `@ts-expect-error` must each fail it.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './helpers.js';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const typesDir = path.join(repo, 'test', 'types');

/** Runs tsc on a project; resolves with its exit code and output (it prints diagnostics on stdout). */
function runTsc(project: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [tsc, '--noEmit', '--pretty', 'false', '-p', project], { cwd: repo, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: err ? (err.code as number) : 0, output: stdout + stderr });
    });
  });
}

describe('typed proxy type tests', function () {
  this.timeout(60_000);

  it('test/types/proxy.types.ts has its expectations and expected errors', () => {
    const source = fs.readFileSync(path.join(typesDir, 'proxy.types.ts'), 'utf8');
    const expectations = source.match(/Expect<Equal</g)?.length ?? 0;
    const expectedErrors = source.match(/\/\/ @ts-expect-error /g)?.length ?? 0;
    assert.ok(expectations >= 25, `only ${expectations} Expect<Equal<…>> lines`);
    assert.ok(expectedErrors >= 18, `only ${expectedErrors} @ts-expect-error lines`);
  });

  it('tsc --noEmit -p test/types/tsconfig.json passes', async () => {
    const { code, output } = await runTsc(path.join(typesDir, 'tsconfig.json'));
    assert.equal(output.trim(), '');
    assert.equal(code, 0);
  });

  it('the same check fails on a false expectation and on a needless @ts-expect-error', async () => {
    const tmp = tempDir();
    try {
      const src = (file: string) => JSON.stringify(path.join(repo, file).replace(/\.ts$/, '.js'));
      fs.writeFileSync(
        path.join(tmp.dir, 'control.ts'),
        [
          `import type { ServiceProxy } from ${src('src/index.ts')};`,
          `import type { Equal, Expect } from ${src('test/types/proxy.types.ts')};`,
          'interface Api { echo(text: string): string }',
          'declare const api: ServiceProxy<Api>;',
          "type _wrong = Expect<Equal<ServiceProxy<Api>['echo'], (text: string) => Promise<number>>>;",
          '// @ts-expect-error a correct call: this directive is needless',
          "void api.echo('x');",
          '',
        ].join('\n'),
      );
      fs.writeFileSync(
        path.join(tmp.dir, 'tsconfig.json'),
        JSON.stringify({
          extends: path.join(typesDir, 'tsconfig.json'),
          compilerOptions: { rootDir: '/', typeRoots: [path.join(repo, 'node_modules', '@types')] },
          include: [],
          files: ['control.ts'],
        }),
      );
      const { code, output } = await runTsc(path.join(tmp.dir, 'tsconfig.json'));
      assert.notEqual(code, 0);
      assert.match(output, /control\.ts\(5,\d+\): error TS2344/, output);
      assert.match(output, /control\.ts\(6,\d+\): error TS2578/, output);
    } finally {
      tmp.remove();
    }
  });
});
