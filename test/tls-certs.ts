/**
 * Certificates made at test time with the openssl CLI (Node's crypto cannot issue certificates):
 * a CA, and leaves it signs for servers (with the IP addresses and names they answer on) and
 * clients. P-256 keys, valid for two days. Files go in the caller's private temp dir.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export interface Pem {
  cert: string;
  key: string;
  certFile: string;
  keyFile: string;
}

export const kOpenssl = '/usr/bin/openssl';

/** Whether the openssl CLI is there (Debian's `openssl` package). */
export function opensslInstalled(): boolean {
  return spawnSync(kOpenssl, ['version'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
}

function openssl(args: string[], input?: string): void {
  const r = spawnSync(kOpenssl, args, { input, encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.error?.message ?? r.stderr}`);
}

function files(dir: string, name: string): Pem {
  const certFile = path.join(dir, `${name}.pem`);
  const keyFile = path.join(dir, `${name}.key`);
  return { certFile, keyFile, cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') };
}

const kEcKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A self-signed CA named `cn`. */
export function makeCa(dir: string, name: string, cn = `ogurpchik test CA ${name}`): Pem {
  openssl(['req', '-x509', ...kEcKey, '-keyout', path.join(dir, `${name}.key`), '-out', path.join(dir, `${name}.pem`), '-days', '2', '-subj', `/O=ogurpchik tests/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return files(dir, name);
}

/** A leaf certificate for `cn`, signed by `ca`, naming `ips` and `dns` (usable as server and client certificate). */
export function makeLeaf(dir: string, ca: Pem, name: string, options: { cn?: string; ips?: string[]; dns?: string[] } = {}): Pem {
  const sans = [...(options.ips ?? []).map((ip) => `IP:${ip}`), ...(options.dns ?? []).map((d) => `DNS:${d}`)];
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(ext, [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth,clientAuth',
    ...(sans.length > 0 ? [`subjectAltName=${sans.join(',')}`] : []),
  ].join('\n') + '\n');
  const csr = path.join(dir, `${name}.csr`);
  openssl(['req', '-new', ...kEcKey, '-keyout', path.join(dir, `${name}.key`), '-out', csr, '-subj', `/O=ogurpchik tests/CN=${options.cn ?? name}`]);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial', '-days', '2', '-extfile', ext, '-out', path.join(dir, `${name}.pem`)]);
  return files(dir, name);
}
