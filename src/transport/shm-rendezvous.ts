/**
 * shm's rendezvous, apart from the stream it sets up (./shm.ts): where the control socket lives,
 * the segments' names and mapping, the line-based offer and answer, and the client's eventfd
 * doorbells passed with its answer (SCM_RIGHTS). Wire details: docs/PROTOCOL.md, shared memory.
 */
import { threadId } from 'node:worker_threads';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { RpcError } from '../errors.js';
import { perUserTempDir, securePrivateDir } from '../private-dir.js';
import { loadNative } from '../native/addon.js';
import { closeDoorbells, createDoorbells, doorbellFds, type ShmDoorbells } from '../shm/doorbells.js';

/** A client must answer the rendezvous within this long. */
const kRendezvousTimeoutMs = 5000;
const kMaxLine = 4096;

/** Where the control socket of service `name` lives: $XDG_RUNTIME_DIR, else this user's private directory in the temp dir. */
export function shmControlPath(name: string): string {
  return path.join(process.env.XDG_RUNTIME_DIR || perUserTempDir(), `ogurpchik-shm-${name}.sock`);
}

/**
 * The control socket's path, its directory checked: outside $XDG_RUNTIME_DIR (the user's own by
 * definition) it is in the shared temp dir, where a directory another user made or can write to
 * would let them take the path or swap the socket (INVALID_ARGUMENT). `create` when serving.
 */
export function controlPathChecked(name: string, create: boolean): string {
  const file = shmControlPath(name);
  if (!process.env.XDG_RUNTIME_DIR) securePrivateDir(path.dirname(file), { create });
  return file;
}

/** Segment names of one connection: /ogurpchik-<service>-<server pid>-<thread id>-<n>-{c2s,s2c}. */
function segmentPrefix(name: string): string {
  return `ogurpchik-${name}-`;
}

let segmentCounter = 0;

/** A fresh segment base name for one connection. The thread id too: a listener restarted on a new thread of this process starts counting again. */
export function nextSegmentBase(name: string): string {
  return `/${segmentPrefix(name)}${process.pid}-${threadId}-${++segmentCounter}`;
}

/** Reads one newline-terminated line from a socket (at most kMaxLine bytes), with a timeout. */
export function readLine(socket: net.Socket, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => done(new RpcError('UNAVAILABLE', `shm rendezvous: no ${what} within ${kRendezvousTimeoutMs} ms`)), kRendezvousTimeoutMs);
    const onData = (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(undefined, buf.slice(0, nl));
      else if (buf.length > kMaxLine) done(new RpcError('PROTOCOL', `shm rendezvous: ${what} longer than ${kMaxLine} bytes`));
    };
    const onClose = () => done(new RpcError('UNAVAILABLE', `shm rendezvous: the peer closed before sending its ${what}`));
    const done = (err?: Error, line?: string) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.pause();
      if (err) reject(err);
      else resolve(line!);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', () => {});
  });
}

/**
 * The server reads the client's answer itself, with recvmsg, so the doorbells attached to it
 * arrive (Node's own reads would drop them): the socket was accepted paused, and is looked at every
 * millisecond until the line is complete (only during the rendezvous). Resolves with the line and
 * the fds received, which are then the caller's.
 */
export function readAnswer(control: net.Socket): Promise<{ line: string; fds: number[] }> {
  const native = loadNative();
  const fd = (control as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return readLine(control, 'answer').then((line) => ({ line, fds: [] }));
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const fds: number[] = [];
    let buf = '';
    const fail = (err: RpcError) => {
      for (const f of fds) native.closeFd(f);
      reject(err);
    };
    const look = () => {
      // Destroyed here meanwhile: its fd number may already belong to something else.
      if (control.destroyed) return fail(new RpcError('UNAVAILABLE', 'shm rendezvous: the connection closed before the answer'));
      let got: { data: Buffer; fds: number[] } | null;
      try {
        got = native.recvFds(fd);
      } catch (err) {
        return fail(new RpcError('UNAVAILABLE', 'shm rendezvous: the peer closed before sending its answer', { cause: err }));
      }
      if (got !== null) {
        fds.push(...got.fds);
        buf += got.data.toString('utf8');
        const nl = buf.indexOf('\n');
        if (nl >= 0) return resolve({ line: buf.slice(0, nl), fds });
        if (buf.length > kMaxLine) return fail(new RpcError('PROTOCOL', `shm rendezvous: answer longer than ${kMaxLine} bytes`));
        return setImmediate(look);
      }
      if (performance.now() - start > kRendezvousTimeoutMs) return fail(new RpcError('UNAVAILABLE', `shm rendezvous: no answer within ${kRendezvousTimeoutMs} ms`));
      setTimeout(look, 1);
    };
    look();
  });
}

/** Removes segments of this service whose creating process is gone (a crashed owner's leftovers). */
export function removeLeftoverSegments(name: string): void {
  const prefix = segmentPrefix(name);
  let entries: string[];
  try {
    entries = fs.readdirSync('/dev/shm');
  } catch {
    return;
  }
  for (const entry of entries) {
    if (!entry.startsWith(prefix)) continue;
    const pid = Number(entry.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (err) {
      alive = (err as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) {
      try {
        loadNative().shmUnlink(`/${entry}`);
      } catch {
        // raced with another cleaner
      }
    }
  }
}

export function mapPair(native: ReturnType<typeof loadNative>, base: string, bytes: number, create: boolean): [SharedArrayBuffer, SharedArrayBuffer] {
  const open = (n: string) => native.shmOpen(create ? { name: n, size: bytes, create: true, exclusive: true } : { name: n });
  const c2s = open(`${base}-c2s`);
  let s2c: SharedArrayBuffer;
  try {
    s2c = open(`${base}-s2c`);
  } catch (err) {
    if (create) native.shmUnlink(`${base}-c2s`);
    throw err;
  }
  return [c2s, s2c];
}

/** The client's doorbells, sent with its answer; undefined (answer not sent) when they cannot be made or sent. */
export function offerDoorbells(control: net.Socket): ShmDoorbells | undefined {
  const fd = (control as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return undefined;
  let doorbells: ShmDoorbells;
  try {
    doorbells = createDoorbells();
  } catch {
    return undefined;
  }
  try {
    loadNative().sendFds({ socket: fd, fds: doorbellFds(doorbells, 'connect'), data: Buffer.from('ok doorbell\n') });
    return doorbells;
  } catch {
    // Nothing was sent (sendFds sends all or nothing): answer without them.
    closeDoorbells(doorbells);
    return undefined;
  }
}
