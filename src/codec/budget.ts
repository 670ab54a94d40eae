/**
 * What decoding one payload may build. A frame's size bounds its wire bytes, not the values they
 * decode to: a byte 0x80 is an empty msgpack map, which V8 holds in ~64 bytes, so a frame of them
 * builds ~64 times its size, and its decoding stalls the thread meanwhile. Before a codec decodes,
 * a scan walks the payload's structure without building anything: it checks lengths against the
 * bytes that remain, the nesting depth and the count limits, and adds up an estimate of the
 * memory the values will take (kSlot and the others below), which must stay within `maxExpansion` per payload byte.
 */
import { RpcError } from '../errors.js';

/** Limits on what decoding one payload (one request, answer, event or stream item) may build; every field is optional. */
export interface DecodeLimits {
  /** Most arrays and maps nested in one another (default 100); deeper is PROTOCOL. */
  maxDepth?: number;
  /** Most elements of one array (default: no limit but the frame's). */
  maxArrayLength?: number;
  /** Most entries of one map or object (default: no limit but the frame's). */
  maxMapSize?: number;
  /** Longest string, in UTF-8 bytes (default: no limit but the frame's). */
  maxStringBytes?: number;
  /** Longest binary value (msgpack bin or ext), in bytes (default: no limit but the frame's). */
  maxBinaryBytes?: number;
  /** Most values in one payload, counting containers and map keys (default: no limit but the frame's). */
  maxElements?: number;
  /**
   * Most memory the decoded values may take, estimated from their types, per byte of payload
   * beyond a first 1 MiB (default 24). Tiny containers are what exceeds it: `[]`, `{}` and
   * empty binaries cost tens of bytes each, for one or two bytes of payload.
   */
  maxExpansion?: number;
}

export type ResolvedDecodeLimits = Required<DecodeLimits>;

export const kDefaultDecodeLimits: ResolvedDecodeLimits = {
  maxDepth: 100,
  maxArrayLength: Infinity,
  maxMapSize: Infinity,
  maxStringBytes: Infinity,
  maxBinaryBytes: Infinity,
  maxElements: Infinity,
  maxExpansion: 24,
};

/** maxDepth's ceiling: msgpackr decodes by recursion, and the stack ends somewhere past it. */
const kMaxDepthCeiling = 2000;
/** What any payload may build besides maxExpansion per byte, so that small ones never meet the budget. */
export const kExpansionSlack = 1024 * 1024;

// Estimated bytes of V8 heap per decoded value (64-bit, no pointer compression, as Node ships),
// rounded up from what `--expose-gc` heap deltas showed for each shape. Plain constants: the scan
// is hot, and these fold into it.
/** The value's slot in its parent (or the result). */
const kSlot = 8;
/** A JSArray or JSObject header with its backing store header. */
const kContainer = 56;
/** A map entry beyond its key and value: property storage, dictionary mode or a new hidden class. */
const kEntry = 48;
/** A string header; its characters are added (at most 2 bytes each: two-byte strings). */
const kString = 16;
/** A Uint8Array, its ArrayBuffer and backing store record; the bytes are added. */
const kBinary = 192;
/** A HeapNumber or small BigInt (floats, 32-bit unsigned and 64-bit integers). */
const kNumber = 16;
/** An extension's object (Date, Error, typed array, Set); its data bytes are added. */
const kExt = 128;
/** A Set's hash table entry per element of the array it is built from. */
const kSetEntry = 32;
/**
 * More than any payload byte costs by the estimates above, in either scan (an empty bin, 2 bytes,
 * is the most: 200), so a payload of n bytes never costs more than n times this.
 */
const kMaxCostPerByte = 128;

/**
 * Payloads up to this many bytes cannot break `limits`, so need no scan: too short to nest past
 * maxDepth or to cost past the budget, with no count or size limit set. 0 when one is set.
 */
export function unscannedBytes(limits: ResolvedDecodeLimits): number {
  const { maxArrayLength, maxMapSize, maxStringBytes, maxBinaryBytes, maxElements, maxDepth, maxExpansion } = limits;
  if (Math.min(maxArrayLength, maxMapSize, maxStringBytes, maxBinaryBytes, maxElements) !== Infinity) return 0;
  const underBudget = maxExpansion >= kMaxCostPerByte ? Infinity : Math.floor(kExpansionSlack / (kMaxCostPerByte - maxExpansion));
  return Math.min(maxDepth, underBudget);
}

