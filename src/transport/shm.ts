/**
 * The shared-memory transport adapter: a ByteStream over a pair of rings in POSIX shared memory,
 * signalled with eventfd doorbells polled on each thread's own loop, or with a native futex when
 * the peer offers no doorbells (V8's Atomics.wait/notify never wake another process).
 *
 * Rendezvous: the server listens on a Unix control socket named after the service. For each
 * client it creates two fresh segments (client→server and server→client rings) and sends their
 * names as one JSON line (with `doorbell: 1` when it takes doorbells); the client maps both and
 * answers `ok`, or `ok doorbell` with four eventfds attached (SCM_RIGHTS: the client's, so the
 * server, which reads the answer itself before Node reads the socket, is the only side that has to
 * receive fds), and the server then unlinks the
 * names at once: both processes hold mappings, so nothing is left in /dev/shm even if one is
 * killed a moment later. The control socket stays open for the life of the connection: the
 * kernel closes it when either process dies, which is how the peer's death is noticed (at once,
 * well within the 1 s promised), and it tells the server the client's pid and the client the
 * server's uid (SO_PEERCRED).
 */
import { threadId } from 'node:worker_threads';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { RpcError } from '../errors.js';
import { copyOut } from '../shm/copy.js';
import { countCopied } from '../observe.js';
import { perUserTempDir, securePrivateDir } from '../private-dir.js';
import { loadNative, socketPeerPid } from '../native/addon.js';
import { RingReader, RingWriter, initRing, kRingHeaderBytes } from '../shm/ring.js';
import { readerStopped } from '../shm/stop-wait.js';
import { closeDoorbells, createDoorbells, doorbellFds, doorbellsFrom, pairSignals, type PairSignals, type ShmDoorbells } from '../shm/doorbells.js';
import type { ShmDescriptor } from './descriptors.js';
import type { ByteStream, StreamEvents, TransportAdapter } from './types.js';
import { checkServerUid, listenSocketFile } from './socket-file.js';

/** What the shm adapter receives: the descriptor and the idle strategy of the ring it reads. */
export type ShmAdapterOptions = ShmDescriptor & { pollMicros?: number; spinMicros?: number };
type Idle = Pick<ShmAdapterOptions, 'pollMicros' | 'spinMicros'>;

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
function controlPathChecked(name: string, create: boolean): string {
  const file = shmControlPath(name);
  if (!process.env.XDG_RUNTIME_DIR) securePrivateDir(path.dirname(file), { create });
  return file;
}

/** Segment names of one connection: /ogurpchik-<service>-<server pid>-<thread id>-<n>-{c2s,s2c}. */
function segmentPrefix(name: string): string {
  return `ogurpchik-${name}-`;
}

let segmentCounter = 0;
const kNothing = new Uint8Array(0);

/** An shm connection's two rings, as this process maps them. */
export interface ShmRings {
  toPeer: SharedArrayBuffer;
  fromPeer: SharedArrayBuffer;
  /** The eventfd doorbells both ends agreed on (owned by whoever holds the rings), else the futex signals them. */
  doorbells?: ShmDoorbells;
}

class ShmStream implements ByteStream {
  readonly remoteAddress: string;
  readonly remotePid?: number;
  readonly #control: net.Socket;
  readonly #rings: ShmRings;
  readonly #writer: RingWriter;
  readonly #reader: RingReader;
  readonly #signals: PairSignals;
  #events: StreamEvents | undefined;
  #closed = false;
  #writerBlocked = false;
  /** Set once handOver() has given the rings away: from then on this stream only watches the control socket. */
  #handedOver = false;
  /** handOver() waits for the reader to finish a fragmented message. */
  #atBoundary: { resolve: () => void; reject: (err: Error) => void } | undefined;

