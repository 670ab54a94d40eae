/**
 * The naive framing people write for a Node socket protocol: a u32 little-endian length, then
 * the body; chunks are concatenated until a whole frame is present. Both the raw baseline's
 * client and its server use it, so the baseline is what an ordinary hand-rolled protocol costs.
 */

const kHeaderBytes = 4;
/** Larger prefixes mean a broken peer; the bench never sends more than a few bytes. */
const kMaxBodyBytes = 1 << 20;

/** Prefixes `body` with its u32 LE length, in a fresh buffer (one write per message). */
export function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(kHeaderBytes + body.length);
  out.writeUInt32LE(body.length, 0);
  out.set(body, kHeaderBytes);
  return out;
}

/** Splits a byte stream into whole frames; each `onFrame` call gets the frame with its prefix. */
export class FrameSplitter {
  private rest: Buffer | null = null;

  /** Throws when a length prefix exceeds the maximum; the caller should drop the connection. */
  push(chunk: Buffer, onFrame: (frameWithPrefix: Buffer) => void): void {
    let buf = this.rest === null ? chunk : Buffer.concat([this.rest, chunk]);
    this.rest = null;
    while (buf.length >= kHeaderBytes) {
      const bodyLength = buf.readUInt32LE(0);
      if (bodyLength > kMaxBodyBytes) throw new Error(`frame of ${bodyLength} bytes exceeds ${kMaxBodyBytes}`);
      const total = kHeaderBytes + bodyLength;
      if (buf.length < total) break;
      onFrame(buf.subarray(0, total));
      buf = buf.subarray(total);
    }
    if (buf.length > 0) this.rest = buf;
  }
}

export const frameHeaderBytes = kHeaderBytes;
