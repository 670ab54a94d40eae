/** Public types shared by the main thread and connection workers. */
import type { CallOptions, StreamOptions } from './call-options.js';
import type { ProxyOptions, ServiceProxy, UntypedApi } from './service/types.js';

export type { CallOptions, StreamOptions } from './call-options.js';

/** Who is on the other end of a connection. */
export interface PeerInfo {
  /** Transport kind the connection runs on (`tcp`, `unix`, or a custom transport's name). */
  transport: string;
  /** The peer's address as the transport reports it (e.g. `127.0.0.1:53412`), when it has one. */
  address?: string;
  /** Handshake scheme the peer authenticated with; `none` when no handshake ran. */
  auth: 'none' | 'version' | 'hmac' | 'signed-process';
  /** The peer's process id, when the OS told us (never taken from the wire). */
  pid?: number;
  /** Connection id, unique among the connections its pool thread hosts for this thread (its ring pair). */
  connectionId: number;
  /** When the connection is a TLS session: what TLS says of the peer. */
  tls?: TlsPeerInfo;
}

/** The TLS side of a peer (`tcp(address, { tls })`). */
export interface TlsPeerInfo {
  /** True when the peer's certificate verified against the trusted CAs (false when it sent none, e.g. a client of a server without `requestCert`). */
  authorized: boolean;
  /** The negotiated protocol, e.g. `TLSv1.3`. */
  protocol: string;
  /** The peer certificate's subject on one line, e.g. `O=Example, CN=client-1`, when it sent one. */
  subject?: string;
  /** Its issuer, same form. */
  issuer?: string;
  /** Its SHA-256 fingerprint, `AB:CD:…`. */
  fingerprint256?: string;
}

/** Calls the peer on the other end of one connection. */
export interface PeerClient<Req = unknown, Res = unknown, Ev = unknown> {
  /**
   * Sends a request and resolves with the peer's response; rejects with an `RpcError` (never stays
   * pending). An async iterable request is sent as a stream of items, with flow control; if it
   * throws, the call rejects with CANCELLED and is cancelled at the peer.
   */
  call(request: Req | AsyncIterable<Req>, options?: CallOptions): Promise<Res>;
  /**
   * Calls a handler that answers with an async iterable; yields its items in order. `break` /
   * `return()`, `signal` and `timeoutMs` cancel it at the peer (its generator's `finally` runs).
   * The request may itself be an async iterable (both ways at once).
   */
  stream<Item = Res>(request: Req | AsyncIterable<Req>, options?: StreamOptions): AsyncIterableIterator<Item>;
  /** Sends a one-way event; resolves once it is written (queued in order), with no reply. */
  notify(event: Ev): Promise<void>;
  /** A typed proxy of the service `Api` on the peer: `await api.echo('x')` calls its method `echo` (see `serveMethods`). */
  proxy<Api = UntypedApi>(options?: ProxyOptions): ServiceProxy<Api>;
}

/** What a handler receives beside each request or event. */
export interface CallContext<Req = unknown, Res = unknown> {
  /** Aborted when the caller cancels, the deadline passes, or the connection closes. */
  signal: AbortSignal;
  /** The peer's identity. */
  peer: PeerInfo;
  /** Calls back into the peer over the same connection. */
  client: PeerClient<Req, Res>;
  /** Absolute deadline (ms since the epoch, this machine's clock) when the caller set one. */
  deadline?: number;
}

/** Builds the implementation per request, so its methods can use the request's `ctx` (peer, signal, deadline, client). */
export type ServiceFactory<Impl> = (ctx: CallContext) => Impl;

/** Serves requests and one-way events. Runs on the thread that owns it. */
export interface Handler<Req = any, Res = any, Ev = any> {
  /**
   * Answers one request; a throw reaches the caller as `RpcError` code `REMOTE`. Returning an
   * async iterable (e.g. an `async *onRequest` generator) answers a `stream()` call item by item,
   * pulled only as fast as the caller takes them. A request sent as a stream arrives as an async
   * iterable of its items.
   */
  onRequest?(request: Req, ctx: CallContext): Res | Promise<Res> | AsyncIterable<unknown>;
  /** Receives one one-way event. */
  onEvent?(event: Ev, ctx: CallContext): void | Promise<void>;
}
