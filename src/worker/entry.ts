/**
 * The piscina worker entry: each task is one listener or one connection and lives until closed.
 * The pool runs with atomics disabled, so a worker's event loop keeps turning between tasks.
 */
import type { TaskSpec } from '../protocol/control.js';
import { ConnectionTask } from './task.js';

export default function runTask(spec: TaskSpec): Promise<void> {
  return new ConnectionTask(spec).done;
}
