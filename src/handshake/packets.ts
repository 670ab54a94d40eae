/**
 * The handshake packets (v1 of the Rust original, plus the optional mutual-HMAC fields described in
 * docs/PROTOCOL.md §4). Each packet on the stream is a u32 LE body length, then the body; a body is
 * at most 4096 bytes. Encoders and decoders are pure: a decoder either returns a packet or throws
 * `RpcError('HANDSHAKE_FAILED')`, whatever the bytes.
 */
import { RpcError } from '../errors.js';

export const kHandshakeVersion = 1;
/** Largest packet body either side accepts. */
export const kMaxPacketBytes = 4096;
/** Length of every nonce (server's Hello nonce and the client's mutual-HMAC nonce). */
export const kNonceBytes = 32;
export const kPacketLengthBytes = 4;

export const Tag = { Hello: 1, ClientAuth: 2, Ack: 3 } as const;

/** Scheme numbers on the wire. */
export const SchemeCode = { version: 0, hmac: 1, 'signed-process': 2 } as const;
export type SchemeName = keyof typeof SchemeCode;
const kSchemeNames: readonly SchemeName[] = ['version', 'hmac', 'signed-process'];

/** The name of scheme number `code` as people read it, also for numbers no side knows. */
export function schemeName(code: number): string {
  return kSchemeNames[code] ?? `unknown scheme ${code}`;
}

export const AckStatus = { Ok: 0, Rejected: 1 } as const;

export interface Hello {
  tag: typeof Tag.Hello;
  version: number;
  scheme: number;
  nonce: Uint8Array;
}

export interface ClientAuth {
  tag: typeof Tag.ClientAuth;
  version: number;
  scheme: number;
  proof: Uint8Array;
  /** Mutual HMAC: the nonce the server must prove it knows the secret over. Absent in plain v1. */
  clientNonce?: Uint8Array;
}

export interface Ack {
  tag: typeof Tag.Ack;
  status: number;
  /** UTF-8; a rejection says why. */
  reason: string;
  /** Mutual HMAC, status Ok only: the server's proof over the client's nonce. Absent in plain v1. */
  serverProof?: Uint8Array;
}

export type Packet = Hello | ClientAuth | Ack;

const kUtf8 = new TextEncoder();
const kUtf8Strict = new TextDecoder('utf-8', { fatal: true });

/** Encodes one packet with its u32 length prefix, ready to write. */
export function encodePacket(packet: Packet): Uint8Array {
  const body = encodeBody(packet);
  if (body.length > kMaxPacketBytes) throw new RpcError('HANDSHAKE_FAILED', `handshake packet of ${body.length} bytes exceeds ${kMaxPacketBytes}`);
  const out = new Uint8Array(kPacketLengthBytes + body.length);
  new DataView(out.buffer).setUint32(0, body.length, true);
  out.set(body, kPacketLengthBytes);
  return out;
}

function encodeBody(packet: Packet): Uint8Array {
  switch (packet.tag) {
    case Tag.Hello: {
      const w = new Writer(1 + 2 + 1 + 2 + packet.nonce.length);
      w.u8(Tag.Hello).u16(packet.version).u8(packet.scheme).bytes16(packet.nonce);
      return w.out;
    }
    case Tag.ClientAuth: {
      const extra = packet.clientNonce ? 2 + packet.clientNonce.length : 0;
      const w = new Writer(1 + 2 + 1 + 2 + packet.proof.length + extra);
      w.u8(Tag.ClientAuth).u16(packet.version).u8(packet.scheme).bytes16(packet.proof);
      if (packet.clientNonce) w.bytes16(packet.clientNonce);
      return w.out;
    }
    case Tag.Ack: {
      const reason = kUtf8.encode(packet.reason);
      const extra = packet.serverProof ? 2 + packet.serverProof.length : 0;
      const w = new Writer(1 + 1 + 2 + reason.length + extra);
      w.u8(Tag.Ack).u8(packet.status).bytes16(reason);
      if (packet.serverProof) w.bytes16(packet.serverProof);
      return w.out;
    }
  }
}

/** Decodes one packet body (without its length prefix). Throws HANDSHAKE_FAILED on anything malformed. */
export function decodePacket(body: Uint8Array): Packet {
  const r = new Reader(body);
  const tag = r.u8('tag');
  let packet: Packet;
  switch (tag) {
    case Tag.Hello: {
      const version = r.u16('version');
      const scheme = r.u8('scheme');
      const nonce = r.bytes16('nonce');
      packet = { tag, version, scheme, nonce };
      break;
    }
    case Tag.ClientAuth: {
      const version = r.u16('version');
      const scheme = r.u8('scheme');
      const proof = r.bytes16('proof');
      packet = { tag, version, scheme, proof };
      if (!r.done) packet.clientNonce = r.bytes16('client nonce');
      break;
    }
    case Tag.Ack: {
      const status = r.u8('status');
      const raw = r.bytes16('reason');
      let reason: string;
      try {
        reason = kUtf8Strict.decode(raw);
      } catch {
        throw malformed('the Ack reason is not valid UTF-8');
      }
      packet = { tag, status, reason };
      if (!r.done) packet.serverProof = r.bytes16('server proof');
      break;
    }
    default:
      throw malformed(`unknown handshake packet tag ${tag}`);
  }
  if (!r.done) throw malformed(`${r.remaining} unexpected trailing bytes after the packet (tag ${tag})`);
  return packet;
}

