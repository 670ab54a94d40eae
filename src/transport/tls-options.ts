/**
 * TLS settings for `tcp(address, { tls })`. They travel inside the transport descriptor to the
 * connection worker, so they are plain data: PEM text, booleans and names. Files are read and every
 * certificate and key is parsed when `tcp()` is called, so a bad one fails there, on the caller's
 * thread, with INVALID_ARGUMENT rather than later in a worker.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import { RpcError } from '../errors.js';

/** What `tcp(address, { tls })` accepts. PEM is given as text or its bytes, or read from a file. */
export interface TlsOptions {
  /** Our certificate chain, PEM (leaf first). A server needs one; a client gives one for mutual TLS. */
  cert?: string | Uint8Array;
  /** The private key of `cert`, PEM. */
  key?: string | Uint8Array;
  /** Passphrase of an encrypted `key`. */
  passphrase?: string;
  /** The CA certificate(s) to trust, PEM (one or several per entry). Default: Node's bundled root CAs. */
  ca?: string | Uint8Array | Array<string | Uint8Array>;
  /** Read `cert` from this file instead (when `tcp()` is called). */
  certFile?: string;
  /** Read `key` from this file instead. */
  keyFile?: string;
  /** Read `ca` from this file (or these files) instead. */
  caFile?: string | string[];
  /** Server: ask every client for a certificate and refuse one that `ca` does not vouch for (mutual TLS). Default false. */
  requestCert?: boolean;
  /** Client: the name the server's certificate must carry, also sent as SNI. Default: the host connected to. */
  servername?: string;
  /**
   * Default true: a peer certificate that does not verify against `ca` (or, on a client, does not
   * name the server) fails the connection. false accepts ANY certificate, which lets anyone on the
   * path read and change the traffic: only for experiments.
   */
  rejectUnauthorized?: boolean;
}

/** TLS settings as they travel in a descriptor: validated, files read, PEM as text. */
export interface TlsSettings {
  cert?: string;
  key?: string;
  passphrase?: string;
  ca?: string[];
  requestCert: boolean;
  servername?: string;
  rejectUnauthorized: boolean;
}

const kKnown = new Set(['cert', 'key', 'passphrase', 'ca', 'certFile', 'keyFile', 'caFile', 'requestCert', 'servername', 'rejectUnauthorized']);
const kCertBlock = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

function invalid(message: string, cause?: unknown): RpcError {
  return new RpcError('INVALID_ARGUMENT', message, cause === undefined ? {} : { cause });
}

/** Validates `tcp()`'s `tls` option (`true` means `{}`: a client trusting Node's root CAs). Never puts key material in a message. */
export function resolveTls(options: TlsOptions | true): TlsSettings {
  if (options === true) options = {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw invalid('tls takes an options object (or true)');
  const unknown = Object.keys(options).filter((k) => !kKnown.has(k));
  if (unknown.length > 0) throw invalid(`unknown tls option(s) ${unknown.join(', ')}; known: ${[...kKnown].join(', ')}`);
  for (const flag of ['requestCert', 'rejectUnauthorized'] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== 'boolean') throw invalid(`tls.${flag} must be a boolean`);
  }
  if (options.servername !== undefined && (typeof options.servername !== 'string' || options.servername.length === 0)) {
    throw invalid('tls.servername must be a non-empty string');
  }
  if (options.passphrase !== undefined && typeof options.passphrase !== 'string') throw invalid('tls.passphrase must be a string');

  const cert = pemFrom(options.cert, options.certFile, 'cert');
  const key = pemFrom(options.key, options.keyFile, 'key');
  const caTexts = caFrom(options);
  if ((cert === undefined) !== (key === undefined)) throw invalid('tls.cert and tls.key go together: give both or neither');

  const settings: TlsSettings = { requestCert: options.requestCert ?? false, rejectUnauthorized: options.rejectUnauthorized ?? true };
  if (cert !== undefined && key !== undefined) {
    const leaf = parseCertificates(cert, 'tls.cert')[0];
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey({ key, format: 'pem', ...(options.passphrase !== undefined ? { passphrase: options.passphrase } : {}) });
    } catch (cause) {
      throw invalid(`tls.key is not a usable PEM private key (${(cause as NodeJS.ErrnoException).code ?? 'unreadable'}${options.passphrase === undefined ? '; is it encrypted? give tls.passphrase' : ''})`, cause);
    }
    if (!leaf.checkPrivateKey(privateKey)) throw invalid(`tls.key does not belong to tls.cert (${oneLine(leaf.subject)})`);
    settings.cert = cert;
    settings.key = key;
    if (options.passphrase !== undefined) settings.passphrase = options.passphrase;
  }
  if (caTexts !== undefined) {
    caTexts.forEach((text, i) => parseCertificates(text, `tls.ca[${i}]`));
    settings.ca = caTexts;
  }
  if (options.servername !== undefined) settings.servername = options.servername;
  return settings;
}

function pemFrom(value: string | Uint8Array | undefined, file: string | undefined, name: string): string | undefined {
  if (value !== undefined && file !== undefined) throw invalid(`give tls.${name} or tls.${name}File, not both`);
  if (file !== undefined) return readText(file, `tls.${name}File`);
  if (value === undefined) return undefined;
  return text(value, `tls.${name}`);
}

function caFrom(options: TlsOptions): string[] | undefined {
  if (options.ca !== undefined && options.caFile !== undefined) throw invalid('give tls.ca or tls.caFile, not both');
  if (options.caFile !== undefined) {
    const files = Array.isArray(options.caFile) ? options.caFile : [options.caFile];
    return files.map((f, i) => readText(f, `tls.caFile[${i}]`));
  }
  if (options.ca === undefined) return undefined;
  const entries = Array.isArray(options.ca) ? options.ca : [options.ca];
  if (entries.length === 0) throw invalid('tls.ca is empty: leave it out to trust the bundled root CAs');
  return entries.map((e, i) => text(e, `tls.ca[${i}]`));
}

function text(value: unknown, name: string): string {
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8');
  throw invalid(`${name} must be PEM text or its bytes (string or Uint8Array)`);
}

function readText(file: unknown, name: string): string {
  if (typeof file !== 'string' || file.length === 0) throw invalid(`${name} must be a file path`);
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (cause) {
    throw invalid(`${name}: cannot read ${file} (${(cause as NodeJS.ErrnoException).code ?? cause})`, cause);
  }
}

/** Every certificate in a PEM text, parsed; at least one. */
function parseCertificates(pem: string, name: string): X509Certificate[] {
  const blocks = pem.match(kCertBlock);
  if (blocks === null) throw invalid(`${name} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (cause) {
      throw invalid(`${name}: certificate ${i + 1} does not parse (${(cause as NodeJS.ErrnoException).code ?? 'malformed'})`, cause);
    }
  });
}

/** An X.509 name (one attribute per line) on one line: "C=NO, O=Example, CN=server". */
export function oneLine(name: string | undefined): string {
  return (name ?? '').split('\n').filter(Boolean).join(', ');
}
