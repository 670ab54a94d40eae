/** A `net.Socket` (TCP, Unix socket, Windows named pipe) as a ByteStream. */
import net from 'node:net';
import type { ByteStream, StreamEvents, StreamListener } from './types.js';

export class NetStream implements ByteStream {
  readonly remoteAddress?: string;
  readonly remotePid?: number;
  readonly #socket: net.Socket;
  #closed = false;

  constructor(socket: net.Socket, remoteAddress?: string, remotePid?: number) {
    this.#socket = socket;
    if (remoteAddress !== undefined) this.remoteAddress = remoteAddress;
    if (remotePid !== undefined) this.remotePid = remotePid;
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

/** Connects a net socket; resolves once connected, rejects with the socket's error. */
export function connectNet(options: net.NetConnectOpts, remoteAddress: string): Promise<NetStream> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(options);
    const onError = (err: Error) => reject(err);
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(new NetStream(socket, remoteAddress));
    });
  });
}

/** Listens with a net server; `describe` names each accepted socket's peer. */
export function listenNet(
  listen: net.ListenOptions,
  onStream: (stream: ByteStream) => void,
  describe: (socket: net.Socket) => string | undefined,
  pidOf?: (socket: net.Socket) => number | undefined,
): Promise<{ server: net.Server; listener: (address: unknown, onClose?: () => Promise<void> | void) => StreamListener }> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ noDelay: true }, (socket) => onStream(new NetStream(socket, describe(socket), pidOf?.(socket))));
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
