/**
 * The calling end of the bench's bare ring paths (thread hop, ring chains): each call writes one
 * message with a fresh tag to `writer` and resolves when a message with that tag comes back on the
 * `replies` ring, with nothing of the runtime in between.
 */
import { RingReader, type RingReaderOptions, type RingWriter } from '../../src/shm/ring.js';
import { kPayloadBytes } from './subject.js';

export interface RingCaller {
  /** Sends one message and resolves with its echo. */
  call(): Promise<void>;
  /** Resolves once the far end has closed the replies ring (or `stop()` was called). */
  readonly closed: Promise<void>;
  /** Stops reading replies. */
  stop(): void;
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
  return {
    call: () =>
      new Promise<void>((resolve) => {
        const tag = nextTag;
        nextTag = (nextTag + 1) >>> 0;
        pending.set(tag, resolve);
        writer.write(tag, payload);
      }),
    closed,
    stop() {
      reader.stop();
      closedNow();
    },
  };
}
