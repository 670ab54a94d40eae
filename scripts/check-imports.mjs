#!/usr/bin/env node
// Fails (exit 1) when the TypeScript sources under a root directory (default: src/) have an import
// cycle, or when a file under main/ imports one under worker/ or the other way round.
//
// Dependency-free on purpose: it runs before mocha in `npm test`, and the repo's node_modules is a
// shared install that cannot take madge or dependency-cruiser.
//
// Every import counts, for cycles and for the main/worker boundary: `import … from`, side-effect
// `import '…'`, `export … from`, and `import('…')` / `typeof import('…')` with a literal specifier,
// type-only ones (`import type`, `export type`, `{ type A }`) included. tsc erases a type-only
// import, so a cycle through one cannot break load order at run time, but it still ties two
// modules into one that neither side can be read or moved without; madge reports them too by
// default. A cycle's message marks its type-only edges, since those are the cheap ones to cut
// (move the shared type below both modules).
// Only relative specifiers are followed (packages and node: builtins cannot point back into root).
//
// Usage: node scripts/check-imports.mjs [rootDir]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const kSourceExt = /\.(c|m)?ts$/;

function listSources(dir) {
  const out = [];
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) out.push(...listSources(p));
    else if (kSourceExt.test(ent.name) && !ent.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Blanks comments (keeping strings and line breaks), so imports quoted in JSDoc are not seen. */
function stripComments(src) {
  let out = '';
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    const n = src[i + 1];
    if (c === '/' && n === '/') {
      while (i < src.length && src[i] !== '\n') i++;
    } else if (c === '/' && n === '*') {
      const end = src.indexOf('*/', i + 2);
      const stop = end < 0 ? src.length : end + 2;
      out += src.slice(i, stop).replace(/[^\n]/g, ' ');
      i = stop;
    } else if (c === '"' || c === "'" || c === '`') {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === '\\' ? 2 : 1;
      out += src.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const kImportFrom = /(?:^|[;}\n])\s*import\s+(type\s+)?([\w$*{][^;]*?)\s*from\s*(['"])([^'"\n]+)\3/g;
const kImportBare = /(?:^|[;}\n])\s*import\s*(['"])([^'"\n]+)\1/g;
const kExportFrom = /(?:^|[;}\n])\s*export\s+(type\s+)?(\*(?:\s+as\s+[\w$]+)?|\{[^}]*\})\s*from\s*(['"])([^'"\n]+)\3/g;
const kDynamic = /(typeof\s+)?\bimport\s*\(\s*(['"])([^'"\n]+)\2\s*\)/g;

/** True for `{ type A, type B as C }`: tsc erases the whole statement. */
function allTypeNames(clause) {
  const m = /^\{([^}]*)\}$/.exec(clause.trim());
  if (!m) return false;
  const names = m[1].split(',').map((s) => s.trim()).filter(Boolean);
  return names.length > 0 && names.every((s) => /^type\s/.test(s));
}

/** Each import of one file: `{ spec, typeOnly }`. */
export function importsOf(text) {
  const src = stripComments(text);
  const found = [];
  for (const m of src.matchAll(kImportFrom)) found.push({ spec: m[4], typeOnly: !!m[1] || allTypeNames(m[2]) });
  for (const m of src.matchAll(kImportBare)) found.push({ spec: m[2], typeOnly: false });
  for (const m of src.matchAll(kExportFrom)) found.push({ spec: m[4], typeOnly: !!m[1] || allTypeNames(m[2]) });
  for (const m of src.matchAll(kDynamic)) found.push({ spec: m[3], typeOnly: !!m[1] });
  return found;
}

function resolveSpec(fromFile, spec, known) {
  if (!spec.startsWith('.')) return undefined;
  const base = resolve(dirname(fromFile), spec);
  const candidates = [
    base,
    base.replace(/\.js$/, '.ts'),
    base.replace(/\.cjs$/, '.cts'),
    base.replace(/\.mjs$/, '.mts'),
    base + '.ts',
    join(base, 'index.ts'),
  ];
  return candidates.find((c) => known.has(c));
}

/** Strongly connected components with more than one file, or a file that imports itself (Tarjan). */
function cyclicComponents(graph) {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const onStack = new Set();
  const sccs = [];
  // Iterative, so a long import chain cannot overflow the JS stack.
  for (const start of graph.keys()) {
    if (idx.has(start)) continue;
    const work = [[start, 0]];
    idx.set(start, index); low.set(start, index); index++;
    stack.push(start); onStack.add(start);
    while (work.length > 0) {
      const frame = work[work.length - 1];
      const [v, i] = frame;
      const succ = [...graph.get(v)];
      if (i < succ.length) {
        frame[1]++;
        const w = succ[i];
        if (!idx.has(w)) {
          idx.set(w, index); low.set(w, index); index++;
          stack.push(w); onStack.add(w);
          work.push([w, 0]);
        } else if (onStack.has(w)) {
          low.set(v, Math.min(low.get(v), idx.get(w)));
        }
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1][0];
        low.set(parent, Math.min(low.get(parent), low.get(v)));
      }
      if (low.get(v) === idx.get(v)) {
        const comp = [];
        let w;
        do { w = stack.pop(); onStack.delete(w); comp.push(w); } while (w !== v);
        if (comp.length > 1 || graph.get(v).has(v)) sccs.push(comp);
      }
    }
  }
  return sccs;
}

/** One concrete cycle through `start` inside its component (BFS back to start), for the message. */
function cycleThrough(graph, comp, start) {
  const inComp = new Set(comp);
  const prev = new Map();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift();
    for (const w of graph.get(v)) {
      if (!inComp.has(w)) continue;
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(prev.get(path[0]));
        return [...path, start];
      }
      if (!prev.has(w)) { prev.set(w, v); queue.push(w); }
    }
  }
  return [start, start];
}

/**
 * Checks one root: `{ cycles, boundary }`. Each cycle is a path of files relative to root that
 * ends where it starts; an entry reached by a type-only import is prefixed `(type) `.
 */
export function checkImports(rootDir) {
  const root = resolve(rootDir);
  const files = listSources(root);
  const known = new Set(files);
  const graph = new Map(files.map((f) => [f, new Set()]));
  // "from\0to" -> true when every import along that edge is type-only.
  const typeOnlyEdge = new Map();
  const boundary = [];
  const side = (f) => relative(root, f).split(sep)[0];
  for (const f of files) {
    for (const { spec, typeOnly } of importsOf(readFileSync(f, 'utf8'))) {
      const to = resolveSpec(f, spec, known);
      if (to === undefined) continue;
      graph.get(f).add(to);
      const key = `${f}\0${to}`;
      typeOnlyEdge.set(key, (typeOnlyEdge.get(key) ?? true) && typeOnly);
      const a = side(f);
      const b = side(to);
      if ((a === 'main' && b === 'worker') || (a === 'worker' && b === 'main')) {
        boundary.push(`${relative(root, f)} imports ${relative(root, to)} (${a}/ and ${b}/ never import each other)`);
      }
    }
  }
  const rel = (f) => relative(root, f);
  const cycles = cyclicComponents(graph).map((comp) => {
    const path = cycleThrough(graph, comp, join(root, comp.map(rel).sort()[0]));
    return path.map((f, i) => (i > 0 && typeOnlyEdge.get(`${path[i - 1]}\0${f}`) ? `(type) ${rel(f)}` : rel(f)));
  });
  return { cycles, boundary };
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const here = dirname(fileURLToPath(import.meta.url));
  const root = process.argv[2] ?? join(here, '..', 'src');
  if (!statSync(root, { throwIfNoEntry: false })?.isDirectory()) {
    console.error(`check-imports: ${root} is not a directory`);
    process.exit(2);
  }
  const { cycles, boundary } = checkImports(root);
  for (const c of cycles) console.error(`import cycle: ${c.join(' -> ')}`);
  for (const b of boundary) console.error(`forbidden import: ${b}`);
  if (cycles.length > 0 || boundary.length > 0) {
    console.error(`check-imports: ${cycles.length} cycle(s), ${boundary.length} main/worker import(s) in ${root}`);
    process.exit(1);
  }
  console.log(`check-imports: no import cycles, main/ and worker/ independent (${root})`);
}