/** Fills in the defaults and checks each given limit: a positive integer (or Infinity where no limit is the default). */
export function resolveDecodeLimits(limits: DecodeLimits | undefined): ResolvedDecodeLimits {
  if (limits === undefined) return kDefaultDecodeLimits;
  if (limits === null || typeof limits !== 'object') throw new RpcError('INVALID_ARGUMENT', `decodeLimits takes an object of limits, got ${String(limits)}`);
  const out = { ...kDefaultDecodeLimits };
  for (const name of Object.keys(kDefaultDecodeLimits) as (keyof ResolvedDecodeLimits)[]) {
    const value = limits[name];
    if (value === undefined) continue;
    const max = name === 'maxDepth' ? kMaxDepthCeiling : Infinity;
    const ok = typeof value === 'number' && value >= 1 && value <= max && (Number.isInteger(value) || value === Infinity);
    if (!ok) throw new RpcError('INVALID_ARGUMENT', `decodeLimits.${name} must be ${name === 'maxDepth' ? `an integer from 1 to ${kMaxDepthCeiling}` : 'a positive integer or Infinity'}, got ${String(value)}`);
    out[name] = value;
  }
  return out;
}

/** FRAME_TOO_LARGE for `what` ("an array of") `length` `unit`s, over decodeLimits[name]. */
function overLimit(name: keyof DecodeLimits, what: string, length: number, unit: string, max: number): RpcError {
  return new RpcError('FRAME_TOO_LARGE', `payload refused before decoding: ${what} ${length} ${unit} exceeds decodeLimits.${name} (${max})`, { data: { limit: name, length, max } });
}

function overBudget(cost: number, bytes: number, limits: ResolvedDecodeLimits): RpcError {
  const max = bytes * limits.maxExpansion + kExpansionSlack;
  return new RpcError(
    'FRAME_TOO_LARGE',
    `payload refused before decoding: its ${bytes} bytes would build more than ${max} bytes of values (decodeLimits.maxExpansion ${limits.maxExpansion} per byte beyond 1 MiB); tiny containers or binaries in bulk do that`,
    { data: { limit: 'maxExpansion', length: cost, max } },
  );
}

function tooDeep(max: number): RpcError {
  return new RpcError('PROTOCOL', `payload refused before decoding: nested deeper than decodeLimits.maxDepth (${max})`, { data: { limit: 'maxDepth', max } });
}

function truncated(what: string): RpcError {
  return new RpcError('PROTOCOL', `payload is not valid msgpack: ${what} runs past the end of the payload`);
}

/** msgpackr's extension types that read the value after them (Set, Error, RegExp). */
const kExtSet = 0x73;
const kExtError = 0x65;
const kExtRegExp = 0x78;

/**
 * Checks one msgpack payload, `b` from `start` to its end, against `limits` before msgpackr
 * decodes it; throws the RpcError that refuses it. `stack` holds, per open container, how many
 * values it still has to come (its length is at least maxDepth + 2).
 */
