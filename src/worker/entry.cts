/**
 * The piscina worker entry: each task is one listener or one connection and lives until closed.
 * This file is CommonJS on purpose: piscina first `require`s its entry, and on Node 20 a `require`
 * of an ES module racing piscina's fallback `import` of the same file trips an internal assertion
 * and kills the worker. A CommonJS entry is required cleanly and imports the ESM runtime once.
 */
import type { TaskSpec } from '../bridge/control.js';

let runtime: Promise<typeof import('./task.js')> | undefined;

function runTask(spec: TaskSpec): Promise<void> {
  runtime ??= import('./task.js');
  return runtime.then((m) => new m.ConnectionTask(spec).done);
}

export = runTask;
