/**
 * The client's side of the handshake: read Hello, answer ClientAuth, read Ack. With mutual HMAC the
 * client also sends a nonce of its own and accepts only an Ack carrying the server's proof over it,
 * so it never sends a call to a server that does not know the secret.
 */
import { RpcError } from '../errors.js';
import { clientProof, newNonce, proofMatches, serverProof } from './hmac.js';
import { AckStatus, SchemeCode, Tag, kHandshakeVersion, kNonceBytes, schemeName } from './packets.js';
import type { HandshakeChannel } from './channel.js';
import { kBusyReasonPrefix, type HandshakeResult } from './server.js';
import type { HandshakeSpec } from './spec.js';

/** Runs the client's handshake; resolves once the server accepted (and, with mutual HMAC, proved itself). */
export async function clientHandshake(channel: HandshakeChannel, spec: Exclude<HandshakeSpec, { scheme: 'none' }>): Promise<HandshakeResult> {
  const hello = await channel.receive(Tag.Hello, 'Hello from the server (does it run a handshake?)', spec.timeoutMs);
  if (hello.version !== kHandshakeVersion) {
    throw new RpcError('HANDSHAKE_FAILED', `unsupported handshake version ${hello.version}: this client speaks version ${kHandshakeVersion}`);
  }
  const scheme = SchemeCode[spec.scheme];
  if (hello.scheme !== scheme) {
    // Tell the server what we offer, so its side can name both schemes too.
    channel.send({ tag: Tag.ClientAuth, version: kHandshakeVersion, scheme, proof: new Uint8Array(0) });
    throw new RpcError('HANDSHAKE_FAILED', `handshake scheme mismatch: this client uses ${spec.scheme}, the server requires ${schemeName(hello.scheme)}`);
  }
  if (hello.nonce.length !== kNonceBytes) {
    throw new RpcError('HANDSHAKE_FAILED', `the server's nonce is ${hello.nonce.length} bytes, expected ${kNonceBytes}`);
  }
  const hmac = spec.scheme === 'hmac' ? spec : undefined;
  const clientNonce = hmac?.mutual ? newNonce() : undefined;
  channel.send({
    tag: Tag.ClientAuth,
    version: kHandshakeVersion,
    scheme,
    proof: hmac ? clientProof(hmac.secret, kHandshakeVersion, hello.nonce) : new Uint8Array(0),
    ...(clientNonce ? { clientNonce } : {}),
  });
  const ack = await channel.receive(Tag.Ack, 'Ack from the server', spec.timeoutMs);
  if (ack.status !== AckStatus.Ok) {
    if (ack.reason.startsWith(kBusyReasonPrefix)) throw new RpcError('BUSY', `the server refused the connection: ${ack.reason}`);
    const code = spec.scheme === 'version' ? 'HANDSHAKE_FAILED' : 'AUTH_FAILED';
    throw new RpcError(code, `the server rejected the handshake: ${ack.reason || `status ${ack.status}`}`, { data: { reason: ack.reason } });
  }
  if (hmac && clientNonce) {
    if (ack.serverProof === undefined) {
      throw new RpcError('AUTH_FAILED', 'mutual HMAC required but the server sent no proof that it knows the shared secret (a v1-only server?)');
    }
    if (!proofMatches(serverProof(hmac.secret, kHandshakeVersion, clientNonce, hello.nonce), ack.serverProof)) {
      throw new RpcError('AUTH_FAILED', "mutual HMAC failed: the server's proof is wrong, it does not know the shared secret");
    }
  }
  return { auth: spec.scheme };
}
