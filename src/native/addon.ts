/**
 * The one door to the native addon (native/, built by `npm run build:native`): its TS shape and
 * its loader. Nothing else in the package imports the `.node` file.
 *
 * The addon maps POSIX shared memory into SharedArrayBuffers and waits/wakes futexes across
 * processes (V8's Atomics.wait/notify never cross a process boundary), and owns AF_VSOCK sockets,
 * which Node cannot wrap (see `relayFd`). It is optional: when it
 * is not built, `loadNative()` throws `RpcError('NATIVE_MISSING')` and the transports that need
 * it say so, while TCP, Unix-socket and worker transports keep working.
 */

import fs from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { RpcError } from '../errors.js';
import type { RingSignal } from '../shm/signal.js';

/** What every native failure carries: `code` is the errno name ('ENOENT'), `errno` its negated number (Node's convention). Bad arguments are TypeErrors with code 'EINVAL'. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall?: string;
}

export interface ShmOpenOptions {
  /** POSIX shm name: '/' then 1–255 characters without '/'; lives in /dev/shm. */
  name: string;
  /** Bytes to map. Required with `create`; when opening, defaults to the segment's size and may not exceed it. */
  size?: number;
  /** Create the segment (mode 0600, sized with ftruncate) if it does not exist. */
  create?: boolean;
  /** With `create`: fail with EEXIST if it already exists. */
  exclusive?: boolean;
}

/** A 32-bit word in a SharedArrayBuffer (from shmOpen, or any SharedArrayBuffer for in-process use). */
export interface FutexWord {
  buffer: SharedArrayBuffer;
  /** Byte offset of the word in `buffer`; a multiple of 4. */
  byteOffset: number;
}

export interface FutexWaitOptions extends FutexWord {
  /** Sleep only while the word holds this value (int32 or uint32 spelling). */
  expected: number;
  /** Give up after this many milliseconds; Infinity (the default) waits forever. */
  timeoutMs?: number;
}

export interface FutexWakeOptions extends FutexWord {
  /** Most waiters to wake, across every process; default Infinity. */
  count?: number;
}

/** 'ok': woken (possibly spuriously, re-check the word); 'not-equal': the word did not hold `expected`; 'timed-out'. */
export type FutexWaitResult = 'ok' | 'not-equal' | 'timed-out';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

export interface VsockListenOptions {
  /** Local CID to bind; default VMADDR_CID_ANY (0xFFFFFFFF). */
  cid?: number;
  /** Port; 0 (the default) lets the kernel pick one. */
  port?: number;
  backlog?: number;
}

export interface VsockListening {
  /**
   * The JS end of the listener's control socket (an AF_UNIX stream; wrap it in a net.Socket). Each
   * accepted connection is announced on it as 12 bytes, u32 LE: the connection's relayed fd (claim
   * it with `vsockTakeAccepted` first), the peer's CID, the peer's port. Ending or closing this
   * socket closes the listener, and with it every announced fd not yet claimed.
   */
  control: number;
  /** As getsockname(2) reports them (VMADDR_CID_ANY stays 0xFFFFFFFF; port 0 resolved). */
  cid: number;
  port: number;
}

export interface VsockConnectOptions {
  cid: number;
  port: number;
  /** The connect fails with ETIMEDOUT after this many ms (default 2000, the kernel's own default). */
  timeoutMs?: number;
}

/** Counters of this thread's vsock relay thread, for tests. */
export interface VsockStats {
  /** Connections being relayed or connected. */
  relays: number;
  listeners: number;
  /** Accepted connections announced but not yet claimed. */
  unclaimed: number;
  /** Whether the relay thread runs (it exits after 5 s with nothing to do). */
  running: boolean;
}

/** The first bytes of every relayed stream: a u32 LE status, 0 when connected, else the errno of a failed connect. */
export const kRelayStatusBytes = 4;
/** One accepted-connection announcement on a vsock listener's control socket. */
export const kVsockAnnouncementBytes = 12;

