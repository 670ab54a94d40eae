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
import type { TransportAdapter } from './types.js';

const log = logger('connection');

/** What the tcp adapter receives: the descriptor plus the node's handshake time limit (for TLS). */
export type TcpAdapterOptions = TcpDescriptor & { handshakeTimeoutMs?: number };

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
    const { server, listener } = d.tls
      ? await listenNet({ host: d.host, port: d.port }, onStream, describe, tlsServer(d.tls, d.handshakeTimeoutMs ?? kDefaultTlsTimeoutMs), 'secureConnection')
      : await listenNet({ host: d.host, port: d.port }, onStream, describe);
    const bound = server.address();
    const port = typeof bound === 'object' && bound !== null ? bound.port : d.port;
    return listener({ kind: 'tcp', host: d.host, port, ...(d.tls ? { tls: true } : {}) });
  },
};

function tlsServer(settings: TlsSettings, handshakeTimeoutMs: number): tls.Server {
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
  // A client whose TLS handshake fails (wrong CA, no certificate, garbage, too slow) is dropped by
  // node:tls on its own; only that socket goes, the listener and other connections are untouched.
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    log('TLS handshake from %s failed: %s', socket.remoteAddress, err.code ?? err.message);
  });
  return server;
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
