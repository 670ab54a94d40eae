/**
 * The VSOCK transport (AF_VSOCK, host <-> VM sockets). Node cannot wrap an AF_VSOCK fd in a
 * net.Socket, so the addon's relay thread owns each vsock socket and bridges it to an AF_UNIX
 * socketpair (native/src/vsock.cc); this side wraps the other end in a net.Socket, so a vsock
 * connection runs on the same NetStream as tcp and unix. No native code ever calls into JS: what
 * the relay thread has to say arrives as bytes on those sockets.
 */
import net from 'node:net';
import util from 'node:util';
import { kRelayStatusBytes, kVsockAnnouncementBytes, loadNative, type VsockListening } from '../native/addon.js';
import { formatAddress, kVsockCidAny, type VsockDescriptor } from './descriptors.js';
import { NetStream } from './net-stream.js';
import type { ByteStream, StreamListener, TransportAdapter } from './types.js';

/** How long an accepted connection's relay may take to say it is ready; it says so at once unless the thread is starved. */
const kAcceptedStatusTimeoutMs = 5000;
/** How long a listener's close() waits for the relay thread to let go of the listening socket. */
const kListenerCloseTimeoutMs = 2000;

/**
 * Wraps `fd`, the JS end of a relay (vsockConnect, an accepted connection or relayFd; the caller
 * gives up ownership), and resolves once its status word says connected. Rejects with an Error
 * whose `code` is the errno name (ETIMEDOUT, ECONNREFUSED, ...) when the connect failed, the relay
 * closed early, or no status came within `timeoutMs`; the socket is closed then.
 */
export function relayedStream(fd: number, remoteAddress: string, timeoutMs: number): Promise<NetStream> {
  const socket = new net.Socket({ fd, readable: true, writable: true });
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('error', fail);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
    };
    const fail = (err: Error) => {
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onEnd = () => fail(systemError('ECONNRESET', 'connect', remoteAddress, 'the relay closed before it reported the connection'));
    const onReadable = () => {
      const status = socket.read(kRelayStatusBytes) as Buffer | null;
      if (status === null) return;
      // At end-of-stream read() returns what there is, which may be less than asked for.
      if (status.length < kRelayStatusBytes) return onEnd();
      const errno = status.readUInt32LE(0);
      if (errno !== 0) return fail(errnoError(errno, 'connect', remoteAddress));
      cleanup();
      // Without a 'readable' listener the socket is neither paused nor flowing: what follows the
      // status waits in its buffer until the NetStream's 'data' listener starts the flow.
      resolve(new NetStream(socket, { remoteAddress }));
    };
    const timer = setTimeout(() => fail(systemError('ETIMEDOUT', 'connect', remoteAddress, `no connect result within ${timeoutMs} ms`)), timeoutMs);
    socket.on('readable', onReadable);
    socket.on('error', fail);
    socket.on('end', onEnd);
    socket.on('close', onEnd);
  });
}

/** An Error shaped like Node's system errors: `code` the errno name, `errno` negative, `syscall`. */
function errnoError(errno: number, syscall: string, subject: string): Error {
  const [code, description] = util.getSystemErrorMap().get(-errno) ?? [`E${errno}`, `error ${errno}`];
  return systemError(code, syscall, subject, description, -errno);
}

function systemError(code: string, syscall: string, subject: string, description: string, errno?: number): Error {
  const err = new Error(`${code}: ${description}, ${syscall} ${subject}`) as NodeJS.ErrnoException;
  err.code = code;
  err.syscall = syscall;
  if (errno !== undefined) err.errno = errno;
  return err;
}

export const vsockTransport: TransportAdapter = {
  async connect(d: VsockDescriptor) {
    // start() resolves a vm name to a CID before the descriptor reaches a worker.
    if (d.cid === undefined) throw systemError('EINVAL', 'connect', formatAddress(d), 'no CID to connect to (a vm name is resolved by Node.start())');
    const fd = loadNative().vsockConnect({ cid: d.cid, port: d.port, timeoutMs: d.connectTimeoutMs });
    // The relay thread reports by connectTimeoutMs at the latest; the margin only guards against a stuck thread.
    return relayedStream(fd, formatAddress(d), d.connectTimeoutMs + 1000);
  },

  async listen(d: VsockDescriptor, onStream) {
    const bound = loadNative().vsockListen({ cid: d.cid ?? kVsockCidAny, port: d.port });
    return relayedListener(bound, { kind: 'vsock', cid: bound.cid, port: bound.port }, onStream, (cid, port) => `vsock:${cid}:${port}`);
  },
};

/**
 * Serves a listener the relay thread runs (vsockListen, or relayListenUnix in tests): reads its
 * control socket's announcements, claims each accepted connection and hands it on as a stream
 * once its relay reports ready. `close()` ends the control socket, which closes the listener.
 */
export function relayedListener(
  bound: VsockListening,
  address: unknown,
  onStream: (stream: ByteStream) => void,
  describe: (cid: number, port: number) => string,
): StreamListener {
  const native = loadNative();
  const control = new net.Socket({ fd: bound.control, readable: true, writable: true });
  const closed = new Promise<void>((resolve) => control.once('close', () => resolve()));
  let pending: Buffer = Buffer.alloc(0);
  control.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let at = 0;
    for (; at + kVsockAnnouncementBytes <= pending.length; at += kVsockAnnouncementBytes) {
      const fd = pending.readUInt32LE(at);
      const peer = describe(pending.readUInt32LE(at + 4), pending.readUInt32LE(at + 8));
      // Not on offer any more (the listener is closing and the relay thread closed it): not ours to touch.
      if (!native.vsockTakeAccepted(fd)) continue;
      // A connection that fails before it starts concerns nobody but its peer.
      relayedStream(fd, peer, kAcceptedStatusTimeoutMs).then(onStream, () => {});
    }
    pending = pending.subarray(at);
  });
  // The relay thread ends the control socket only when the listener is finished; nothing to report.
  control.on('error', () => {});
  return {
    address,
    close: async () => {
      // Ending the control socket tells the relay thread to close the listener (and any accepted
      // connection not yet claimed); it then closes its end, and 'close' follows here.
      control.end();
      const timer = setTimeout(() => control.destroy(), kListenerCloseTimeoutMs);
      await closed;
      clearTimeout(timer);
    },
  };
}
