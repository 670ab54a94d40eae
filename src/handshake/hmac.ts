/**
 * HMAC proofs of the handshake. The client proves it knows the shared secret over the server's fresh
 * nonce; with mutual HMAC the server proves the same over the client's nonce (and its own, under a
 * different label, so neither proof can be replayed as the other).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { kNonceBytes } from './packets.js';

const kClientLabel = Buffer.from('ogurpchik/handshake/v1');
const kServerLabel = Buffer.from('ogurpchik/handshake/v1/server');

/** A fresh random nonce; one per connection. */
export function newNonce(): Uint8Array {
  return randomBytes(kNonceBytes);
}

function versionBytes(version: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(version);
  return b;
}

/** The client's proof: HMAC-SHA256(secret, "ogurpchik/handshake/v1" ‖ version u16 LE ‖ server nonce). */
export function clientProof(secret: Uint8Array, version: number, serverNonce: Uint8Array): Uint8Array {
  return createHmac('sha256', secret).update(kClientLabel).update(versionBytes(version)).update(serverNonce).digest();
}

/** The server's mutual proof: HMAC-SHA256(secret, "ogurpchik/handshake/v1/server" ‖ version u16 LE ‖ client nonce ‖ server nonce). */
export function serverProof(secret: Uint8Array, version: number, clientNonce: Uint8Array, serverNonce: Uint8Array): Uint8Array {
  return createHmac('sha256', secret).update(kServerLabel).update(versionBytes(version)).update(clientNonce).update(serverNonce).digest();
}

/** Compares a received proof with the expected one in constant time (a wrong length is simply false). */
export function proofMatches(expected: Uint8Array, received: Uint8Array): boolean {
  // timingSafeEqual throws on a length mismatch; the expected length is public (32), so this leaks nothing.
  return expected.length === received.length && timingSafeEqual(expected, received);
}
