/**
 * Byte layout of a shared-memory ring. One place, because three parties must agree on it: the
 * writer, the reader, and (for cross-process rings) a peer that maps the same memory.
 *
 * ```
 * bytes   0..63    line 0  magic, version, capacity, header bytes (written once by createRing)
 * bytes  64..127   line 1  tail, reader-sleeping flag, closed flag
 * bytes 128..191   line 2  head, writer-waiting flag
 * bytes 192..      data area, `capacity` bytes (a power of two), records back to back
 * ```
 *
 * Each hot word sits on its own 64-byte cache line so the writer's stores to `tail` and the
 * reader's stores to `head` never invalidate each other's line. Each flag sits on the line of
 * the side that *checks* it on the hot path: the writer loads reader-sleeping after every publish
 * of `tail`, the reader loads writer-waiting after every advance of `head`; both loads then hit a
 * line the checking side owns anyway, and the flag itself is written only around a sleep.
 *
 * The two flag words are 0 while their side is awake; a side about to sleep stores a position,
 * | 1 (positions are 8-aligned, so that is never 0): the reader the head it has seen, and it is
 * woken once the tail is past it; the writer the head at which the room it waits for is free
 * (half the ring, or its next record's room if larger), and it is woken once the head reaches it.
 * Waking only then keeps a stale wake-up from consuming the flag of the next sleep, and lets a
 * message larger than the ring stream in half-ring strides rather than a wake-up per fragment.
 *
 * Positions are u32 byte counters that wrap mod 2^32 (kept as int32 in JS); `pos & (capacity-1)`
 * is the offset in the data area, `(tail - head) | 0` the bytes in use.
 *
 * A record is 8-byte aligned and never straddles the end of the data area:
 *
 * ```
 * word 0  (payloadLength << 3) | kind      kind: 1 whole, 2 first fragment, 3 continuation, 4 pad, 5 close
 * word 1  tag (u32)                        whole and first only; 0 otherwise
 * word 2  total message length, low u32    first fragment only
 * word 3  total message length, high u32   first fragment only
 * payload, then zero to seven bytes of padding
 * ```
 *
 * A pad record fills the data area up to its end (the next record starts at offset 0); its
 * length field holds the bytes skipped, header included. A close record (8 bytes, no payload)
 * is the writer's last record.
 *
 * A message goes as one whole record whenever that record fits in the data area (up to 256 MiB),
 * so the reader hands it on as a view where it lies, however large: reassembling fragments costs
 * a fresh buffer per message, and fresh pages fault in on first touch, which for a MiB costs far
 * more than the copy itself. Only a message larger than that goes as a first fragment and
 * continuations of at most maxRecordBytes() each, so the writer can stream it while the reader
 * drains it.
 */

export const kRingMagic = 0x4f475252; // 'OGRR'
/** 2: whole records up to the capacity (1 kept them to a quarter, and its reader refuses larger ones). */
export const kRingVersion = 2;

/** Int32 word indexes of the control words. */
export const kMagicIndex = 0;
export const kVersionIndex = 1;
export const kCapacityIndex = 2;
export const kHeaderBytesIndex = 3;
export const kTailIndex = 16; // byte 64
export const kReaderSleepingIndex = 17;
export const kClosedIndex = 18;
export const kHeadIndex = 32; // byte 128
export const kWriterWaitingIndex = 33;

/** Bytes of header (control words) before the data area. */
export const kRingHeaderBytes = 192;

export const kMinRingCapacity = 4096;
/** Payload lengths live in 29 bits of a record header; 1 GiB keeps every record far below that. */
export const kMaxRingCapacity = 2 ** 30;

export const kRecordHeaderBytes = 8;
export const kFirstHeaderBytes = 16;
export const kKindBits = 3;
export const kKindMask = 7;

export const kKindWhole = 1;
export const kKindFirst = 2;
export const kKindCont = 3;
export const kKindPad = 4;
export const kKindClose = 5;

/**
 * Largest fragment record (header + payload + padding) for a data area of `capacity` bytes: a
 * quarter lets the writer fill one fragment while the reader drains another.
 */
export function maxRecordBytes(capacity: number): number {
  return capacity >>> 2;
}

/**
 * Largest whole record. Any record up to the capacity makes progress: a writer that finds no room
 * before the end writes the pad alone and waits for the reader to pass it. The cap keeps every
 * length field (a pad's is below its record's) within its 29 bits.
 */
export const kMaxWholeRecordBytes = 2 ** 28;
export function maxWholeRecordBytes(capacity: number): number {
  return capacity < kMaxWholeRecordBytes ? capacity : kMaxWholeRecordBytes;
}
