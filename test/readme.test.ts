/**
 * The doc test: every ts/js code block of the README runs, as a user would paste it, against this
 * package (installed by a symlink), and type-checks. A block tagged `file=<name>` is written beside
 * the snippets instead (e.g. the plugin module an example loads). `text` and `sh` blocks are prose.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import ts from 'typescript';
import { tempDir } from './helpers.js';

const run = promisify(execFile);
const repo = new URL('../../', import.meta.url);
const readme = fs.readFileSync(new URL('README.md', repo), 'utf8');
const pkg = JSON.parse(fs.readFileSync(new URL('package.json', repo), 'utf8')) as { dependencies?: Record<string, string> };

interface Block {
  lang: string;
  file?: string;
  code: string;
  line: number;
}

function blocks(markdown: string): Block[] {
  const out: Block[] = [];
  const re = /^```(\w+)?([^\n]*)\n([\s\S]*?)^```$/gm;
  for (let m; (m = re.exec(markdown)); ) {
    const file = /file=(\S+)/.exec(m[2])?.[1];
    out.push({ lang: m[1] ?? '', file, code: m[3], line: markdown.slice(0, m.index).split('\n').length });
  }
  return out;
}

const all = blocks(readme);
const runnable = all.filter((b) => (b.lang === 'ts' || b.lang === 'js') && b.file === undefined);
const files = all.filter((b) => b.file !== undefined);

describe('README snippets', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof tempDir>;
  const dirs: string[] = [];

  before(() => {
    tmp = tempDir();
    runnable.forEach((block, i) => {
      const dir = path.join(tmp.dir, `snippet-${i}`);
      fs.mkdirSync(path.join(dir, 'node_modules'), { recursive: true });
      fs.symlinkSync(new URL('.', repo).pathname, path.join(dir, 'node_modules', 'ogurpchik'));
      // What `npm install ogurpchik` hoists beside it: its dependencies (a snippet may import flatbuffers).
      for (const dep of Object.keys(pkg.dependencies ?? {})) {
        const to = path.join(dir, 'node_modules', dep);
        fs.mkdirSync(path.dirname(to), { recursive: true });
        fs.symlinkSync(new URL(`node_modules/${dep}`, repo).pathname, to);
      }
      fs.writeFileSync(path.join(dir, 'package.json'), '{ "type": "module" }\n');
      for (const f of files) fs.writeFileSync(path.join(dir, f.file!), f.code);
      fs.writeFileSync(path.join(dir, `snippet.${block.lang}`), block.code);
      dirs.push(dir);
    });
  });
  after(() => tmp?.remove());

  it('has the snippets this test expects (quick start, shm, isolate, handshake, discovery)', () => {
    assert.ok(runnable.length >= 5, `found ${runnable.length} runnable blocks`);
  });

  it('every ts snippet type-checks against the package as published', () => {
    const roots = runnable.map((b, i) => (b.lang === 'ts' ? path.join(dirs[i], 'snippet.ts') : undefined)).filter((f): f is string => f !== undefined);
    const program = ts.createProgram(roots, {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      lib: ['lib.es2023.d.ts', 'lib.esnext.disposable.d.ts'],
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: ['node'],
      typeRoots: [new URL('node_modules/@types', repo).pathname],
    });
    const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file ? `${d.file.fileName.replace(tmp.dir, '')}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}` : '';
      return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    assert.deepEqual(diagnostics, []);
  });

  for (const [i, block] of runnable.entries()) {
    it(`the ${block.lang} snippet at README.md line ${block.line} runs and exits cleanly`, async () => {
      const dir = dirs[i];
      let entry = path.join(dir, `snippet.${block.lang}`);
      if (block.lang === 'ts') {
        const js = ts.transpileModule(block.code, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } }).outputText;
        entry = path.join(dir, 'snippet.mjs');
        fs.writeFileSync(entry, js);
      }
      // Discovery records and shm control sockets go to a private runtime dir, removed with the rest.
      const env = { ...process.env, XDG_RUNTIME_DIR: dir, DEBUG: '' };
      const { stdout } = await run(process.execPath, [entry], { cwd: dir, env, timeout: 30_000 });
      if (block.code.includes('console.log')) assert.notEqual(stdout.trim(), '', 'the snippet printed nothing');
    });
  }
});
