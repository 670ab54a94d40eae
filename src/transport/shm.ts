/**
 * The shared-memory transport adapter: a ByteStream over a pair of rings in POSIX shared memory,
 * signalled with eventfd doorbells polled on each thread's own loop, or with a native futex when
 * the peer offers no doorbells (V8's Atomics.wait/notify never wake another process).
 *
 * Rendezvous (./shm-rendezvous.ts): the server listens on a Unix control socket named after the service. For each
 * client it creates two fresh segments (client→server and server→client rings) and sends their
 * names as one JSON line (with `doorbell: 1` when it takes doorbells); the client maps both and
 * answers `ok`, or `ok doorbell` with four eventfds attached (SCM_RIGHTS: the client's, so the
 * server, which reads the answer itself before Node reads the socket, is the only side that has to
 * receive fds), and the server then unlinks the names at once: both processes hold mappings, so nothing is left in /dev/shm even if one is
 * killed a moment later. The control socket stays open for the life of the connection: the
 * kernel closes it when either process dies, which is how the peer's death is noticed (at once,
 * well within the 1 s promised), and it tells the server the client's pid and the client the
 * server's uid (SO_PEERCRED).
 */
import net from 'node:net';
import { RpcError } from '../errors.js';
import { copyOut } from '../shm/copy.js';
import { countCopied } from '../observe.js';
import { loadNative, socketPeerPid } from '../native/addon.js';
import { RingReader, RingWriter, initRing, kRingHeaderBytes } from '../shm/ring.js';
import { readerStopped } from '../shm/stop-wait.js';
import { closeDoorbells, doorbellsFrom, pairSignals, type PairSignals, type ShmDoorbells } from '../shm/doorbells.js';
import { controlPathChecked, mapPair, nextSegmentBase, offerDoorbells, readAnswer, readLine, removeLeftoverSegments } from './shm-rendezvous.js';

export { shmControlPath } from './shm-rendezvous.js';
import type { ShmDescriptor } from './descriptors.js';
import type { ByteStream, StreamEvents, TransportAdapter } from './types.js';
import { checkServerUid, listenSocketFile } from './socket-file.js';

/** What the shm adapter receives: the descriptor and the idle strategy of the ring it reads. */
export type ShmAdapterOptions = ShmDescriptor & { pollMicros?: number; spinMicros?: number };
type Idle = Pick<ShmAdapterOptions, 'pollMicros' | 'spinMicros'>;

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
      const base = nextSegmentBase(d.name);
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
