/**
 * The VSOCK transport (AF_VSOCK, host <-> VM sockets). Node cannot wrap an AF_VSOCK fd in a
 * net.Socket, so the native addon owns the socket and does the I/O (an FdStream polled on the
 * connection worker's own loop); this file adapts that to a ByteStream.
 */
import { loadNative, type FdStream, type NativeError } from '../shm/native.js';
import type { VsockDescriptor } from './descriptors.js';
import { formatAddress } from './descriptors.js';
import type { ByteStream, StreamEvents, TransportAdapter } from './types.js';

/** How long a vsock connect may take before it fails with ETIMEDOUT. */
export const kVsockConnectTimeoutMs = 5000;

/** A ByteStream over a connected socket fd (any stream socket: vsock, or a socketpair in tests). Owns the fd. */
export class FdByteStream implements ByteStream {
  readonly remoteAddress?: string;
  readonly #fd: number;
  #native: FdStream | undefined;
  #events: StreamEvents | undefined;
  #closed = false;
  #paused = false;

  constructor(fd: number, remoteAddress?: string) {
    this.#fd = fd;
    if (remoteAddress !== undefined) this.remoteAddress = remoteAddress;
  }

  start(events: StreamEvents): void {
    this.#events = events;
    if (this.#closed) {
      queueMicrotask(() => events.close());
      return;
    }
    this.#native = new (loadNative().FdStream)(this.#fd, {
      onData: (chunk) => events.data(chunk),
      onDrain: () => events.drain(),
      onClose: (error?: NativeError) => this.#finish(error),
    });
    if (this.#paused) this.#native.pause();
  }

  write(chunk: Uint8Array): boolean {
    if (this.#closed || this.#native === undefined) return true;
    return this.#native.write(chunk);
  }

  pause(): void {
    this.#paused = true;
    this.#native?.pause();
  }

  resume(): void {
    this.#paused = false;
    this.#native?.resume();
  }

  end(): void {
    if (!this.#closed) this.#native?.end();
  }

  destroy(error?: Error): void {
    if (this.#closed) return;
    if (this.#native === undefined) {
      // Never started: the fd is still ours alone.
      this.#closed = true;
      try {
        loadNative().closeFd(this.#fd);
      } catch {
        // already gone
      }
      return;
    }
    this.#native.destroy();
    queueMicrotask(() => this.#finish(error));
  }

  #finish(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#events?.close(error);
  }
}

export const vsockTransport: TransportAdapter = {
  async connect(d: VsockDescriptor) {
    const fd = await loadNative().vsockConnect({ cid: d.cid, port: d.port, timeoutMs: kVsockConnectTimeoutMs });
    return new FdByteStream(fd, formatAddress(d));
  },
  async listen(d: VsockDescriptor, onStream) {
    const native = loadNative();
    const bound = native.vsockListen({ cid: d.cid, port: d.port });
    // Accept errors (EMFILE and the like) must not crash the worker; the listener keeps serving.
    const acceptor = new native.FdAcceptor(bound.fd, (error, fd) => {
      if (error === null && fd !== undefined) onStream(new FdByteStream(fd));
    });
    return {
      address: { kind: 'vsock', cid: bound.cid, port: bound.port },
      close: async () => acceptor.close(),
    };
  },
};
