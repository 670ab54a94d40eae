/** The TCP transport adapter, plain or inside TLS (node:tls). */
import net from 'node:net';
import tls from 'node:tls';
import { RpcError } from '../errors.js';
import { logger } from '../observe.js';
import type { TlsPeerInfo } from '../types.js';
import type { TcpDescriptor } from './descriptors.js';
import { formatAddress } from './descriptors.js';
import { NetStream, connectNet, listenNet, type NetPeer } from './net-stream.js';
import { oneLine, type TlsSettings } from './tls-options.js';
import { loadNative } from '../native/addon.js';
import type { TransportAdapter } from './types.js';

const log = logger('connection');

/**
 * What the tcp adapter receives: the descriptor plus the node's handshake time limit (for TLS),
 * and for one of several threads serving it (serve(..., { threads })) the shared socket to adopt.
 */
export type TcpAdapterOptions = TcpDescriptor & { handshakeTimeoutMs?: number; listenFd?: number };

const kDefaultTlsTimeoutMs = 5000;

export const tcpTransport: TransportAdapter = {
  connect(d: TcpAdapterOptions) {
    if (d.tls) return connectTls(d, d.tls, d.handshakeTimeoutMs ?? kDefaultTlsTimeoutMs);
    return connectNet({ host: d.host, port: d.port }, formatAddress(d));
  },
  async listen(d: TcpAdapterOptions, onStream) {
    const describe = (s: net.Socket): NetPeer =>
      s.remoteAddress === undefined
        ? {}
        : { remoteAddress: formatAddress({ kind: 'tcp', host: s.remoteAddress, port: s.remotePort ?? 0 }), ...(d.tls ? { tls: tlsPeer(s as tls.TLSSocket) } : {}) };
    const where = d.listenFd === undefined ? { host: d.host, port: d.port } : { fd: loadNative().dupFd(d.listenFd) };
    if (!d.tls) {
      const { server, listener } = await listenNet(where, onStream, describe);
      return listener({ kind: 'tcp', host: d.host, port: boundPort(server, d.port) });
    }
    const secure = tlsServer(d.tls, d.handshakeTimeoutMs ?? kDefaultTlsTimeoutMs);
    const { server, listener } = await listenNet(where, onStream, describe, secure.server, 'secureConnection');
    const inner = listener({ kind: 'tcp', host: d.host, port: boundPort(server, d.port), tls: true });
    return {
      address: inner.address,
      close: () => {
        // Connections still in their TLS handshake are nobody's yet: without this, closing would wait for them to time out.
        secure.dropHandshaking();
        return inner.close();
      },
    };
  },
};

function boundPort(server: net.Server, fallback: number): number {
  const bound = server.address();
  return typeof bound === 'object' && bound !== null ? bound.port : fallback;
}

/** A TLS server, and a way to drop the clients still in their TLS handshake. */
function tlsServer(settings: TlsSettings, handshakeTimeoutMs: number): { server: tls.Server; dropHandshaking(): void } {
  const server = tls.createServer({
    cert: settings.cert,
    key: settings.key,
    passphrase: settings.passphrase,
    ca: settings.ca,
    requestCert: settings.requestCert,
    rejectUnauthorized: settings.rejectUnauthorized,
    handshakeTimeout: handshakeTimeoutMs,
    noDelay: true,
  });
  // Raw sockets whose TLS handshake has not completed, by peer address (unique among live connections).
  const handshaking = new Map<string, net.Socket>();
  const key = (s: net.Socket) => `${s.remoteAddress}|${s.remotePort}`;
  server.on('connection', (raw: net.Socket) => {
    const k = key(raw);
    handshaking.set(k, raw);
    raw.once('close', () => handshaking.get(k) === raw && handshaking.delete(k));
  });
  server.on('secureConnection', (socket: tls.TLSSocket) => handshaking.delete(key(socket)));
  // A client whose TLS handshake fails (wrong CA, no certificate, garbage) is dropped by node:tls,
  // but one that stalls past the time limit only gets this event: drop it here. Either way only
  // that socket goes; the listener and the other connections are untouched.
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    log('TLS handshake from %s failed: %s', socket.remoteAddress, err.code ?? err.message);
    socket.destroy();
  });
  return {
    server,
    dropHandshaking: () => {
      for (const raw of handshaking.values()) raw.destroy();
      handshaking.clear();
    },
  };
}

