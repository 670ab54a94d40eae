/** Public types shared by the main thread and connection workers. */

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
  /** Connection id, unique within its node. */
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

/** Options for one call. */
export interface CallOptions {
  /** Rejects with `TIMEOUT` after this many ms; the deadline travels to the handler as a relative time. */
  timeoutMs?: number;
  /** Aborting rejects the call with `CANCELLED` at once and cancels it at the peer. */
  signal?: AbortSignal;
}

/** Calls the peer on the other end of one connection. */
export interface PeerClient<Req = unknown, Res = unknown, Ev = unknown> {
  /** Sends a request and resolves with the peer's response; rejects with an `RpcError` (never stays pending). */
  call(request: Req, options?: CallOptions): Promise<Res>;
  /** Sends a one-way event; resolves once it is written (queued in order), with no reply. */
  notify(event: Ev): Promise<void>;
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

/** Serves requests and one-way events. Runs on the thread that owns it. */
export interface Handler<Req = any, Res = any, Ev = any> {
  /** Answers one request; a throw reaches the caller as `RpcError` code `REMOTE`. */
  onRequest?(request: Req, ctx: CallContext): Res | Promise<Res>;
  /** Receives one one-way event. */
  onEvent?(event: Ev, ctx: CallContext): void | Promise<void>;
}