export function scanMsgpack(b: Uint8Array, start: number, limits: ResolvedDecodeLimits, stack: Float64Array): void {
  // Hot path (every msgpack payload that is not a lone bin): one pass over the value headers, a
  // flat switch on the type byte, no allocation; strings and binaries are skipped by their length.
  const end = b.length;
  const budget = (end - start) * limits.maxExpansion + kExpansionSlack;
  const maxDepth = limits.maxDepth;
  const maxElements = limits.maxElements;
  let p = start;
  let depth = 0;
  let cost = 0;
  let elements = 0;
  /** Values still owed by all open containers: each takes at least one byte. */
  let owed = 1;
  /** The next container builds a Set: each element also costs a hash table entry. */
  let setNext = false;
  stack[0] = 1;
  for (;;) {
    while (stack[depth] === 0) {
      if (depth === 0) return; // the value is complete (trailing bytes are msgpackr's to refuse)
      depth--;
    }
    stack[depth]--;
    owed--;
    if (p >= end) throw truncated('a value');
    const t = b[p++];
    if (++elements > maxElements) throw overLimit('maxElements', 'a payload of', elements, 'values', maxElements);
    cost += kSlot;
    // Positive and negative fixints: the commonest byte, and nothing to build.
    if (t < 0x80 || t >= 0xe0) continue;
    let n = 0; // a container's length, or the bytes a string, binary or ext skips
    let isMap = false;
    let ext = -1; // an extension's type byte position
    if (t < 0x90) {
      n = t & 0x0f;
      isMap = true;
    } else if (t < 0xa0) {
      n = t & 0x0f;
    } else if (t < 0xc0) {
      n = t & 0x1f;
      if (n > limits.maxStringBytes) throw overLimit('maxStringBytes', 'a string of', n, 'bytes', limits.maxStringBytes);
      cost += kString + 2 * n;
      if (n > end - p) throw truncated('a string');
      p += n;
      if (cost > budget) throw overBudget(cost, end - start, limits);
      continue;
    } else {
      switch (t) {
        case 0xc0: // nil
        case 0xc1: // never used: msgpackr returns a marker
        case 0xc2: // false
        case 0xc3: // true
          continue;
        case 0xcc:
        case 0xd0:
          p += 1;
          continue;
        case 0xcd:
        case 0xd1:
          p += 2;
          continue;
        case 0xd2:
          p += 4;
          continue;
        case 0xca:
        case 0xce:
          p += 4;
          cost += kNumber;
          continue;
        case 0xcb:
        case 0xcf:
        case 0xd3:
          p += 8;
          cost += kNumber;
          continue;
        case 0xc4: // bin 8, 16, 32
        case 0xc5:
        case 0xc6: {
          const h = t === 0xc4 ? 1 : t === 0xc5 ? 2 : 4;
          if (h > end - p) throw truncated('a binary header');
          n = h === 1 ? b[p] : h === 2 ? (b[p] << 8) | b[p + 1] : ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
          p += h;
          if (n > limits.maxBinaryBytes) throw overLimit('maxBinaryBytes', 'a binary of', n, 'bytes', limits.maxBinaryBytes);
          if (n > end - p) throw truncated('a binary');
          p += n;
          cost += kBinary + n;
          if (cost > budget) throw overBudget(cost, end - start, limits);
          continue;
        }
        case 0xd9: // str 8, 16, 32
        case 0xda:
        case 0xdb: {
          const h = t === 0xd9 ? 1 : t === 0xda ? 2 : 4;
          if (h > end - p) throw truncated('a string header');
          n = h === 1 ? b[p] : h === 2 ? (b[p] << 8) | b[p + 1] : ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
          p += h;
          if (n > limits.maxStringBytes) throw overLimit('maxStringBytes', 'a string of', n, 'bytes', limits.maxStringBytes);
          if (n > end - p) throw truncated('a string');
          p += n;
          cost += kString + 2 * n;
          if (cost > budget) throw overBudget(cost, end - start, limits);
          continue;
        }
        case 0xdc: // array 16, 32
        case 0xdd:
        case 0xde: // map 16, 32
        case 0xdf: {
          const h = t === 0xdc || t === 0xde ? 2 : 4;
          if (h > end - p) throw truncated('a container header');
          n = h === 2 ? (b[p] << 8) | b[p + 1] : ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
          p += h;
          isMap = t >= 0xde;
          break;
        }
        case 0xd4: // fixext 1, 2, 4, 8, 16: type, then data
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
          n = 1 << (t - 0xd4);
          ext = p;
          p += 1;
          break;
        case 0xc7: // ext 8, 16, 32: length, type, then data
        case 0xc8:
        case 0xc9: {
          const h = t === 0xc7 ? 1 : t === 0xc8 ? 2 : 4;
          if (h > end - p) throw truncated('an extension header');
          n = h === 1 ? b[p] : h === 2 ? (b[p] << 8) | b[p + 1] : ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
          p += h;
          ext = p;
          p += 1;
          break;
        }
      }
      if (ext >= 0) {
        if (p > end) throw truncated('an extension header');
        const type = b[ext];
        // Records, bundled strings and structured-clone references: msgpackr's own extensions,
        // which our encoder never writes, and whose values are built from state outside their bytes.
        if (type === 0x72 || type === 0x62 || type === 0x69 || type === 0x70) {
          throw new RpcError('PROTOCOL', `payload refused: msgpackr extension 0x${type.toString(16)} (records, bundles, references) is not accepted`);
        }
        if (n > limits.maxBinaryBytes) throw overLimit('maxBinaryBytes', 'an extension of', n, 'bytes', limits.maxBinaryBytes);
        if (n > end - p) throw truncated('an extension');
        p += n;
        cost += kExt + n;
        if (type === kExtSet || type === kExtError || type === kExtRegExp) {
          // The value after it is read into it: one level deeper, as msgpackr recurses.
          if (depth + 1 > maxDepth) throw tooDeep(maxDepth);
          stack[++depth] = 1;
          owed++;
          setNext = type === kExtSet;
        }
        if (cost > budget) throw overBudget(cost, end - start, limits);
        continue;
      }
    }
    // An array or a map of `n`.
    if (isMap) {
      if (n > limits.maxMapSize) throw overLimit('maxMapSize', 'a map of', n, 'entries', limits.maxMapSize);
      cost += kContainer + n * kEntry;
      n *= 2;
    } else {
      if (n > limits.maxArrayLength) throw overLimit('maxArrayLength', 'an array of', n, 'elements', limits.maxArrayLength);
      cost += kContainer;
      if (setNext) cost += n * kSetEntry;
    }
    setNext = false;
    if (depth + 1 > maxDepth) throw tooDeep(maxDepth);
    // Every value owed takes a byte at least: a length beyond what remains is a lie, refused
    // before anyone allocates for it.
    owed += n;
    if (owed > end - p) throw truncated(isMap ? 'a map' : 'an array');
    if (cost > budget) throw overBudget(cost, end - start, limits);
    if (n > 0) stack[++depth] = n;
  }
}