/**
 * Connects and completes the TLS handshake. A refused or unreachable address rejects with the
 * socket's own error (the task reports UNAVAILABLE); anything that goes wrong once TCP is up is a
 * failed handshake: HANDSHAKE_FAILED with the TLS reason (the OpenSSL code and message).
 */
function connectTls(d: TcpDescriptor, settings: TlsSettings, timeoutMs: number): Promise<NetStream> {
  const shown = formatAddress(d);
  const servername = settings.servername ?? (net.isIP(d.host) === 0 ? d.host : undefined);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: d.host,
      port: d.port,
      cert: settings.cert,
      key: settings.key,
      passphrase: settings.passphrase,
      ca: settings.ca,
      rejectUnauthorized: settings.rejectUnauthorized,
      // The certificate must name `servername` (also sent as SNI, which takes names only); without
      // one, node:tls checks it against the host's IP address.
      ...(servername !== undefined ? { servername } : {}),
    });
    let tcpUp = false;
    let secure = false;
    let ticket = false;
    let settled = false;
    const timer = setTimeout(
      () => fail(new RpcError('HANDSHAKE_FAILED', `TLS handshake with ${shown} did not complete within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const cleanup = () => {
      settled = true;
      clearTimeout(timer);
      socket.off('connect', onConnect).off('secureConnect', onSecure).off('session', onSession).off('error', onError).off('close', onClose);
    };
    const fail = (err: Error) => {
      if (settled) return;
      cleanup();
      socket.destroy();
      reject(err);
    };
    // Handed over on a later turn: 'session' and 'secureConnect' are emitted from inside OpenSSL's
    // read of the server's records, and bytes written from there (even from a microtask the
    // emit drains) never reach the server.
    const done = () =>
      setImmediate(() => {
        if (settled) return;
        cleanup();
        resolve(new NetStream(socket, { remoteAddress: shown, tls: tlsPeer(socket) }));
      });
    const onConnect = () => (tcpUp = true);
    const onSecure = () => {
      secure = true;
      // In TLS 1.3 the client finishes before the server has checked the client's certificate: a
      // server that refuses it answers with an alert, one that accepts sends session tickets. Wait
      // for either, so a refused client fails here and not on its first call. (TLS 1.2 checks first.)
      if (socket.getProtocol() !== 'TLSv1.3' || ticket) done();
    };
    const onSession = () => {
      ticket = true;
      if (secure) done();
    };
    const onError = (err: NodeJS.ErrnoException) => fail(tcpUp ? tlsFailure(shown, err) : err);
    const onClose = () =>
      fail(new RpcError('HANDSHAKE_FAILED', `TLS handshake with ${shown} failed: ${!secure
        ? 'the server closed the connection during it (is it a TLS server?)'
        : settings.cert !== undefined
          // node:tls drops a client whose certificate does not verify after the handshake, with no alert to tell why.
          ? 'the server closed the connection without accepting it: it refused this client certificate (not issued by a CA it trusts?)'
          : 'the server closed the connection without accepting it'}`));
    socket.on('connect', onConnect).on('secureConnect', onSecure).on('session', onSession).on('error', onError).on('close', onClose);
  });
}

/** HANDSHAKE_FAILED naming the TLS reason, e.g. `self-signed certificate in certificate chain (SELF_SIGNED_CERT_IN_CHAIN)`. */
function tlsFailure(shown: string, err: NodeJS.ErrnoException): RpcError {
  // OpenSSL's messages carry a source path and line after the reason; the reason is what helps.
  const reason = (err.message.match(/:([^:]+):[^:]*\.c:\d+/)?.[1] ?? err.message).trim();
  const code = err.code !== undefined && !reason.includes(err.code) ? ` (${err.code})` : '';
  return new RpcError('HANDSHAKE_FAILED', `TLS handshake with ${shown} failed: ${reason}${code}`, {
    cause: err,
    ...(err.code !== undefined ? { data: { tlsCode: err.code } } : {}),
  });
}

/** What TLS says of a connected socket's peer. */
function tlsPeer(socket: tls.TLSSocket): TlsPeerInfo {
  const info: TlsPeerInfo = { authorized: socket.authorized, protocol: socket.getProtocol() ?? 'unknown' };
  const cert = socket.getPeerX509Certificate();
  if (cert !== undefined) {
    info.subject = oneLine(cert.subject);
    info.issuer = oneLine(cert.issuer);
    info.fingerprint256 = cert.fingerprint256;
  }
  return info;
}
