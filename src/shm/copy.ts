/**
 * Copies into and out of shared memory at memcpy speed. V8 copies to or from a SharedArrayBuffer
 * with relaxed atomic accesses: word by word when the source and target addresses agree modulo 8,
 * byte by byte otherwise, several times slower. A payload sits behind headers of odd lengths
 * (record, frame length, envelope, codec), so its copy into or out of a ring is usually
 * misaligned: such a copy is staged through a plain scratch buffer, where the shift is a plain
 * memmove and the copies to and from shared memory are aligned.
 */
import { bytesToFill } from '../bytes.js';

/** Copies shorter than this are not worth staging. */
const kStageFrom = 4096;
/** Staged in chunks this long, through one scratch buffer per thread that stays in cache. */
const kStageBytes = 256 * 1024;
/** Used only synchronously inside copyBytes, so one per thread is safe. */
let scratch: Uint8Array | undefined;

/**
 * Copies `n` bytes from `src` at `from` to `dst` at `at`, fast whichever of the two is shared
 * memory. (Alignment is reckoned from each view's byteOffset: array buffers start 8-aligned.)
 */
export function copyBytes(dst: Uint8Array, at: number, src: Uint8Array, from: number, n: number): void {
  const sa = (src.byteOffset + from) & 7;
  const da = (dst.byteOffset + at) & 7;
  if (n < kStageFrom || sa === da) {
    dst.set(from === 0 && n === src.length ? src : src.subarray(from, from + n), at);
    return;
  }
  const srcShared = src.buffer instanceof SharedArrayBuffer;
  const dstShared = dst.buffer instanceof SharedArrayBuffer;
  if (!srcShared && !dstShared) {
    dst.set(src.subarray(from, from + n), at);
    return;
  }
  const s = (scratch ??= new Uint8Array(kStageBytes + 8));
  // Chunks are multiples of 8 long, so every chunk keeps the alignments sa and da.
  for (let done = 0; done < n; done += kStageBytes) {
    const c = n - done < kStageBytes ? n - done : kStageBytes;
    const chunk = src.subarray(from + done, from + done + c);
    if (!srcShared) {
      s.set(chunk, da);
      dst.set(s.subarray(da, da + c), at + done);
    } else if (!dstShared) {
      s.set(chunk, sa);
      dst.set(s.subarray(sa, sa + c), at + done);
    } else {
      s.set(chunk, sa);
      s.copyWithin(da, sa, sa + c);
      dst.set(s.subarray(da, da + c), at + done);
    }
  }
}

/**
 * A copy of bytes [start, end) of `bytes` in memory of its own (a plain Uint8Array). From shared
 * memory the copy is placed at the source's alignment modulo 8 (its byteOffset may then be 1-7),
 * which makes it one aligned copy.
 */
export function copyOut(bytes: Uint8Array, start = 0, end = bytes.length): Uint8Array {
  const n = end - start;
  const shift = n >= kStageFrom && bytes.buffer instanceof SharedArrayBuffer ? (bytes.byteOffset + start) & 7 : 0;
  const out = bytesToFill(n + shift);
  out.set(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end), shift);
  return shift === 0 ? out : out.subarray(shift);
}
