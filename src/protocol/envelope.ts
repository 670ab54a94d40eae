/**
 * Every wire shape of ogurpchik, defined once. A frame body is an envelope: one kind byte, a fixed
 * header for that kind, then the codec-encoded payload (see docs/PROTOCOL.md).
 *
 *   Request   1 | id u64 | deadlineMs u32 | payload     (deadline relative, 0 = none)
 *   Response  2 | id u64 | payload
 *   Error     3 | id u64 | payload = codec(WireError & { origin })
 *   Event     4 | payload                               (one-way, no reply)
 *   Cancel    5 | id u64                                (the caller gave up on call `id`)
 *   Ping      6 | token u64                             (any u64: not an id)
 *   Pong      7 | token u64                             (the Ping's token, byte for byte)
 *   Close     8 | payload = codec(WireError)            (why the sender is closing, e.g. BUSY)
 *   Open      9 | id u64 | deadlineMs u32 | flags u8 | credit u32 | payload   (a streaming call)
 *   Item     10 | id u64 | dir u8 | payload             (one item of a stream)
 *   End      11 | id u64 | dir u8                       (the caller's request stream ended, or the callee's result stream)
 *   Credit   12 | id u64 | dir u8 | n u32               (the receiver of a stream takes n more items; 0 = stop)
 *
 * `dir` says whose stream: 0 = the caller's request stream (up), 1 = the callee's result stream
 * (down). The id is always the caller's call id, so `dir` also says which end's table it names.
 *
 * All integers little-endian. Any other kind byte from a peer is a PROTOCOL error (checkEnvelope);
 * the runtime's in-process records, which share a ring with these bodies, are ControlKind
 * (src/bridge/control.ts).
 *
 * Every byte offset of this layout is written here only: the header writers and the named readers
 * below share the field positions, and nothing else in src/ indexes into a body.
 */
import { RpcError } from '../errors.js';

/** Version of this envelope layout; bumped on any incompatible change. */
export const kProtocolVersion = 1;

export const Kind = {
  Request: 1,
  Response: 2,
  Error: 3,
  Event: 4,
  Cancel: 5,
  Ping: 6,
  Pong: 7,
  Close: 8,
  Open: 9,
  Item: 10,
  End: 11,
  Credit: 12,
} as const;
export type Kind = (typeof Kind)[keyof typeof Kind];

export type Envelope =
  | { kind: typeof Kind.Request; id: number; deadlineMs: number; payload: Uint8Array }
  | { kind: typeof Kind.Response; id: number; payload: Uint8Array }
  | { kind: typeof Kind.Error; id: number; payload: Uint8Array }
  | { kind: typeof Kind.Event; payload: Uint8Array }
  | { kind: typeof Kind.Cancel; id: number }
  | { kind: typeof Kind.Ping; token: bigint }
  | { kind: typeof Kind.Pong; token: bigint }
  | { kind: typeof Kind.Close; payload: Uint8Array }
  | { kind: typeof Kind.Open; id: number; deadlineMs: number; flags: number; credit: number; payload: Uint8Array }
  | { kind: typeof Kind.Item; id: number; dir: StreamDir; payload: Uint8Array }
  | { kind: typeof Kind.End; id: number; dir: StreamDir }
  | { kind: typeof Kind.Credit; id: number; dir: StreamDir; credit: number };

/** Open flags: what streams the call has. */
export const OpenFlag = {
  /** The callee answers with a stream of items (Item dir 1 …, then End dir 1 or Error). */
  ResultStream: 1,
  /** The caller sends its request as a stream of items (Item dir 0 …, then End dir 0); the payload is empty. */
  RequestStream: 2,
} as const;

/** Whose stream an Item, End or Credit is about. */
export const StreamDir = { Up: 0, Down: 1 } as const;
export type StreamDir = (typeof StreamDir)[keyof typeof StreamDir];

