/**
 * The transport interface: bytes in, bytes out, close. A transport knows nothing of frames,
 * codecs or calls; the connection composes framing and the call layer on top of it. Adapters run
 * inside connection workers. Implement `TransportAdapter` and pass `custom(moduleUrl, options)` to
 * plug in your own.
 */

import type { TlsPeerInfo } from '../types.js';

/** What a stream tells its owner. Each is called on the worker's event loop. */
export interface StreamEvents {
  /** Bytes arrived. The stream does not reuse `chunk` afterwards. */
  data(chunk: Uint8Array): void;
  /** The write buffer emptied after `write` returned false. */
  drain(): void;
  /** The stream is closed (by either side). Called once; `error` when it failed rather than ended. */
  close(error?: Error): void;
}

/** One connected, ordered, reliable byte stream. */
export interface ByteStream {
  /** The peer's address as text, when the transport has one. */
  readonly remoteAddress?: string;
  /** The peer's pid, when the OS reports it (never taken from the wire). */
  readonly remotePid?: number;
  /** When the stream is a TLS session: the peer's certificate as TLS verified it. */
  readonly tls?: TlsPeerInfo;
  /** Starts delivering events; called once by the connection. */
  start(events: StreamEvents): void;
  /** Queues bytes; the stream owns `chunk`'s bytes afterwards (a view: its ArrayBuffer may hold other data). Returns false when the caller should wait for `drain`. */
  write(chunk: Uint8Array): boolean;
  /**
   * Optional: queues `head` followed by `body`, copying both before it returns (the caller keeps
   * them); false as for `write`. A stream whose writes copy anyway (a shared-memory ring) offers
   * it, and the connection then hands it large frames as they are, copied once.
   */
  writeCopy?(head: Uint8Array, body: Uint8Array): boolean;
  /** Stops or resumes delivering `data` (backpressure toward the peer). */
  pause(): void;
  resume(): void;
  /** Ends the stream after queued bytes are written; `close` follows. Does nothing if already closed. */
  end(): void;
  /** Closes at once, dropping queued bytes; `close` follows. */
  destroy(error?: Error): void;
}

/** A listening endpoint. */
export interface StreamListener {
  /** What it is bound to, as reported to `RunningNode.addresses` (structured-cloneable). */
  readonly address: unknown;
  /** Stops accepting and releases the address (removes a socket file). Does not close accepted streams. */
  close(): Promise<void>;
}

export interface TransportAdapter {
  /** Connects to `options`; rejects with an Error whose `code` is the errno (e.g. ECONNREFUSED) on failure. */
  connect(options: any): Promise<ByteStream>;
  /** Listens at `options`; `onStream` receives each accepted stream. */
  listen(options: any, onStream: (stream: ByteStream) => void): Promise<StreamListener>;
}
