/**
 * The Unix socket adapter; on Windows the same code serves named pipes (`\\.\pipe\name`), which
 * have no socket file to secure or clean up.
 */
import type net from 'node:net';
import type { UnixDescriptor } from './descriptors.js';
import { loadNative, socketPeerPid } from '../native/addon.js';
import { connectNet, listenNet } from './net-stream.js';
import { checkServerUid, listenSocketFile } from './socket-file.js';
import type { TransportAdapter } from './types.js';

export function isNamedPipe(path: string): boolean {
  return /^\\\\[.?]\\pipe\\/i.test(path);
}

/** What the unix adapter receives: the descriptor, and for one of several threads serving it (serve(..., { threads })) the shared socket. */
export type UnixAdapterOptions = UnixDescriptor & { listenFd?: number };

export const unixTransport: TransportAdapter = {
  connect(d: UnixDescriptor) {
    if (isNamedPipe(d.path)) return connectNet({ path: d.path }, d.path);
    return connectNet({ path: d.path }, d.path, (socket) => checkServerUid(socket, d.path, d.peerUid));
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
    if (pipe) {
      const { listener } = await listenNet({ path: d.path }, onStream, describe);
      return listener({ kind: 'unix', path: d.path });
    }
    const { bound, file } = await listenSocketFile(
      d.path,
      (privatePath) => listenNet({ path: privatePath }, onStream, describe),
      ({ server }) => new Promise((resolve) => server.close(resolve)),
    );
    return bound.listener({ kind: 'unix', path: d.path }, () => file.remove());
  },
};