/** Header bytes before the payload, per kind (index = kind). */
const kHeader = [0, 13, 9, 9, 1, 9, 9, 9, 1, 18, 10, 10, 14];

/** The kind byte that leads every body, and every control record in a ring (see ControlKind in control.ts). */
export const kKindBytes = 1;

// Where each header field sits, after the kind byte at 0.
/** u64: the call id (Request, Response, Error, Cancel, Open, Item, End, Credit), or a Ping's or Pong's token. */
const kIdAt = 1;
/** u32: a Request's or Open's relative deadline. */
const kDeadlineAt = 9;
/** u8: an Open's flags. */
const kFlagsAt = 13;
/** u32: the credit an Open grants the callee's result stream. */
const kOpenCreditAt = 14;
/** u8: an Item's, End's or Credit's stream direction. */
const kDirAt = 9;
/** u32: a Credit's n. */
const kCreditAt = 10;

/** Header length of a body of each kind (kHeader[kind]); the payload follows it. */
export function headerBytes(kind: Kind): number {
  return kHeader[kind];
}

// Hot path: hand-written byte reads and writes; a DataView per frame would allocate.
function writeU64(b: Uint8Array, at: number, v: number): void {
  const lo = v >>> 0;
  const hi = Math.floor(v / 0x100000000) >>> 0;
  b[at] = lo;
  b[at + 1] = lo >>> 8;
  b[at + 2] = lo >>> 16;
  b[at + 3] = lo >>> 24;
  b[at + 4] = hi;
  b[at + 5] = hi >>> 8;
  b[at + 6] = hi >>> 16;
  b[at + 7] = hi >>> 24;
}

function readU32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

function readU64(b: Uint8Array, at: number): number {
  const hi = readU32(b, at + 4);
  if (hi > 0x1fffff) throw new RpcError('PROTOCOL', 'envelope id exceeds 2^53');
  return hi * 0x100000000 + readU32(b, at);
}

export function writeU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v;
  b[at + 1] = v >>> 8;
  b[at + 2] = v >>> 16;
  b[at + 3] = v >>> 24;
}

let standaloneScratch: HeaderScratch | undefined;
/** The scratch of the standalone encoders below: `body()` copies the header out of it at once. */
function standalone(): HeaderScratch {
  return (standaloneScratch ??= new HeaderScratch());
}