/** The addon's exports (native/src/addon.cc). */
export interface NativeBinding {
  /** NODE_MODULE_VERSION the binary was built for; the loader rejects a mismatch. */
  readonly moduleVersion: number;
  /** Maps a POSIX shm segment (MAP_SHARED) as a SharedArrayBuffer; unmapped when the last buffer over it is collected. */
  shmOpen(options: ShmOpenOptions): SharedArrayBuffer;
  /** Removes the segment's name; existing mappings stay valid. Throws ENOENT if absent. */
  shmUnlink(name: string): void;
  /** Tells this thread's V8 heap it holds `bytes` more memory (fewer when negative) than its objects show; returns the new total. */
  adjustExternalMemory(bytes: number): number;
  /** FUTEX_WAKE (process-shared): returns how many waiters, in any process, were woken (an addon thread still parked on the word after its futexWait settled counts too; it passes the wake on). */
  futexWake(options: FutexWakeOptions): number;
  /** FUTEX_WAIT on a native thread; the promise settles on the calling thread's loop, which is never blocked. Cancelled (left pending) when the calling thread's environment exits. */
  futexWait(options: FutexWaitOptions): Promise<FutexWaitResult>;
  /** Blocking FUTEX_WAIT on the calling thread: for tests and dedicated threads only. */
  futexWaitSync(options: FutexWaitOptions): FutexWaitResult;
  /** SO_PEERCRED of a connected Unix socket fd (e.g. `socket._handle.fd`): who connected, as the kernel saw it. */
  peerCredentials(fd: number): PeerCredentials;
  /** A listening AF_VSOCK socket, owned by this thread's relay thread (native code; it never calls into JS). */
  vsockListen(options: VsockListenOptions): VsockListening;
  /**
   * Starts a non-blocking AF_VSOCK connect on the relay thread and returns the JS end of its relay
   * (an AF_UNIX stream fd, the caller's to wrap and close), whose first 4 bytes are the status.
   * VMADDR_CID_ANY is refused (EINVAL); socket(2) failures throw.
   */
  vsockConnect(options: VsockConnectOptions): number;
  /** Claims an fd announced on a listener's control socket: true when it is now the caller's, false when it was not on offer (e.g. its listener closed). */
  vsockTakeAccepted(fd: number): boolean;
  /** This machine's vsock CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock). */
  vsockLocalCid(): number;
  vsockStats(): VsockStats;
  /**
   * Relays an already connected stream socket exactly as an accepted vsock connection is relayed
   * (same native code); returns the JS end, whose stream starts with status 0. On success the
   * relay thread owns `fd`; on a throw, the caller still does.
   */
  relayFd(fd: number): number;
  /** A listening Unix socket (made 0600 after bind: give a path in a private directory) run by the vsock listener's native accept loop, announcements and relays, so that path can be tested without a vsock peer; `cid` and `port` are 0, as in its announcements. The caller removes the socket file. */
  relayListenUnix(options: { path: string; backlog?: number }): VsockListening;
  /** A non-blocking, close-on-exec AF_UNIX stream socketpair. */
  socketpair(): [number, number];
  /** close(2) an fd the caller owns. */
  closeFd(fd: number): void;
  /**
   * A listening socket the caller owns, that several threads adopt (serve(..., { threads })):
   * `path` an AF_UNIX socket file made 0600 after bind(2), so give a path in a private directory
   * (listenSocketFile does; the caller removes a stale one before, and the file when done); `host` a numeric IPv4/IPv6 address and `port` (0: the kernel picks; see `port`).
   */
  listenSocket(options: { path: string; backlog?: number } | { host: string; port: number; backlog?: number }): { fd: number; port: number };
  /** A duplicate (close-on-exec) of `fd`, which the caller owns. */
  dupFd(fd: number): number;
  /** A non-blocking, close-on-exec eventfd (counter 0) for a cross-process doorbell; the caller owns and closes it. */
  eventfd(): number;
  /** Rings an eventfd doorbell (adds 1 to its counter); a saturated counter is already rung, so it never throws EAGAIN. */
  doorbellRing(fd: number): void;
  /** Whether `fd` is a non-blocking eventfd: check a peer's fds with it before ringing or polling them. */
  isDoorbell(fd: number): boolean;
  /** Polls an eventfd on the calling thread's own loop (no native thread); see DoorbellWatchOptions. Close the watch before closing the fd. */
  doorbellWatch(options: DoorbellWatchOptions): DoorbellWatch;
  /** Sends `data` (1–4096 bytes, default one zero byte) in one sendmsg with `fds` attached (SCM_RIGHTS, 1–16) on a connected Unix socket the caller owns; the sender keeps its copies. Throws EAGAIN rather than send part of it. */
  sendFds(options: { socket: number; fds: number[]; data?: Uint8Array }): void;
  /** Receives what waits on a Unix socket (up to 4096 bytes) and the fds attached to it (close-on-exec, now the caller's); null when nothing waits, throws EPIPE at end of stream. Never call it on a socket Node is reading: Node's reads drop attached fds. */
  recvFds(socket: number): { data: Buffer; fds: number[] } | null;
}

