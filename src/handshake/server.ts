/**
 * The server's side of the handshake: Hello with a fresh nonce, check the client's ClientAuth, then
 * Ack. A refusal is sent as Ack status 1 with a reason (never containing the secret) before the
 * connection closes; the call layer never starts on a refused connection.
 */
import { RpcError } from '../errors.js';
import { clientProof, newNonce, proofMatches, serverProof } from './hmac.js';
import { AckStatus, SchemeCode, Tag, kHandshakeVersion, schemeName, type ClientAuth } from './packets.js';
import type { HandshakeChannel } from './channel.js';
import { verifySignedProcess } from './signed-process.js';
import type { HandshakeScheme, HandshakeSpec } from './spec.js';

/** What a rejection's Ack reason starts with when the server is one-to-one and busy; the client maps it to BUSY. */
export const kBusyReasonPrefix = 'busy: ';

export interface ServerHandshakeOptions {
  spec: Exclude<HandshakeSpec, { scheme: 'none' }>;
  /**
   * Called once the client has proved itself, just before the Ack: return an error (code BUSY) to
   * refuse it, or undefined to accept. Runs in the same turn as the Ack, so accepting can reserve
   * the server's one slot.
   */
  admit?(): RpcError | undefined;
  /** Signed process: the client's pid as the OS reports it, or undefined when it cannot tell. */
  peerPid?(): Promise<number | undefined>;
}

export interface HandshakeResult {
  auth: HandshakeScheme;
  /** Signed process: the verified client's pid. */
  pid?: number;
}

/** Runs the server's handshake; resolves once the Ack (status 0) is written, rejects (having sent a rejection Ack when the stream allows) otherwise. */
export async function serverHandshake(channel: HandshakeChannel, options: ServerHandshakeOptions): Promise<HandshakeResult> {
  const { spec } = options;
  const nonce = newNonce();
  channel.send({ tag: Tag.Hello, version: kHandshakeVersion, scheme: SchemeCode[spec.scheme], nonce });
  try {
    const packet = await channel.receive(Tag.ClientAuth, 'ClientAuth from the client', spec.timeoutMs);
    checkClientAuth(packet, spec, nonce);
    let pid: number | undefined;
    if (spec.scheme === 'signed-process') {
      pid = await options.peerPid?.();
      if (pid === undefined) throw new RpcError('AUTH_FAILED', "signed-process: the OS does not name the client's process (needs a Unix socket or shm with the native addon built, or TCP over loopback, on Linux)");
      // Node.start() refuses to serve without a key; a server must never take an unchecked client.
      if (spec.publicKey === undefined) throw new RpcError('AUTH_FAILED', 'signed-process: this server has no public key to check clients against');
      await verifySignedProcess(pid, spec.publicKey);
    }
    const refusal = options.admit?.();
    if (refusal) throw refusal;
    const proof = spec.scheme === 'hmac' && packet.clientNonce ? serverProof(spec.secret, kHandshakeVersion, packet.clientNonce, nonce) : undefined;
    channel.send({ tag: Tag.Ack, status: AckStatus.Ok, reason: '', ...(proof ? { serverProof: proof } : {}) });
    return { auth: spec.scheme, ...(pid !== undefined ? { pid } : {}) };
  } catch (err) {
    const reason = RpcError.is(err) ? err : new RpcError('HANDSHAKE_FAILED', `handshake failed: ${(err as Error)?.message ?? err}`, { cause: err });
    const text = reason.code === 'BUSY' ? kBusyReasonPrefix + reason.message : reason.message;
    channel.send({ tag: Tag.Ack, status: AckStatus.Rejected, reason: text });
    throw reason;
  }
}

function checkClientAuth(auth: ClientAuth, spec: ServerHandshakeOptions['spec'], nonce: Uint8Array): void {
  if (auth.version !== kHandshakeVersion) {
    throw new RpcError('HANDSHAKE_FAILED', `unsupported handshake version ${auth.version}: this server speaks version ${kHandshakeVersion}`);
  }
  if (auth.scheme !== SchemeCode[spec.scheme]) {
    throw new RpcError('HANDSHAKE_FAILED', `handshake scheme mismatch: this server requires ${spec.scheme}, the client offered ${schemeName(auth.scheme)}`);
  }
  if (auth.clientNonce !== undefined && (spec.scheme !== 'hmac' || auth.clientNonce.length !== 32)) {
    throw new RpcError('HANDSHAKE_FAILED', `unexpected client nonce of ${auth.clientNonce.length} bytes for scheme ${spec.scheme}`);
  }
  if (spec.scheme === 'hmac' && !proofMatches(clientProof(spec.secret, kHandshakeVersion, nonce), auth.proof)) {
    throw new RpcError('AUTH_FAILED', 'HMAC proof rejected: the client does not know the shared secret');
  }
}