/**
 * Gathers packets from arbitrary chunks. Refuses a length prefix over `kMaxPacketBytes` as soon as
 * it is read, so a peer cannot make us buffer more.
 */
export class PacketReader {
  #buffered: Uint8Array = new Uint8Array(0);

  /** Appends bytes received from the peer. */
  push(chunk: Uint8Array): void {
    if (this.#buffered.length === 0) {
      this.#buffered = chunk;
      return;
    }
    const joined = new Uint8Array(this.#buffered.length + chunk.length);
    joined.set(this.#buffered);
    joined.set(chunk, this.#buffered.length);
    this.#buffered = joined;
  }

  /** The next whole packet body, or undefined until its bytes have all arrived. Throws HANDSHAKE_FAILED on a bad length. */
  next(): Uint8Array | undefined {
    const buf = this.#buffered;
    if (buf.length < kPacketLengthBytes) return undefined;
    const len = (buf[0] | (buf[1] << 8) | (buf[2] << 16) | (buf[3] << 24)) >>> 0;
    if (len > kMaxPacketBytes) throw malformed(`handshake packet of ${len} bytes exceeds the maximum of ${kMaxPacketBytes}`);
    if (len === 0) throw malformed('empty handshake packet');
    if (buf.length < kPacketLengthBytes + len) return undefined;
    this.#buffered = buf.subarray(kPacketLengthBytes + len);
    return buf.subarray(kPacketLengthBytes, kPacketLengthBytes + len);
  }

  /** Takes the bytes received after the last packet (the start of the framed stream). */
  takeRest(): Uint8Array {
    const rest = this.#buffered;
    this.#buffered = new Uint8Array(0);
    return rest;
  }
}

function malformed(message: string): RpcError {
  return new RpcError('HANDSHAKE_FAILED', message);
}

class Writer {
  readonly out: Uint8Array;
  readonly #view: DataView;
  #at = 0;

  constructor(size: number) {
    this.out = new Uint8Array(size);
    this.#view = new DataView(this.out.buffer);
  }

  u8(v: number): this {
    this.#view.setUint8(this.#at++, v);
    return this;
  }

  u16(v: number): this {
    this.#view.setUint16(this.#at, v, true);
    this.#at += 2;
    return this;
  }

  /** A u16 length, then the bytes. */
  bytes16(b: Uint8Array): this {
    if (b.length > 0xffff) throw new RpcError('HANDSHAKE_FAILED', `handshake field of ${b.length} bytes does not fit a u16 length`);
    this.u16(b.length);
    this.out.set(b, this.#at);
    this.#at += b.length;
    return this;
  }
}

class Reader {
  readonly #b: Uint8Array;
  #at = 0;

  constructor(b: Uint8Array) {
    this.#b = b;
  }

  get done(): boolean {
    return this.#at === this.#b.length;
  }

  get remaining(): number {
    return this.#b.length - this.#at;
  }

  u8(field: string): number {
    this.#need(1, field);
    return this.#b[this.#at++];
  }

  u16(field: string): number {
    this.#need(2, field);
    const v = this.#b[this.#at] | (this.#b[this.#at + 1] << 8);
    this.#at += 2;
    return v;
  }

  /** A u16 length, then that many bytes (copied, so the packet outlives the receive buffer). */
  bytes16(field: string): Uint8Array {
    const len = this.u16(`${field} length`);
    this.#need(len, field);
    const out = new Uint8Array(this.#b.subarray(this.#at, this.#at + len)); // not slice(): on a Buffer that is a view
    this.#at += len;
    return out;
  }

  #need(n: number, field: string): void {
    if (this.#b.length - this.#at < n) throw malformed(`handshake packet truncated in its ${field}`);
  }
}

/**
 * Whether a frame body a client without a handshake received first is really a server's Hello:
 * the server runs a handshake this client does not. Returns the server's scheme name, or undefined.
 * (A Hello is exactly 38 bytes: tag 1, version 1, a known scheme, nonce length 32.)
 */
export function helloScheme(body: Uint8Array): string | undefined {
  if (body.length !== 6 + kNonceBytes || body[0] !== Tag.Hello) return undefined;
  const version = body[1] | (body[2] << 8);
  const nonceLength = body[4] | (body[5] << 8);
  if (version !== kHandshakeVersion || nonceLength !== kNonceBytes || body[3] > 2) return undefined;
  return schemeName(body[3]);
}
