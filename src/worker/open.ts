/**
 * What a connection task starts from: its handler module, its transport's listener or its
 * connected stream, and what a new stream says of its peer. Whatever fails becomes the RpcError that start() rejects with; a custom
 * adapter or handler module is the user's code, so its mistakes are said as such.
 */
import { RpcError, messageOf } from '../errors.js';
import { adapterFor, adapterOptions, type AdapterContext } from '../transport/adapters.js';
import { loopbackTcpPeerPid } from '../handshake/signed-process.js';
import { formatAddress, type Address, type TcpDescriptor, type TransportDescriptor } from '../transport/descriptors.js';
import type { ByteStream, StreamListener } from '../transport/types.js';
import type { Handler, PeerInfo } from '../types.js';

/** What a custom adapter's connect() must resolve with (ByteStream's methods the connection calls). */
const kStreamMethods = ['start', 'write', 'pause', 'resume', 'end', 'destroy'] as const;

/** The export `handler` of a worker-module handler; INVALID_ARGUMENT if it does not load or is not one. */
export async function loadHandler(url: string): Promise<Handler> {
  let mod: { handler?: Handler };
  try {
    mod = await import(url);
  } catch (cause) {
    throw new RpcError('INVALID_ARGUMENT', `handler module ${url} failed to load: ${(cause as Error).message}`, { cause });
  }
  const handler = mod.handler;
  if (handler === null || typeof handler !== 'object' || (typeof handler.onRequest !== 'function' && typeof handler.onEvent !== 'function')) {
    throw new RpcError('INVALID_ARGUMENT', `handler module ${url} must export \`handler\` with onRequest() and/or onEvent()`);
  }
  return handler;
}

/** Listens on `transport`, handing each accepted stream to `accept`; rejects with UNAVAILABLE (or the adapter's own RpcError). */
export async function listenOn(transport: TransportDescriptor, context: AdapterContext, accept: (stream: ByteStream) => void): Promise<StreamListener> {
  const adapter = await adapterFor(transport);
  let listener: StreamListener;
  try {
    listener = await adapter.listen(adapterOptions(transport, context), accept);
  } catch (cause) {
    if (RpcError.is(cause)) throw cause;
    throw new RpcError('UNAVAILABLE', `cannot listen on ${formatAddress(transport)}: ${messageOf(cause)}`, { cause });
  }
  // A custom adapter is the user's code: say what it got wrong, not where that broke us.
  if (listener === null || typeof listener !== 'object' || typeof listener.close !== 'function') {
    throw new RpcError('INVALID_ARGUMENT', `the transport adapter of ${formatAddress(transport)}: listen() must resolve with { address, close() }, got ${String(listener)}`);
  }
  return listener;
}

/** Connects to `transport` within `connectTimeoutMs` (0: no limit); rejects with UNAVAILABLE (or the adapter's own RpcError). */
export async function connectTo(transport: TransportDescriptor, context: AdapterContext, connectTimeoutMs: number): Promise<ByteStream> {
  const adapter = await adapterFor(transport);
  let stream: ByteStream;
  try {
    stream = await withConnectTimeout(adapter.connect(adapterOptions(transport, context)), connectTimeoutMs);
  } catch (cause) {
    // An adapter that knows better (a failed TLS handshake: HANDSHAKE_FAILED) says so itself.
    if (RpcError.is(cause)) throw cause;
    throw new RpcError('UNAVAILABLE', `cannot connect to ${formatAddress(transport)}: ${messageOf(cause)}`, { cause });
  }
  if (stream === null || typeof stream !== 'object' || !kStreamMethods.every((m) => typeof (stream as unknown as Record<string, unknown>)[m] === 'function')) {
    throw new RpcError('INVALID_ARGUMENT', `the transport adapter of ${formatAddress(transport)}: connect() must resolve with a ByteStream (${kStreamMethods.join(', ')}), got ${String(stream)}`);
  }
  return stream;
}

/**
 * Races a transport's connect with a timer: a silent address (a TCP SYN nobody answers) would
 * otherwise hold the attempt for minutes. A stream that connects after we gave up is destroyed.
 */
function withConnectTimeout(connecting: Promise<ByteStream>, ms: number): Promise<ByteStream> {
  if (!(ms > 0)) return connecting;
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      reject(new Error(`no connection within ${ms} ms`));
    }, ms);
    connecting.then(
      (stream) => {
        clearTimeout(timer);
        if (late) stream.destroy();
        else resolve(stream);
      },
      (err) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** The PeerInfo of a new connection `connectionId` over `stream` (auth 'none' until its handshake says otherwise). */
export function peerOf(stream: ByteStream, transport: TransportDescriptor, connectionId: number): PeerInfo {
  return {
    transport: transport.kind === 'custom' ? transport.name : transport.kind,
    auth: 'none',
    connectionId,
    ...(stream.remoteAddress !== undefined ? { address: stream.remoteAddress } : {}),
    ...(stream.remotePid !== undefined ? { pid: stream.remotePid } : {}),
    ...(stream.tls !== undefined ? { tls: stream.tls } : {}),
  };
}

/** An accepted client's pid from the OS: the transport's own report (shm), else the loopback TCP socket table. */
export async function peerPidOf(stream: ByteStream, transport: TransportDescriptor, listening: Address | undefined): Promise<number | undefined> {
  if (stream.remotePid !== undefined) return stream.remotePid;
  if (transport.kind !== 'tcp' || stream.remoteAddress === undefined || listening === undefined) return undefined;
  return loopbackTcpPeerPid(stream.remoteAddress, (listening as TcpDescriptor).port);
}