/** A standalone body: the header (written by the header writers below, the one place each layout is defined) then the payload. */
function body(head: Uint8Array, payload?: Uint8Array): Uint8Array {
  if (payload === undefined || payload.length === 0) return head.slice();
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

export function encodeRequest(id: number, deadlineMs: number, payload: Uint8Array): Uint8Array {
  return body(requestHeader(standalone(), id, deadlineMs), payload);
}

export function encodeResponse(id: number, payload: Uint8Array): Uint8Array {
  return body(idHeader(standalone(), Kind.Response, id), payload);
}

export function encodeError(id: number, payload: Uint8Array): Uint8Array {
  return body(idHeader(standalone(), Kind.Error, id), payload);
}

export function encodeEvent(payload: Uint8Array): Uint8Array {
  return body(kindHeader(standalone(), Kind.Event), payload);
}

export function encodeCancel(id: number): Uint8Array {
  return body(idHeader(standalone(), Kind.Cancel, id));
}

/** A Ping or Pong with `token`, any u64 (a number up to 2^53-1, or a bigint). */
export function encodePing(kind: typeof Kind.Ping | typeof Kind.Pong, token: number | bigint): Uint8Array {
  const out = new Uint8Array(kHeader[kind]);
  out[0] = kind;
  new DataView(out.buffer).setBigUint64(kIdAt, BigInt(token), true);
  return out;
}

/** The Pong that answers `ping` (a checked Ping body): its token copied as bytes, whatever u64 it is. */
export function encodePong(ping: Uint8Array): Uint8Array {
  const out = ping.slice(0, kHeader[Kind.Ping]);
  out[0] = Kind.Pong;
  return out;
}

export function encodeClose(payload: Uint8Array): Uint8Array {
  return body(kindHeader(standalone(), Kind.Close), payload);
}

/** The kind byte of a body, after checking the body is long enough for that kind's header. */
export function checkEnvelope(body: Uint8Array): Kind {
  const kind = body.length > 0 ? kindOf(body) : 0;
  const header = kHeader[kind];
  if (header === undefined || header === 0) throw new RpcError('PROTOCOL', `unknown envelope kind ${kind}`);
  if (body.length < header) throw new RpcError('PROTOCOL', `envelope of kind ${kind} is ${body.length} bytes, shorter than its ${header}-byte header`);
  if ((kind === Kind.Cancel || kind === Kind.Ping || kind === Kind.Pong || kind === Kind.End || kind === Kind.Credit) && body.length !== header) {
    throw new RpcError('PROTOCOL', `envelope of kind ${kind} has trailing bytes`);
  }
  if (kind === Kind.Open && (openFlagsOf(body) & ~3) !== 0) throw new RpcError('PROTOCOL', `Open envelope has unknown flags ${openFlagsOf(body)}`);
  if ((kind === Kind.Item || kind === Kind.End || kind === Kind.Credit) && body[kDirAt] > 1) {
    throw new RpcError('PROTOCOL', `stream direction ${body[kDirAt]} is neither 0 nor 1`);
  }
  return kind as Kind;
}

// The readers of a body's fields. Hot path: each is one read at a fixed place (inlined), no
// envelope object. All but kindOf take a body checkEnvelope passed, of a kind that has the field.

/** The first byte, unchecked: a Kind in a frame body, or in a ring record possibly a ControlKind (see control.ts). */
export function kindOf(body: Uint8Array): number {
  return body[0];
}

/** The id of a body whose kind carries one (Request, Response, Error, Cancel, Open, Item, End, Credit); a Ping's token is no id. */
export function envelopeId(body: Uint8Array): number {
  return readU64(body, kIdAt);
}

/** A Request's or Open's deadline, ms from its arrival (0 = none). */
export function deadlineMsOf(body: Uint8Array): number {
  return readU32(body, kDeadlineAt);
}

/** An Open's flags (OpenFlag bits). */
export function openFlagsOf(body: Uint8Array): number {
  return body[kFlagsAt];
}

/** The credit an Open grants the callee's result stream. */
export function openCreditOf(body: Uint8Array): number {
  return readU32(body, kOpenCreditAt);
}

/** Whose stream an Item, End or Credit is about. */
export function dirOf(body: Uint8Array): StreamDir {
  return body[kDirAt] as StreamDir;
}

/** A Credit's n: the items its sender takes more (0 = stop). */
export function creditOf(body: Uint8Array): number {
  return readU32(body, kCreditAt);
}

/** A Ping's or Pong's token, any u64. */
export function tokenOf(body: Uint8Array): bigint {
  return new DataView(body.buffer, body.byteOffset + kIdAt, 8).getBigUint64(0, true);
}

/** Where a body's payload starts: its kind's header length. */
export function payloadStart(body: Uint8Array): number {
  return kHeader[body[0]];
}

/** A body's payload (a view into it; empty for a kind without one). */
export function payloadOf(body: Uint8Array): Uint8Array {
  return body.subarray(kHeader[body[0]]);
}

/**
 * Parses a frame body into the Envelope union, with the readers above. Throws RpcError('PROTOCOL')
 * on anything malformed; payloads are views into `body`. The runtime reads fields in place
 * instead; this is the one spelled-out shape, for tests and tools.
 */
export function decodeEnvelope(body: Uint8Array): Envelope {
  const kind = checkEnvelope(body);
  switch (kind) {
    case Kind.Request:
      return { kind, id: envelopeId(body), deadlineMs: deadlineMsOf(body), payload: payloadOf(body) };
    case Kind.Response:
    case Kind.Error:
      return { kind, id: envelopeId(body), payload: payloadOf(body) };
    case Kind.Event:
    case Kind.Close:
      return { kind, payload: payloadOf(body) };
    case Kind.Cancel:
      return { kind, id: envelopeId(body) };
    case Kind.Ping:
    case Kind.Pong:
      return { kind, token: tokenOf(body) };
    case Kind.Open:
      return { kind, id: envelopeId(body), deadlineMs: deadlineMsOf(body), flags: openFlagsOf(body), credit: openCreditOf(body), payload: payloadOf(body) };
    case Kind.Item:
      return { kind, id: envelopeId(body), dir: dirOf(body), payload: payloadOf(body) };
    case Kind.End:
      return { kind, id: envelopeId(body), dir: dirOf(body) };
    case Kind.Credit:
      return { kind, id: envelopeId(body), dir: dirOf(body), credit: creditOf(body) };
    default:
      throw new RpcError('PROTOCOL', `unknown envelope kind ${kind}`);
  }
}

/**
 * Where the header writers put a header: 24 bytes and a view of each header length made once, so
 * that the hot path allocates nothing per message (a body goes out as header + payload without
 * being concatenated first; `send` copies both before it returns).
 */
export class HeaderScratch {
  readonly bytes = new Uint8Array(24);
  readonly #views: Uint8Array[] = Array.from({ length: 25 }, (_, n) => this.bytes.subarray(0, n));

  /** The first `n` bytes (n ≤ 24): the same view every time. */
  view(n: number): Uint8Array {
    return this.#views[n];
  }
}

/** Header of a Request. */
export function requestHeader(scratch: HeaderScratch, id: number, deadlineMs: number): Uint8Array {
  const b = scratch.bytes;
  b[0] = Kind.Request;
  writeU64(b, kIdAt, id);
  writeU32(b, kDeadlineAt, deadlineMs);
  return scratch.view(kHeader[Kind.Request]);
}

/** Header of a Response, Error or Cancel. */
export function idHeader(scratch: HeaderScratch, kind: Kind, id: number): Uint8Array {
  const b = scratch.bytes;
  b[0] = kind;
  writeU64(b, kIdAt, id);
  return scratch.view(kHeader[kind]);
}

/** Header of an Open (a streaming call). */
export function openHeader(scratch: HeaderScratch, id: number, deadlineMs: number, flags: number, credit: number): Uint8Array {
  const b = scratch.bytes;
  b[0] = Kind.Open;
  writeU64(b, kIdAt, id);
  writeU32(b, kDeadlineAt, deadlineMs);
  b[kFlagsAt] = flags;
  writeU32(b, kOpenCreditAt, credit);
  return scratch.view(kHeader[Kind.Open]);
}

/** Header of an Item or End. */
export function streamHeader(scratch: HeaderScratch, kind: typeof Kind.Item | typeof Kind.End, id: number, dir: StreamDir): Uint8Array {
  const b = scratch.bytes;
  b[0] = kind;
  writeU64(b, kIdAt, id);
  b[kDirAt] = dir;
  return scratch.view(kHeader[kind]);
}

/** A whole Credit body (it has no payload). */
export function creditHeader(scratch: HeaderScratch, id: number, dir: StreamDir, credit: number): Uint8Array {
  const b = scratch.bytes;
  b[0] = Kind.Credit;
  writeU64(b, kIdAt, id);
  b[kDirAt] = dir;
  writeU32(b, kCreditAt, credit);
  return scratch.view(kHeader[Kind.Credit]);
}

/** Header of an Event or Close. */
export function kindHeader(scratch: HeaderScratch, kind: Kind): Uint8Array {
  scratch.bytes[0] = kind;
  return scratch.view(kHeader[kind]);
}
