/** A `net.Socket` (TCP, Unix socket, Windows named pipe, or a TLS session over one) as a ByteStream. */
import net from 'node:net';
import type { TlsPeerInfo } from '../types.js';
import type { ByteStream, StreamEvents, StreamListener } from './types.js';

/** Who is on the other end, as far as the transport knows. */
export interface NetPeer {
  remoteAddress?: string;
  remotePid?: number;
  tls?: TlsPeerInfo;
}

export class NetStream implements ByteStream {
  readonly remoteAddress?: string;
  readonly remotePid?: number;
  readonly tls?: TlsPeerInfo;
  readonly #socket: net.Socket;
  #closed = false;

  constructor(socket: net.Socket, peer: NetPeer = {}) {
    this.#socket = socket;
    if (peer.remoteAddress !== undefined) this.remoteAddress = peer.remoteAddress;
    if (peer.remotePid !== undefined) this.remotePid = peer.remotePid;
    if (peer.tls !== undefined) this.tls = peer.tls;
    socket.setNoDelay?.(true);
  }

  start(events: StreamEvents): void {
    const socket = this.#socket;
    let failure: Error | undefined;
    socket.on('data', events.data);
    socket.on('drain', events.drain);
    socket.on('error', (err) => {
      failure = err;
    });
    socket.on('close', () => {
      this.#closed = true;
      events.close(failure);
    });
    // The peer half-closed: we have nothing more to read, so finish writing and close our side too.
    socket.on('end', () => socket.end());
    if (socket.destroyed) queueMicrotask(() => events.close(failure));
  }

  write(chunk: Uint8Array): boolean {
    if (this.#closed) return true;
    return this.#socket.write(chunk);
  }

  pause(): void {
    this.#socket.pause();
  }

  resume(): void {
    this.#socket.resume();
  }

  end(): void {
    if (!this.#closed) this.#socket.end();
  }

  destroy(error?: Error): void {
    this.#socket.destroy(error);
  }
}

/**
 * Connects a net socket; resolves once connected, rejects with the socket's error. `verify` may
 * refuse the peer once connected by throwing, which closes the socket and rejects with its error.
 */
export function connectNet(options: net.NetConnectOpts, remoteAddress: string, verify?: (socket: net.Socket) => void): Promise<NetStream> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(options);
    const onError = (err: Error) => reject(err);
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      try {
        verify?.(socket);
      } catch (err) {
        socket.destroy();
        reject(err);
        return;
      }
      resolve(new NetStream(socket, { remoteAddress }));
    });
  });
}

/**
 * Listens with a net server (by default a plain one; a `tls.Server` accepts on 'secureConnection',
 * after its handshake); `describe` says who each accepted socket's peer is.
 */
export function listenNet(
  listen: net.ListenOptions | { fd: number },
  onStream: (stream: ByteStream) => void,
  describe: (socket: net.Socket) => NetPeer,
  server: net.Server = net.createServer({ noDelay: true }),
  acceptEvent: 'connection' | 'secureConnection' = 'connection',
): Promise<{ server: net.Server; listener: (address: unknown, onClose?: () => Promise<void> | void) => StreamListener }> {
  return new Promise((resolve, reject) => {
    server.on(acceptEvent, (socket: net.Socket) => onStream(new NetStream(socket, describe(socket))));
    server.once('error', reject);
    server.listen(listen, () => {
      server.off('error', reject);
      // Accept errors (EMFILE and the like) must not crash the worker; the listener keeps serving.
      server.on('error', () => {});
      resolve({
        server,
        listener: (address, onClose) => ({
          address,
          close: () =>
            new Promise<void>((done) => {
              server.close(() => done());
            }).then(() => onClose?.()),
        }),
      });
    });
  });
}
