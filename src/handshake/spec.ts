/**
 * Which handshake a listener or connection runs, as it crosses from the main thread to the
 * connection worker inside a `TaskSpec`. The secret travels here (structured clone, same process)
 * and nowhere else: never into an error, a log or the wire.
 */

/** The scheme names `PeerInfo.auth` reports. */
export type HandshakeScheme = 'version' | 'hmac' | 'signed-process';

export type HandshakeSpec =
  | { scheme: 'none' }
  | { scheme: 'version'; timeoutMs: number }
  | {
      scheme: 'hmac';
      timeoutMs: number;
      secret: Uint8Array;
      /** Client side: require the server to prove it knows the secret too (docs/PROTOCOL.md §4). */
      mutual: boolean;
    }
  | {
      scheme: 'signed-process';
      timeoutMs: number;
      /** The Ed25519 key a client's image must be signed with (raw 32 bytes): a server's; a client uses none. */
      publicKey?: Uint8Array;
    };

/** Each handshake step's default time limit. */
export const kDefaultHandshakeTimeoutMs = 5000;
