/**
 * The Unix socket adapter; on Windows the same code serves named pipes (`\\.\pipe\name`), which
 * have no socket file to secure or clean up.
 */
import fs from 'node:fs';
import net from 'node:net';
import nodePath from 'node:path';
import { RpcError } from '../errors.js';
import type { UnixDescriptor } from './descriptors.js';
import { loadNative, socketPeerPid } from '../shm/native.js';
import { connectNet, listenNet } from './net-stream.js';
import type { TransportAdapter } from './types.js';

export function isNamedPipe(path: string): boolean {
  return /^\\\\[.?]\\pipe\\/i.test(path);
}

/** What the unix adapter receives: the descriptor, and for one of several threads serving it (serve(..., { threads })) the shared socket. */
export type UnixAdapterOptions = UnixDescriptor & { listenFd?: number };

export const unixTransport: TransportAdapter = {
  connect(d: UnixDescriptor) {
    return connectNet({ path: d.path }, d.path);
  },
  async listen(d: UnixAdapterOptions, onStream) {
    const pipe = isNamedPipe(d.path);
    const describe = (socket: net.Socket) => ({ remoteAddress: d.path, ...(pipe ? {} : { remotePid: socketPeerPid(socket) }) });
    if (d.listenFd !== undefined) {
      // One of several threads on a socket the main thread bound, secured and will remove: only
      // stop accepting here.
      const { listener } = await listenNet({ fd: loadNative().dupFd(d.listenFd) }, onStream, describe);
      return listener({ kind: 'unix', path: d.path });
    }
    if (!pipe) {
      checkSocketDirectory(d.path);
      await removeStaleSocket(d.path);
    }
    const { listener } = await listenNet({ path: d.path }, onStream, describe);
    // Only the owner may connect (DESIGN §7); set before anyone else could use it in practice.
    if (!pipe) fs.chmodSync(d.path, 0o600);
    return listener({ kind: 'unix', path: d.path }, () => {
      if (!pipe) fs.rmSync(d.path, { force: true });
    });
  },
};

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

