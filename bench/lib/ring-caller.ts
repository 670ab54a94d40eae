/**
 * The calling end of the bench's bare ring paths (thread hop, ring chains): each call writes one
 * message with a fresh tag to `writer` and resolves when a message with that tag comes back on the
 * `replies` ring, with nothing of the runtime in between. And the ending of the worker threads
 * those paths run through.
 */
import { once } from 'node:events';
import type { Worker } from 'node:worker_threads';
import { RingReader, type RingReaderOptions, type RingWriter } from '../../src/shm/ring.js';
import { kPayloadBytes } from './subject.js';

/** How long an ending path or worker gets to finish on its own. */
const kGraceMs = 2000;

export interface RingCaller {
  /** Sends one message and resolves with its echo. */
  call(): Promise<void>;
  /**
   * Closes `writer` and waits (up to 2 s) for the close to come back on the replies ring: each
   * stage of the path ends once it has passed it on. Then stops reading. Safe to call twice.
   */
  close(): Promise<void>;
}

export function ringCaller(writer: RingWriter, replies: SharedArrayBuffer, options: RingReaderOptions = {}, payloadBytes = kPayloadBytes): RingCaller {
  const pending = new Map<number, () => void>();
  let closedNow: () => void = () => {};
  const closed = new Promise<void>((resolve) => (closedNow = resolve));
  const reader = new RingReader(replies, {
    onMessage(tag) {
      const resolve = pending.get(tag);
      if (resolve === undefined) throw new Error(`reply to unknown call ${tag}`);
      pending.delete(tag);
      resolve();
    },
    onClose: () => closedNow(),
  }, options);
  reader.start();
  const payload = new Uint8Array(payloadBytes);
  let nextTag = 0;
  let closing: Promise<void> | undefined;
  return {
    call: () =>
      new Promise<void>((resolve) => {
        const tag = nextTag;
        nextTag = (nextTag + 1) >>> 0;
        pending.set(tag, resolve);
        writer.write(tag, payload);
      }),
    close() {
      closing ??= (async () => {
        writer.close();
        const timer = setTimeout(closedNow, kGraceMs);
        await closed;
        clearTimeout(timer);
        reader.stop();
      })();
      return closing;
    },
  };
}

/**
 * Call when `worker` is made: the returned function waits for it to exit on its own (once its path
 * closed), terminating it after 2 s. Its exit is watched from the start, so an exit that comes
 * before the wait is not missed.
 */
export function workerEnder(worker: Worker): () => Promise<void> {
  const exited = once(worker, 'exit');
  return async () => {
    const kill = setTimeout(() => void worker.terminate(), kGraceMs);
    await exited;
    clearTimeout(kill);
  };
}