  constructor(control: net.Socket, rings: ShmRings, name: string, remotePid: number | undefined, idle: Idle) {
    const { toPeer, fromPeer } = rings;
    this.#control = control;
    this.remoteAddress = `shm:${name}`;
    if (remotePid !== undefined) this.remotePid = remotePid;
    this.#rings = rings;
    this.#signals = pairSignals(rings.doorbells);
    this.#writer = new RingWriter(toPeer, { signal: this.#signals.writer });
    this.#reader = new RingReader(
      fromPeer,
      {
        // The connection keeps frame bodies: a view into the ring must be copied out of it.
        onMessage: (_tag, bytes, owned) => {
          if (!owned) {
            countCopied(bytes.length);
            bytes = copyOut(bytes);
          }
          this.#events?.data(bytes);
          if (this.#atBoundary !== undefined) this.#stopAtBoundary();
        },
        onClose: () => this.#finish(undefined),
        onError: (err) => this.destroy(err as Error),
      },
      { signal: this.#signals.reader, pollMicros: idle.pollMicros, spinMicros: idle.spinMicros },
    );
  }

  /** How many times the reader has gone to sleep on the peer's ring (for tests of the idle strategy). */
  get readerSleeps(): number {
    return this.#reader.sleeps;
  }

  start(events: StreamEvents): void {
    this.#events = events;
    const control = this.#control;
    let failure: Error | undefined;
    control.on('error', (err) => (failure = err));
    // The peer process is gone (or closed its end): nothing more will come through the rings. What
    // it wrote before may still be in ours, though: its control socket's close can overtake our
    // reader's futex wake-up (a peer that answers and closes at once lost its answer in 40% of
    // rounds here), so deliver that first.
    control.on('close', () => {
      if (!this.#handedOver) this.#drainReader();
      this.#finish(failure);
    });
    control.on('data', () => {}); // nothing is expected after the rendezvous
    control.resume();
    this.#reader.start();
    if (control.destroyed) queueMicrotask(() => this.#finish(failure));
  }

  write(chunk: Uint8Array): boolean {
    return this.writeCopy(chunk, kNothing);
  }

  /** The ring copies what it is given (into the ring, or into its queue when full). */
  writeCopy(head: Uint8Array, body: Uint8Array): boolean {
    // Handed over: the rings are another thread's to write (and the connection sends nothing more).
    if (this.#closed || this.#handedOver) return true;
    if (this.#writer.write2(0, head, body)) return !this.#writerBlocked;
    // The ring is full: the bytes are queued in order; tell the writer to hold back until it drains.
    if (!this.#writerBlocked) {
      this.#writerBlocked = true;
      this.#writer.flushed().then(
        () => {
          this.#writerBlocked = false;
          this.#events?.drain();
        },
        () => {},
      );
    }
    return false;
  }

  pause(): void {
    this.#reader.pause();
  }

  resume(): void {
    this.#reader.resume();
  }

  end(): void {
    if (this.#closed) return;
    if (this.#handedOver) {
      // The ring's close record is the new owner's to write (see handOver).
      this.#control.end();
      return;
    }
    try {
      this.#writer.close();
    } catch {
      // already closed
    }
    this.#writer.flushed().finally(() => this.#control.end());
  }

  destroy(error?: Error): void {
    this.#writer.destroy(error);
    this.#control.destroy();
    this.#finish(error);
  }

  /**
   * Gives the rings up to another thread of this process, which reads and writes them from then on
   * (shm's direct path): resolves once this side has written all it queued and its reader has
   * stopped at a message boundary (what it read so far went to `data` as usual). The stream then
   * only watches the control socket: writes are dropped, end() ends the control socket (the new
   * owner writes the ring's close record first), and close still comes when the peer goes.
   * Rejects with CLOSED if the stream closes first.
   */
  async handOver(): Promise<ShmRings> {
    await this.#writer.flushed();
    if (this.#closed) throw new RpcError('CLOSED', 'the shm connection closed while it was being set up');
    if (!this.#reader.atMessageBoundary) await new Promise<void>((resolve, reject) => (this.#atBoundary = { resolve, reject }));
    this.#reader.stop();
    this.#handedOver = true;
    // Its futex wait, still parked when the new owner's reader parks on the same word, took the
    // peer's wake-up meant for the new one in some rounds here (the new reader then slept until
    // its 1 s watchdog): hand over only once it has settled.
    await readerStopped(this.#reader, this.#rings.fromPeer);
    // The new owner polls the doorbells on its own loop: this thread stops polling them first.
    this.#signals.close();
    return this.#rings;
  }

  #stopAtBoundary(): void {
    if (!this.#reader.atMessageBoundary) return;
    const waiter = this.#atBoundary!;
    this.#atBoundary = undefined;
    // Before the reader takes another record: the next is the new owner's first.
    this.#reader.stop();
    waiter.resolve();
  }

  /** Delivers what the peer's ring holds now, synchronously (up to its close record, or until paused). */
  #drainReader(): void {
    try {
      while (!this.#closed && this.#reader.drain() > 0);
    } catch (err) {
      // A corrupt record: the stream fails with it, as the read loop would have.
      this.destroy(err as Error);
    }
  }

  #finish(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reader.stop();
    this.#atBoundary?.reject(new RpcError('CLOSED', 'the shm connection closed while it was being set up'));
    this.#atBoundary = undefined;
    this.#writer.destroy();
    if (!this.#handedOver) {
      this.#signals.close();
      if (this.#rings.doorbells !== undefined) closeDoorbells(this.#rings.doorbells);
    }
    if (!this.#control.destroyed) this.#control.destroy();
    this.#events?.close(error);
  }
}

/** The rings of `stream` for shm's direct path (see ShmStream#handOver), or undefined when it is not an shm stream. */
export function handOverShm(stream: ByteStream): Promise<ShmRings> | undefined {
  return stream instanceof ShmStream ? stream.handOver() : undefined;
}

/** Reads one newline-terminated line from a socket (at most kMaxLine bytes), with a timeout. */
function readLine(socket: net.Socket, what: string): Promise<string> {
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
function readAnswer(control: net.Socket): Promise<{ line: string; fds: number[] }> {
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
function removeLeftoverSegments(name: string): void {
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

function mapPair(native: ReturnType<typeof loadNative>, base: string, bytes: number, create: boolean): [SharedArrayBuffer, SharedArrayBuffer] {
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
function offerDoorbells(control: net.Socket): ShmDoorbells | undefined {
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

export const shmTransport: TransportAdapter = {
  async connect(d: ShmAdapterOptions) {
    const native = loadNative();
    const controlPath = controlPathChecked(d.name, false);
    const control = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ path: controlPath });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
    });
    try {
      // Before reading a word from it: a server of another user could offer segments of its own.
      checkServerUid(control, controlPath, d.peerUid);
      const offer = JSON.parse(await readLine(control, 'offer')) as { base?: unknown; bytes?: unknown; error?: unknown; doorbell?: unknown };
      if (typeof offer.error === 'string') throw new RpcError('BUSY', offer.error);
      if (typeof offer.base !== 'string' || !/^\/ogurpchik-[\w.-]+$/.test(offer.base) || typeof offer.bytes !== 'number') {
        throw new RpcError('PROTOCOL', 'shm rendezvous: malformed offer');
      }
      const [c2s, s2c] = mapPair(native, offer.base, offer.bytes, false);
      const doorbells = offer.doorbell === 1 ? offerDoorbells(control) : undefined;
      if (doorbells === undefined) control.write('ok\n');
      return new ShmStream(control, { toPeer: c2s, fromPeer: s2c, doorbells }, d.name, socketPeerPid(control), d);
    } catch (err) {
      control.destroy();
      throw err;
    }
  },

  async listen(d: ShmAdapterOptions, onStream) {
    const native = loadNative();
    const controlPath = controlPathChecked(d.name, true);
    removeLeftoverSegments(d.name);
    const bytes = kRingHeaderBytes + d.capacity;
    // Paused: readAnswer reads the answer's fds before Node reads anything from the socket.
    const server = net.createServer({ pauseOnConnect: true }, (control) => {
      // Nothing reads this paused socket yet, so nothing else listens for its errors: a client
      // that left at once (refused our uid, say) fails the write of the offer with EPIPE, which
      // unheard would end this whole thread. readAnswer sees the same end and cleans up.
      control.on('error', () => {});
      // The thread id too: a listener restarted on a new thread of this process starts counting again.
      const base = `/${segmentPrefix(d.name)}${process.pid}-${threadId}-${++segmentCounter}`;
      let pair: [SharedArrayBuffer, SharedArrayBuffer];
      try {
        pair = mapPair(native, base, bytes, true);
        initRing(pair[0]);
        initRing(pair[1]);
      } catch (err) {
        control.end(JSON.stringify({ error: `cannot create shared memory: ${(err as Error).message}` }) + '\n');
        return;
      }
      control.write(JSON.stringify({ base, bytes, doorbell: 1 }) + '\n');
      const unlink = () => {
        for (const suffix of ['-c2s', '-s2c']) {
          try {
            native.shmUnlink(base + suffix);
          } catch {
            // already gone
          }
        }
      };
      readAnswer(control).then(
        ({ line, fds }) => {
          unlink();
          // Only non-blocking eventfds: a blocking fd (or another kind) could stall this thread when rung or read.
          const usable = line === 'ok doorbell' && fds.length === 4 && fds.every((fd) => native.isDoorbell(fd));
          const doorbells = usable ? doorbellsFrom(fds, 'listen') : undefined;
          if (doorbells === undefined) for (const fd of fds) native.closeFd(fd);
          if (line !== 'ok' && doorbells === undefined) {
            control.destroy();
            return;
          }
          onStream(new ShmStream(control, { toPeer: pair[1], fromPeer: pair[0], doorbells }, d.name, socketPeerPid(control), d));
        },
        () => {
          unlink();
          control.destroy();
        },
      );
    });
    const close = () => new Promise<void>((resolve) => server.close(() => resolve()));
    const { file } = await listenSocketFile(
      controlPath,
      (privatePath) =>
        new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ path: privatePath }, () => {
            server.off('error', reject);
            server.on('error', () => {});
            resolve();
          });
        }),
      close,
    );
    return {
      address: { kind: 'shm', name: d.name },
      close: () => close().then(() => file.remove()),
    };
  },
};
