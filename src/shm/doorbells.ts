/**
 * The RingSignals of one cross-process ring pair: eventfd doorbells when both ends offered them
 * at the rendezvous, else the futex. Shared by the worker's shm stream and the main thread's
 * direct link, which take the same rings (and doorbells) over from one another.
 */
import { doorbellSignal, futexSignal, loadNative, type DoorbellSignal } from '../native/addon.js';
import { kHeadIndex, kTailIndex } from './layout.js';
import type { RingSignal } from './signal.js';

/** One ring's doorbells: `data` rung by its writer to wake its reader, `space` rung by its reader to wake its writer. */
export interface RingDoorbells {
  data: number;
  space: number;
}

/** A connection's doorbells as this process's fds; whoever holds the rings owns them and closes them (closeDoorbells) when done. */
export interface ShmDoorbells {
  toPeer: RingDoorbells;
  fromPeer: RingDoorbells;
}

/** The signals of this thread's writer (on the ring to the peer) and reader (on the ring from it). */
export interface PairSignals {
  writer: RingSignal;
  reader: RingSignal;
  /** Stops this thread's doorbell polls and wakes their waits; the fds stay open (a no-op for the futex). */
  close(): void;
}

const kFutexPair: PairSignals = { writer: futexSignal, reader: futexSignal, close() {} };

/** Signals over `doorbells` polled on the calling thread's loop, or the futex when there are none. */
export function pairSignals(doorbells: ShmDoorbells | undefined): PairSignals {
  if (doorbells === undefined) return kFutexPair;
  const { toPeer, fromPeer } = doorbells;
  const writer: DoorbellSignal = doorbellSignal({ watch: { [kHeadIndex]: toPeer.space }, ring: { [kTailIndex]: toPeer.data } });
  let reader: DoorbellSignal;
  try {
    reader = doorbellSignal({ watch: { [kTailIndex]: fromPeer.data }, ring: { [kHeadIndex]: fromPeer.space } });
  } catch (err) {
    writer.close();
    throw err;
  }
  return {
    writer,
    reader,
    close() {
      writer.close();
      reader.close();
    },
  };
}

/** The four fds in rendezvous order: c2s data, c2s space, s2c data, s2c space. */
export function doorbellFds(d: ShmDoorbells, side: 'connect' | 'listen'): number[] {
  const [c2s, s2c] = side === 'connect' ? [d.toPeer, d.fromPeer] : [d.fromPeer, d.toPeer];
  return [c2s.data, c2s.space, s2c.data, s2c.space];
}

/** The inverse of doorbellFds. */
export function doorbellsFrom(fds: readonly number[], side: 'connect' | 'listen'): ShmDoorbells {
  const c2s = { data: fds[0]!, space: fds[1]! };
  const s2c = { data: fds[2]!, space: fds[3]! };
  return side === 'connect' ? { toPeer: c2s, fromPeer: s2c } : { toPeer: s2c, fromPeer: c2s };
}

/** Four fresh doorbells (this process's; the peer gets copies over SCM_RIGHTS). */
export function createDoorbells(): ShmDoorbells {
  const native = loadNative();
  const fds: number[] = [];
  try {
    for (let i = 0; i < 4; i++) fds.push(native.eventfd());
  } catch (err) {
    for (const fd of fds) native.closeFd(fd);
    throw err;
  }
  return doorbellsFrom(fds, 'connect');
}

/** Closes the four fds (close their polls first: pairSignals' close). */
export function closeDoorbells(d: ShmDoorbells): void {
  const native = loadNative();
  for (const fd of doorbellFds(d, 'connect')) {
    try {
      native.closeFd(fd);
    } catch {
      // closed already
    }
  }
}
