/**
 * Unix socket files: listening on one owner-only from its first instant, and checking who answers
 * on one. bind(2) creates the file with the process umask's mode (0777 under umask 000) and it
 * can only be chmod-ed afterwards, while a client that connects in between keeps its connection.
 * So the socket is bound inside a fresh 0700 directory beside its path, where no one else can
 * reach it, made 0600 there, and only then linked to its path.
 */
import fs from 'node:fs';
import net from 'node:net';
import nodePath from 'node:path';
import { RpcError } from '../errors.js';
import { socketPeerCredentials } from '../native/addon.js';

/** sun_path holds 108 bytes with its NUL; libuv truncates a longer path silently, binding another one. */
const kMaxSocketPath = 107;

/** A socket file put in place by listenSocketFile. */
export interface SocketFile {
  /** Removes the file if it is still the one listenSocketFile linked there (a successor's stays). */
  remove(): void;
}

/**
 * Listens on socket file `path`: `listen` binds and listens on the path it is given (in a private
 * directory), then the socket is made 0600 and linked to `path`, which must be free (a stale file
 * is removed first; a live server's path fails with EADDRINUSE). On failure after `listen`,
 * `unlisten` closes what it made. The caller closes `bound`, then calls `file.remove()`.
 */
export async function listenSocketFile<T>(
  path: string,
  listen: (privatePath: string) => T | Promise<T>,
  unlisten: (bound: T) => unknown,
): Promise<{ bound: T; file: SocketFile }> {
  checkSocketDirectory(path);
  await removeStaleSocket(path);
  const dir = fs.mkdtempSync(nodePath.join(nodePath.dirname(path), '.ogc-'));
  try {
    const privatePath = nodePath.join(dir, 's');
    for (const p of [path, privatePath]) {
      if (Buffer.byteLength(p) > kMaxSocketPath) {
        throw new RpcError('INVALID_ARGUMENT', `cannot listen on ${path}: a socket path may have at most ${kMaxSocketPath} bytes, and it is bound first as ${privatePath}`);
      }
    }
    const bound = await listen(privatePath);
    try {
      fs.chmodSync(privatePath, 0o600);
      // link(2), unlike rename(2), never replaces what is at `path`: a server that took it
      // meanwhile keeps it.
      fs.linkSync(privatePath, path);
    } catch (err) {
      await unlisten(bound);
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      throw Object.assign(new Error(`listen EADDRINUSE: address already in use ${path}`), { code: 'EADDRINUSE', syscall: 'listen', address: path });
    }
    const { dev, ino } = fs.lstatSync(path);
    const remove = () => {
      try {
        const now = fs.lstatSync(path);
        if (now.dev === dev && now.ino === ino) fs.unlinkSync(path);
      } catch {
        // already gone
      }
    };
    return { bound, file: { remove } };
  } finally {
    // libuv unlinks the path it bound when the server closes; it is gone long before.
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Throws UNAVAILABLE saying so when the directory of socket file `path` does not exist (libuv would report EACCES, "permission denied"). */
export function checkSocketDirectory(path: string): void {
  const dir = nodePath.dirname(path);
  if (!fs.existsSync(dir)) throw new RpcError('UNAVAILABLE', `cannot listen on ${path}: the directory ${dir} does not exist`);
}

/**
 * A socket file left by a crashed owner blocks `listen` with EADDRINUSE. If nothing answers on it,
 * it is stale and removed; if a live server answers, the path is in use and we leave it alone.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) return; // not ours to delete: listen will fail with EADDRINUSE
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (!alive) fs.rmSync(path, { force: true });
}

/**
 * Throws AUTH_FAILED unless the server at the other end of `socket`, connected through socket
 * file `path`, runs as `peerUid` (default: this process's uid; 'any' accepts every one). The
 * kernel says who it is (SO_PEERCRED); without the native addon, the socket file's owner.
 */
export function checkServerUid(socket: net.Socket, path: string, peerUid: number | 'any' | undefined): void {
  if (peerUid === 'any' || typeof process.getuid !== 'function') return;
  const expected = peerUid ?? process.getuid();
  let found = socketPeerCredentials(socket)?.uid;
  if (found === undefined) {
    try {
      found = fs.statSync(path).uid;
    } catch {
      // gone: nothing vouches for the server
    }
  }
  if (found === expected) return;
  throw new RpcError(
    'AUTH_FAILED',
    found === undefined
      ? `cannot tell which uid the server at ${path} runs as; expected uid ${expected}`
      : `the server at ${path} runs as uid ${found}, expected uid ${expected} (the transport's peerUid option accepts another)`,
  );
}