export interface DoorbellWatchOptions {
  /** The eventfd to poll; stays the caller's. */
  fd: number;
  /** Called on the watching thread after the doorbell rang (`count` rings since the last call, the counter is reset), or once with a negative errno if the fd fails, after which the watch is stopped. */
  onRing(count: number): void;
}

/** A doorbell being polled on the thread that made it. Closed by `close()` or when the thread's environment exits. */
export interface DoorbellWatch {
  /** Stops polling and releases the poll handle; idempotent. The fd stays open. */
  close(): void;
  /** Keeps the thread's loop alive while the watch is open (the default). */
  ref(): void;
  /** Lets the thread's loop exit although the watch is open. */
  unref(): void;
}

/** Where `npm run build:native` puts the binary, from dist/src/native/addon.js up to the package root. */
const kBinaryPath = fileURLToPath(new URL('../../../native/build/Release/ogurpchik_native.node', import.meta.url));
const kBuildHint = 'build it with: npm run build:native';

let binding: NativeBinding | undefined;
let loadError: RpcError | undefined;

/** The addon, loaded once per thread (each worker thread gets its own instance); throws RpcError NATIVE_MISSING when it is not built or was built for another Node ABI. */
export function loadNative(): NativeBinding {
  if (binding !== undefined) return binding;
  if (loadError !== undefined) throw loadError;
  try {
    if (!fs.existsSync(kBinaryPath)) {
      throw new RpcError('NATIVE_MISSING', `ogurpchik native addon not found at ${kBinaryPath}; ${kBuildHint}`);
    }
    const loaded = createRequire(import.meta.url)(kBinaryPath) as NativeBinding;
    // The addon uses V8's own API for SharedArrayBuffers, so a binary for another Node major
    // would load and then crash; refuse it here instead.
    if (String(loaded.moduleVersion) !== process.versions.modules) {
      throw new RpcError(
        'NATIVE_MISSING',
        `ogurpchik native addon was built for Node ABI ${loaded.moduleVersion}, this is ${process.versions.modules} (Node ${process.version}); ${kBuildHint}`,
      );
    }
    binding = loaded;
    return binding;
  } catch (err) {
    loadError = RpcError.is(err) ? err : new RpcError('NATIVE_MISSING', `ogurpchik native addon failed to load; ${kBuildHint}`, { cause: err });
    throw loadError;
  }
}

/** True when the addon is built and loads in this thread. */
export function nativeAvailable(): boolean {
  try {
    loadNative();
    return true;
  } catch {
    return false;
  }
}

/**
 * Cross-process RingSignal: native FUTEX_WAIT/FUTEX_WAKE on the ring's words, which must live in
 * a segment from shmOpen (or any SharedArrayBuffer when both sides are threads of one process;
 * both sides must use this signal, since it does not wake Atomics.wait and vice versa).
 */
export const futexSignal: RingSignal = {
  wait(view, index, expected, timeoutMs) {
    // Promise<FutexWaitResult> as Promise<void>: the ring only awaits it, and every outcome
    // means "look at the word again".
    return loadNative().futexWait({
      buffer: view.buffer as SharedArrayBuffer,
      byteOffset: view.byteOffset + index * 4,
      expected,
      timeoutMs,
    }) as Promise<unknown> as Promise<void>;
  },
  notify(view, index) {
    loadNative().futexWake({ buffer: view.buffer as SharedArrayBuffer, byteOffset: view.byteOffset + index * 4, count: 1 });
  },
};

