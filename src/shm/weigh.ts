/**
 * Makes V8's GC weigh the SharedArrayBuffers this thread holds. V8 counts no shared backing store
 * towards GC pressure (a SharedArrayBuffer's per-isolate accounting length is 0), so a closed
 * connection's rings (2 x ringBytes, 1 MiB each by default; an shm connection's segments) stayed
 * allocated until a GC that their own size never triggered. Measured here: 3,000 dropped 1 MiB
 * SharedArrayBuffers grew a process to 1.8 GB RSS; 3,000 ArrayBuffers, or SharedArrayBuffers
 * weighed like this, left it near 100 MiB. A process that connects and closes in a loop held
 * hundreds of MiB of dead rings.
 *
 * Each ring reader and writer weighs its buffer once per thread (each thread that holds the
 * buffer has its own handle to collect): with the native addon, as external memory that V8
 * counts (napi_adjust_external_memory), given back when this thread's handle is collected;
 * without it, by a plain ArrayBuffer of the same size hung on the handle, which V8 does count
 * (never written: of 400 MiB of them kept alive here, ~95 MiB became resident).
 */
import { loadNative } from '../native/addon.js';

const weighed = new WeakSet<SharedArrayBuffer>();
const kBallast = Symbol('ogurpchik.gcWeight');
/** The addon's adjustExternalMemory in this thread; null when the addon is missing or too old. */
let adjust: ((bytes: number) => number) | null | undefined;
let release: FinalizationRegistry<number> | undefined;

function nativeAdjust(): ((bytes: number) => number) | null {
  if (adjust === undefined) {
    try {
      const native = loadNative();
      adjust = typeof native.adjustExternalMemory === 'function' ? (bytes) => native.adjustExternalMemory(bytes) : null;
    } catch {
      adjust = null;
    }
  }
  return adjust;
}

/** Counts `sab` towards this thread's GC pressure until this thread's handle to it is collected. Once per buffer. */
export function weighShared(sab: SharedArrayBuffer): void {
  if (weighed.has(sab)) return;
  weighed.add(sab);
  const bytes = sab.byteLength;
  const native = nativeAdjust();
  if (native !== null) {
    release ??= new FinalizationRegistry((held: number) => native(-held));
    native(bytes);
    release.register(sab, bytes);
  } else {
    Object.defineProperty(sab, kBallast, { value: new ArrayBuffer(bytes) });
  }
}
