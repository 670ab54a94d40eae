/**
 * The signed-process scheme: the server learns the client's pid from the OS (never from the wire),
 * reads the image that process runs (/proc/<pid>/exe) and checks the detached Ed25519 signature
 * `<image path>.sig` against the configured public key. The process start time is read before and
 * after, so a pid reused by another process in between is caught. Linux only.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { RpcError } from '../errors.js';
import { processStartTime } from '../proc.js';

/** Ed25519 public key from raw 32 bytes, or their base64 text. */
export function parsePublicKey(key: string | Uint8Array): Uint8Array {
  const raw = typeof key === 'string' ? Buffer.from(key.trim(), 'base64') : key;
  if (!(raw instanceof Uint8Array) || raw.length !== 32) {
    throw new RpcError('INVALID_ARGUMENT', 'authSignedProcess() takes an Ed25519 public key: 32 raw bytes or their base64');
  }
  return Uint8Array.from(raw);
}

/** A raw 32-byte Ed25519 public key as a KeyObject; undefined if it is not one. */
function ed25519Key(publicKey: Uint8Array): crypto.KeyObject | undefined {
  try {
    return crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicKey).toString('base64url') }, format: 'jwk' });
  } catch {
    return undefined;
  }
}

/** Checks a detached Ed25519 signature (OpenSSL, through node:crypto); false for any malformed input. */
export function verifyEd25519(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  const key = ed25519Key(publicKey);
  if (key === undefined) return false;
  try {
    return crypto.verify(null, message, key, signature);
  } catch {
    return false;
  }
}

/**
 * verifyEd25519 off the calling thread (libuv's pool): an image is ~100 MB, and hashing it on the
 * connection worker's own thread held every other connection of that worker for as long.
 */
function verifyEd25519Async(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): Promise<boolean> {
  const key = ed25519Key(publicKey);
  if (key === undefined) return Promise.resolve(false);
  return new Promise((resolve) => {
    try {
      crypto.verify(null, message, key, signature, (err, ok) => resolve(err === null && ok));
    } catch {
      resolve(false);
    }
  });
}

/** A signature file holds 64 raw bytes or their base64. */
export function parseSignature(bytes: Buffer): Buffer | undefined {
  if (bytes.length === 64) return bytes;
  const text = bytes.toString('latin1').trim();
  if (!/^[A-Za-z0-9+/=\s]+$/.test(text)) return undefined;
  const decoded = Buffer.from(text, 'base64');
  return decoded.length === 64 ? decoded : undefined;
}

/** Verified images, keyed by identity and signature: a node binary is ~100 MB, and one verification of it costs a noticeable fraction of a second. */
const verified = new Set<string>();

/** Resolves when process `pid` runs an image signed for `publicKey`; rejects with AUTH_FAILED saying why (paths and pids only). */
export async function verifySignedProcess(pid: number, publicKey: Uint8Array): Promise<{ image: string }> {
  const fail = (why: string) => new RpcError('AUTH_FAILED', `signed-process check of pid ${pid} failed: ${why}`);
  const startedBefore = processStartTime(pid);
  if (startedBefore === undefined) throw fail('the process is gone');
  let image: string;
  try {
    image = await fs.readlink(`/proc/${pid}/exe`);
  } catch (err) {
    throw fail(`cannot read its image (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
  let signature: Buffer | undefined;
  try {
    signature = parseSignature(await fs.readFile(`${image}.sig`));
  } catch {
    throw fail(`its image ${image} has no signature file ${image}.sig`);
  }
  if (signature === undefined) throw fail(`${image}.sig is neither 64 raw bytes nor their base64`);
  // Read through /proc: the image the process actually runs, even if the path was replaced since.
  const stat = await fs.stat(`/proc/${pid}/exe`);
  const cacheKey = `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}:${signature.toString('hex')}:${Buffer.from(publicKey).toString('hex')}`;
  if (!verified.has(cacheKey)) {
    const bytes = await fs.readFile(`/proc/${pid}/exe`);
    if (!(await verifyEd25519Async(signature, bytes, publicKey))) throw fail(`the signature in ${image}.sig does not match its image and the configured key`);
    verified.add(cacheKey);
  }
  if (processStartTime(pid) !== startedBefore) throw fail('the pid was reused by another process during the check');
  return { image };
}

/**
 * The pid owning the peer end of a loopback TCP connection, from the kernel's socket table:
 * /proc/net/tcp{,6} gives the peer socket's inode, /proc/<pid>/fd shows who holds it.
 * `peer` is the remote "host:port" we see, `localPort` our own port.
 */
export async function loopbackTcpPeerPid(peer: string, localPort: number): Promise<number | undefined> {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(peer);
  if (m === null) return undefined;
  const [, host, port] = m;
  const v4 = host.replace(/^::ffff:/, '');
  if (!(v4 === '127.0.0.1' || host === '::1' || /^127\./.test(v4))) return undefined;
  const hexPort = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');
  const peerPort = hexPort(Number(port));
  const ourPort = hexPort(localPort);
  let inode: string | undefined;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = await fs.readFile(table, 'latin1');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      // The peer's socket: its local end is the address we see, its remote end is our port.
      if (cols[1].endsWith(`:${peerPort}`) && cols[2].endsWith(`:${ourPort}`) && cols[9] !== '0') {
        inode = cols[9];
        break;
      }
    }
    if (inode) break;
  }
  if (inode === undefined) return undefined;
  const target = `socket:[${inode}]`;
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = await fs.readdir(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if ((await fs.readlink(`/proc/${entry}/fd/${fd}`)) === target) return Number(entry);
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined;
}
