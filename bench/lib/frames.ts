/**
 * The naive framing people write for a Node socket protocol: a u32 little-endian length, then
 * the body; chunks are concatenated until a whole frame is present. Both the raw baseline's
 * client and its server use it, so the baseline is what an ordinary hand-rolled protocol costs.
 */

const kHeaderBytes = 4;
/** Larger prefixes mean a broken peer; the payload sweep sends up to 4 MiB. */
const kMaxBodyBytes = 16 << 20;

/** Prefixes `body` with its u32 LE length, in a fresh buffer (one write per message). */
export function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(kHeaderBytes + body.length);
  out.writeUInt32LE(body.length, 0);
  out.set(body, kHeaderBytes);
  return out;
}

/**
 * Splits a byte stream into whole frames; each `onFrame` call gets the frame with its prefix.
 * Chunks of an incomplete frame are kept in a list and joined once the frame is whole, so that a
 * large frame (many chunks) is copied once rather than once per chunk.
 */
export class FrameSplitter {
  private parts: Buffer[] = [];
  private partsBytes = 0;
  /** Bytes the first pending frame needs in all (prefix included); 0 while its prefix is incomplete. */
  private needed = 0;

  /** Throws when a length prefix exceeds the maximum; the caller should drop the connection. */
  push(chunk: Buffer, onFrame: (frameWithPrefix: Buffer) => void): void {
    let buf: Buffer;
    if (this.parts.length === 0) {
      buf = chunk;
    } else {
      this.parts.push(chunk);
      this.partsBytes += chunk.length;
      if (this.needed === 0 && this.partsBytes >= kHeaderBytes) {
        this.parts = [Buffer.concat(this.parts)];
        this.needed = this.total(this.parts[0]!);
      }
      if (this.needed === 0 || this.partsBytes < this.needed) return;
      buf = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partsBytes);
      this.parts = [];
      this.partsBytes = 0;
      this.needed = 0;
    }
    while (buf.length >= kHeaderBytes) {
      const total = this.total(buf);
      if (buf.length < total) break;
      onFrame(buf.subarray(0, total));
      buf = buf.subarray(total);
    }
    if (buf.length > 0) {
      this.parts = [buf];
      this.partsBytes = buf.length;
      this.needed = buf.length >= kHeaderBytes ? this.total(buf) : 0;
    }
  }

  private total(buf: Buffer): number {
    const bodyLength = buf.readUInt32LE(0);
    if (bodyLength > kMaxBodyBytes) throw new Error(`frame of ${bodyLength} bytes exceeds ${kMaxBodyBytes}`);
    return kHeaderBytes + bodyLength;
  }
}

export const frameHeaderBytes = kHeaderBytes;
