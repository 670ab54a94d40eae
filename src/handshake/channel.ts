/**
 * The raw byte stream of a connection during its handshake: packets out, packets in with a time
 * limit per step. Owned by the connection, which feeds it what the stream delivers until the
 * handshake is over and then takes back the bytes that followed it for the framing layer.
 */
import { RpcError } from '../errors.js';
import { PacketReader, decodePacket, encodePacket, type Packet } from './packets.js';

interface Waiter {
  tag: number;
  what: string;
  resolve(packet: Packet): void;
  reject(err: RpcError): void;
  timer: NodeJS.Timeout;
}

export class HandshakeChannel {
  readonly #reader = new PacketReader();
  readonly #write: (bytes: Uint8Array) => void;
  #waiter: Waiter | undefined;
  #failure: RpcError | undefined;

  /** `write` sends bytes to the peer (the connection drops them once it is closing). */
  constructor(write: (bytes: Uint8Array) => void) {
    this.#write = write;
  }

  /** Bytes from the peer. */
  push(chunk: Uint8Array): void {
    this.#reader.push(chunk);
    this.#settle();
  }

  /** The stream closed or failed: a pending or later `receive` rejects with `reason`. */
  fail(reason: RpcError): void {
    this.#failure ??= reason;
    this.#settle();
  }

  /** Writes one packet. */
  send(packet: Packet): void {
    this.#write(encodePacket(packet));
  }

  /**
   * The next packet, which must have `tag`; rejects with HANDSHAKE_FAILED when it is another or
   * malformed, the stream closes, or `timeoutMs` passes. `what` names it in errors ("Ack from the server").
   */
  receive<T extends Packet['tag']>(tag: T, what: string, timeoutMs: number): Promise<Extract<Packet, { tag: T }>> {
    if (this.#waiter) return Promise.reject(new RpcError('HANDSHAKE_FAILED', `handshake receives one packet at a time (${what} while ${this.#waiter.what})`));
    return new Promise<Packet>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = undefined;
        reject(new RpcError('HANDSHAKE_FAILED', `handshake timed out: no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiter = { tag, what, resolve, reject, timer };
      this.#settle();
    }) as Promise<Extract<Packet, { tag: T }>>;
  }

  /** Takes the bytes that arrived after the last packet: the start of the framed stream. */
  takeRest(): Uint8Array {
    return this.#reader.takeRest();
  }

  #settle(): void {
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    let outcome: { packet: Packet } | { error: RpcError } | undefined;
    try {
      const body = this.#reader.next();
      if (body !== undefined) {
        // Checked before decoding, so a peer speaking something else (e.g. frames) is named as such.
        if (body[0] !== waiter.tag) throw new RpcError('HANDSHAKE_FAILED', `expected ${waiter.what} (tag ${waiter.tag}), got tag ${body[0]}`);
        outcome = { packet: decodePacket(body) };
      }
    } catch (err) {
      outcome = { error: err as RpcError };
    }
    if (outcome === undefined && this.#failure !== undefined) outcome = { error: this.#failure };
    if (outcome === undefined) return;
    this.#waiter = undefined;
    clearTimeout(waiter.timer);
    if ('packet' in outcome) waiter.resolve(outcome.packet);
    else waiter.reject(outcome.error);
  }
}
