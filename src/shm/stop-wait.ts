/**
 * Making sure a stopped cross-process ring reader has really left its futex wait. RingReader#stop
 * wakes the wait once, but that wake-up is lost when the addon's thread for the wait has not
 * parked yet; the wait then stays parked on the ring, holding its thread open and taking a
 * wake-up the peer meant for whoever reads the ring next (one waiter is woken).
 */
import { futexSignal } from '../native/addon.js';
import { kRingHeaderBytes, kTailIndex } from './layout.js';
import type { RingReader } from './ring.js';

/** Past this, stop trying: something other than a lost wake-up holds the wait. */
const kGiveUpMs = 5000;

/** Resolves once `reader` (stopped, over `ring`) has left its read loop, waking its futex wait every millisecond meanwhile (at most kGiveUpMs). */
export async function readerStopped(reader: RingReader, ring: SharedArrayBuffer): Promise<void> {
  if (!reader.looping) return;
  const ctl = new Int32Array(ring, 0, kRingHeaderBytes >> 2);
  const start = performance.now();
  let wokeAt = start;
  while (reader.looping) {
    const now = performance.now();
    if (now - start > kGiveUpMs) return;
    // The wait usually settles within a thread hop: look each loop turn at first, then each ms.
    await new Promise((resolve) => (now - start < 2 ? setImmediate(resolve) : setTimeout(resolve, 1)));
    if (reader.looping && performance.now() - wokeAt >= 1) {
      futexSignal.notify(ctl, kTailIndex);
      wokeAt = performance.now();
    }
  }
}
