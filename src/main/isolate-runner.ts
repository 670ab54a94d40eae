/**
 * Runs an isolate() plugin's task in a worker thread of its own (not in the shared pool): its
 * resource limits apply to it alone, and when it misbehaves it can be terminated alone.
 */
import { Worker } from 'node:worker_threads';
import { RpcError } from '../errors.js';
import type { TaskSpec } from '../bridge/control.js';
import type { IsolateDescriptor } from '../transport/descriptors.js';
import type { TaskRunner } from './remote-task.js';

const kEntry = new URL('../worker/isolate.js', import.meta.url);

export class IsolateRunner implements TaskRunner {
  #worker: Worker | undefined;

  run(spec: TaskSpec): Promise<void> {
    const d = spec.transport as IsolateDescriptor;
    return new Promise((resolve, reject) => {
      const worker = new Worker(kEntry, { workerData: spec, transferList: [spec.hub.control as never], resourceLimits: d.resourceLimits });
      this.#worker = worker;
      let failure: Error | undefined;
      worker.on('error', (err: Error & { code?: string }) => {
        failure =
          err.code === 'ERR_WORKER_OUT_OF_MEMORY'
            ? new RpcError('CLOSED', `the plugin ran out of memory: ${err.message}`, { cause: err })
            : new RpcError('CLOSED', `the plugin crashed: ${err.message}`, { cause: err });
      });
      worker.on('exit', (code) => {
        if (failure) reject(failure);
        else if (code === 0) resolve();
        else reject(new RpcError('CLOSED', `the plugin's thread exited with code ${code}`));
      });
    });
  }

  /** Ends the plugin's thread at once (used when it does not stop within its close timeout); it is the only task there. */
  kill(): void {
    void this.#worker?.terminate();
  }
}