export interface DoorbellSignalOptions {
  /** Word index -> eventfd this side watches to wake its wait on that word (rung by the peer); a notify on such a word wakes the wait here. */
  watch: Readonly<Record<number, number>>;
  /** Word index -> eventfd this side rings to wake the peer's wait on that word. */
  ring: Readonly<Record<number, number>>;
}

/** A RingSignal over eventfd doorbells; `close()` stops its polls (the fds stay the caller's) and settles any wait, and every later wait at once. */
export interface DoorbellSignal extends RingSignal {
  close(): void;
}

interface Door {
  watch: DoorbellWatch;
  resolve: (() => void) | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Cross-process RingSignal whose waits are eventfd polls on the waiting thread's own loop (no
 * native thread, no uv_async hop); the peer's notify writes the eventfd. One waiter per word, as
 * the ring has. The words still carry the state: a wait returns at once when its word has moved,
 * and a ring that arrives while nobody waits stays in the eventfd's counter and only makes the
 * next wait return early, which the ring tolerates (it re-checks the word).
 */
export function doorbellSignal(options: DoorbellSignalOptions): DoorbellSignal {
  const native = loadNative();
  const doors = new Map<number, Door>();
  const settle = (door: Door) => {
    const resolve = door.resolve;
    if (resolve === undefined) return;
    door.resolve = undefined;
    if (door.timer !== undefined) clearTimeout(door.timer);
    door.timer = undefined;
    door.watch.unref();
    resolve();
  };
  for (const [index, fd] of Object.entries(options.watch)) {
    const door: Door = { watch: undefined as unknown as DoorbellWatch, resolve: undefined, timer: undefined };
    // A failed fd (negative count) also settles the wait: the ring's watchdog then notices a dead peer.
    door.watch = native.doorbellWatch({ fd, onRing: () => settle(door) });
    door.watch.unref();
    doors.set(Number(index), door);
  }
  const ringFds = new Map<number, number>(Object.entries(options.ring).map(([i, fd]) => [Number(i), fd]));
  let closed = false;
  return {
    wait(view, index, expected, timeoutMs) {
      const door = doors.get(index);
      // Closed: the ring is being let go of; its reader re-checks and finds itself stopped.
      if (closed) return Promise.resolve();
      if (door === undefined) return Promise.reject(new RpcError('INVALID_ARGUMENT', `doorbellSignal: no doorbell watched for word ${index}`));
      if (Atomics.load(view, index) !== expected) return Promise.resolve();
      return new Promise<void>((resolve) => {
        settle(door); // a second waiter on one word replaces the first; the first just re-checks
        door.resolve = resolve;
        door.watch.ref();
        if (Number.isFinite(timeoutMs)) door.timer = setTimeout(() => settle(door), timeoutMs);
      });
    },
    notify(_view, index) {
      const fd = ringFds.get(index);
      if (fd !== undefined) {
        native.doorbellRing(fd);
        return;
      }
      // A word this side watches: the ring wakes its own wait (stop(), its watchdog), in-thread.
      const door = doors.get(index);
      if (door !== undefined) settle(door);
    },
    close() {
      closed = true;
      for (const door of doors.values()) {
        door.watch.close();
        settle(door);
      }
      doors.clear();
      ringFds.clear();
    },
  };
}

/** Who is at the other end of a connected Unix socket (SO_PEERCRED), or undefined when the addon or the fd is not there. */
export function socketPeerCredentials(socket: unknown): PeerCredentials | undefined {
  const fd = (socket as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0 || !nativeAvailable()) return undefined;
  try {
    return loadNative().peerCredentials(fd);
  } catch {
    return undefined;
  }
}

/** The pid of the process at the other end of a connected Unix socket (SO_PEERCRED), or undefined when the addon or the fd is not there. */
export function socketPeerPid(socket: unknown): number | undefined {
  return socketPeerCredentials(socket)?.pid;
}