/**
 * Checks one JSON payload against `limits` before JSON.parse builds it; throws the RpcError that
 * refuses it. Malformed text is left to JSON.parse. `stack` holds, per open container, its commas
 * so far (length at least maxDepth + 2), and `kinds` whether it is an object (1) or an array (0).
 */
export function scanJson(b: Uint8Array, limits: ResolvedDecodeLimits, stack: Float64Array, kinds: Uint8Array): void {
  // Hot path: one pass over the bytes with a flat switch, no allocation (a loop beats indexOf on
  // the short strings most JSON holds). Values are counted from the punctuation: each comma
  // or colon starts one, and so does each container (an upper bound on the values).
  const end = b.length;
  const bytes = end;
  // The text the payload decodes to (up to 2 bytes per byte) lives while JSON.parse runs.
  const budget = bytes * limits.maxExpansion + kExpansionSlack;
  const maxDepth = limits.maxDepth;
  let cost = 2 * bytes;
  let elements = 1;
  let depth = 0;
  for (let i = 0; i < end; i++) {
    const c = b[i];
    switch (c) {
      case 0x22: {
        // '"': to the closing quote; a backslash escapes the byte after it.
        let j = i + 1;
        while (j < end) {
          const d = b[j];
          if (d === 0x22) break;
          j += d === 0x5c ? 2 : 1;
        }
        if (j >= end) return; // unterminated: JSON.parse says so
        const n = j - i - 1;
        if (n > limits.maxStringBytes) throw overLimit('maxStringBytes', 'a string of', n, 'bytes', limits.maxStringBytes);
        cost += kString + n;
        i = j;
        break;
      }
      case 0x5b: // '['
      case 0x7b: // '{'
        if (++depth > maxDepth) throw tooDeep(maxDepth);
        stack[depth] = 0;
        kinds[depth] = c === 0x7b ? 1 : 0;
        cost += kSlot + kContainer;
        elements++;
        break;
      case 0x5d: // ']'
      case 0x7d: // '}'
        if (depth > 0) depth--;
        break;
      case 0x2c: {
        // ',': one more element or entry of the container open here.
        const n = ++stack[depth] + 1;
        if (kinds[depth] === 1) {
          if (n > limits.maxMapSize) throw overLimit('maxMapSize', 'an object of', n, 'entries', limits.maxMapSize);
          cost += kEntry;
        } else if (n > limits.maxArrayLength) throw overLimit('maxArrayLength', 'an array of', n, 'elements', limits.maxArrayLength);
        cost += kSlot + kNumber;
        elements++;
        break;
      }
      case 0x3a: // ':': the value of an entry
        cost += kSlot + kNumber;
        elements++;
        break;
      default:
        continue;
    }
    if (elements > limits.maxElements) throw overLimit('maxElements', 'a payload of', elements, 'values', limits.maxElements);
    if (cost > budget) throw overBudget(cost, bytes, limits);
  }
}
