/**
 * shm's direct path: the main thread reads and writes an shm connection's two cross-process rings
 * itself (a main-thread client, or a main-thread handler), instead of relaying every envelope
 * through its connection worker. The worker keeps what needs a socket: the rendezvous, the
 * handshake, SO_PEERCRED and the control socket, whose close is how the peer's death is noticed
 * (it then sends ConnClosed on the task's ring pair, and the task tears the link down).
 *
 * The bytes in the rings are the same as the worker's ShmStream puts there (a byte stream of
 * length-prefixed frames in records of tag 0, see docs/PROTOCOL.md §5), so either end may run
 * either way. This side does what the worker's Connection did on the data path: framing with
 * maxFrameBytes, keepalive pings, the Close envelope, backpressure on a full ring, frame counts.
 */
import { RpcError, toWireError } from '../errors.js';
import type { Codec } from '../codec/index.js';
import { helloScheme } from '../handshake/packets.js';
import type { IdleWindows } from '../idle.js';
import { Kind, encodeClose, encodePing } from '../protocol/envelope.js';
import { FrameDecoder, FrameWriter } from '../protocol/framing.js';
import type { ShmHandOver } from '../bridge/control.js';
import { closeDoorbells, pairSignals, type PairSignals, type ShmDoorbells } from '../shm/doorbells.js';
import { RingReader, RingWriter } from '../shm/ring.js';
import { readerStopped } from '../shm/stop-wait.js';
import type { Session } from '../session/session.js';

/** How long a closing link waits for its queued bytes to reach a ring the peer has stopped reading. */
const kFlushTimeoutMs = 2000;

export interface DirectLinkOptions {
  /** 'connect': a client, whose reads never wait on its writes; 'listen': a server, which stops reading requests while its answers cannot go out. */
  role: 'listen' | 'connect';
  codec: Codec;
  maxFrameBytes: number;
  /** Whether the Close this side sends carries its stack. */
  sendStacks: boolean;
  idle: IdleWindows;
  /** Ping a peer silent this long, give up after another such interval (0: off). */
  keepAliveMs: number;
  /** A client without a handshake: a Hello as the first frame means the server wants one. */
  expectsNoHello: boolean;
  /** The link failed or the peer closed its ring: the owner closes the session and the connection (after end()). */
  onFail(reason: RpcError, tellPeer: boolean): void;
}

/** What shmDirectStats() reports. */
export interface ShmDirectStats {
  /** Links attached since the process started, and open now. */
  opened: number;
  open: number;
  /** Per open link: its reader's windows and how often it spun and slept. */
  readers: Array<{ spinMicros: number; pollMicros: number; spins: number; sleeps: number }>;
}

const liveLinks = new Set<DirectLink>();
let openedLinks = 0;

/** This thread's direct shm links (for tests and debugging). */
export function shmDirectStats(): ShmDirectStats {
  const readers: ShmDirectStats['readers'] = [];
  for (const link of liveLinks) {
    const r = link.reader;
    if (r !== undefined) readers.push({ ...r.windows, spins: r.spins, sleeps: r.sleeps });
  }
  return { opened: openedLinks, open: liveLinks.size, readers };
}

const kNothing = new Uint8Array(0);

/** One connection's rings, read and written on this thread. Made with its session, attached once the worker hands the rings over. */
export class DirectLink {
  /** Frames received and sent on this link. */
  framesIn = 0;
  framesOut = 0;
  readonly #options: DirectLinkOptions;
  readonly #decoder: FrameDecoder;
  readonly #frames: FrameWriter;
  #session: Session | undefined;
  #reader: RingReader | undefined;
  #writer: RingWriter | undefined;
  #fromPeer: SharedArrayBuffer | undefined;
  /** The rings' signals (doorbells polled on this thread, or the futex), and the doorbells this link now owns. */
  #signals: PairSignals | undefined;
  #doorbells: ShmDoorbells | undefined;
  /** Set once this side closes or the connection is gone: nothing more is read or sent. */
  #closing = false;
  #flushScheduled = false;
  /** The ring to the peer is full: its bytes wait in the writer's queue. */
  #blocked = false;
  /** IdleWindows.clientPollMicros in ms for a client, else 0: after a call, look for its answer this long. */
  readonly #expectMs: number;
  #keepAliveTimer: ReturnType<typeof setInterval> | undefined;
  #lastHeard = 0;
  #pingSentAt = 0;
  #pingToken = 0;

  constructor(options: DirectLinkOptions) {
    this.#options = options;
    this.#decoder = new FrameDecoder(options.maxFrameBytes);
    this.#frames = new FrameWriter(
      (chunk) => this.#wrote(this.#writer!.write(0, chunk)),
      (head, body) => this.#wrote(this.#writer!.write2(0, head, body)),
    );
    this.#expectMs = options.role === 'connect' ? options.idle.clientPollMicros / 1000 : 0;
  }

  /** The session whose envelopes this link carries. */
  bind(session: Session): void {
    this.#session = session;
  }

  /** The reader of the peer's ring, while attached. */
  get reader(): RingReader | undefined {
    return this.#reader;
  }

  /** Takes the rings over from the worker and starts reading, beginning with `rest` (bytes the worker read past the handshake). */
  attach(rings: ShmHandOver): void {
    // The worker's stream passes its doorbells on with the rings (ShmRings#doorbells); they are ours now.
    const doorbells = rings.doorbells;
    if (this.#closing || this.#reader !== undefined) {
      if (doorbells !== undefined && doorbells !== this.#doorbells) closeDoorbells(doorbells);
      return;
    }
    this.#doorbells = doorbells;
    this.#signals = pairSignals(doorbells);
    this.#writer = new RingWriter(rings.toPeer, { signal: this.#signals.writer });
    this.#fromPeer = rings.fromPeer;
    this.#reader = new RingReader(
      rings.fromPeer,
      {
        // A view into the ring is safe here: the decoder copies out the partial frame of a chunk
        // that is a small part of its buffer (as every ring record is), and the session decodes
        // out of shared memory as it does for the ring pair's records.
        onMessage: (_tag, bytes) => this.#onData(bytes),
        onClose: () => this.#peerClosed(),
        onError: (err) => this.#fail(RpcError.is(err) ? err : new RpcError('PROTOCOL', String((err as Error)?.message ?? err), { cause: err }), true),
      },
      { signal: this.#signals.reader, pollMicros: this.#options.idle.peerPollMicros, spinMicros: this.#options.idle.spinMicros },
    );
    liveLinks.add(this);
    openedLinks++;
    this.#lastHeard = performance.now();
    const interval = this.#options.keepAliveMs;
    if (interval > 0) {
      this.#keepAliveTimer = setInterval(() => this.#keepAlive(interval), Math.max(1, Math.floor(interval / 2)));
      this.#keepAliveTimer.unref();
    }
    if (rings.rest.length > 0) this.#onData(rings.rest);
    this.#reader.start();
  }

  /** Session's send: one envelope body, framed into the peer's ring (this turn's frames in one record). A promise: the ring is full, wait. */
  send(head: Uint8Array, payload: Uint8Array): void | Promise<void> {
    if (this.#closing || this.#writer === undefined) throw new RpcError('CLOSED', 'the connection is not open');
    this.framesOut++;
    this.#frames.push2(head, payload);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // Every frame of this synchronous run (a burst of calls) in one record, before the loop turns.
      queueMicrotask(this.#flush);
    }
    // The answer usually comes within tens of µs: look for it rather than sleep and be woken.
    if (this.#expectMs > 0) this.#reader!.expectWithin(this.#expectMs);
    return this.#blocked ? this.#writer.flushed() : undefined;
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    if (this.#writer === undefined) return;
    try {
      this.#frames.flush();
    } catch {
      // the writer was closed meanwhile: the connection is going
    }
  };

  #wrote(written: boolean): void {
    if (written || this.#blocked) return;
    this.#blocked = true;
    // A server that cannot send its answers stops taking requests; a client always keeps reading
    // (if both stopped while their own writes were backed up, each would wait for the other).
    const holdsReads = this.#options.role === 'listen';
    if (holdsReads) this.#reader?.pause();
    this.#writer!.flushed().then(
      () => {
        this.#blocked = false;
        if (holdsReads) this.#reader?.resume();
      },
      () => {},
    );
  }

  #onData(chunk: Uint8Array): void {
    if (this.#closing) return;
    this.#lastHeard = performance.now();
    this.#pingSentAt = 0;
    try {
      this.#decoder.push(chunk, this.#onFrame);
    } catch (err) {
      this.#fail(RpcError.is(err) ? err : new RpcError('PROTOCOL', String((err as Error)?.message ?? err), { cause: err }), true);
    }
  }

  readonly #onFrame = (body: Uint8Array): void => {
    if (this.#closing) return;
    if (this.framesIn++ === 0 && this.#options.expectsNoHello) {
      const scheme = helloScheme(body);
      if (scheme !== undefined) {
        this.#fail(new RpcError('HANDSHAKE_FAILED', `the server runs a ${scheme} handshake, but this client has none: configure the same scheme on both ends`), false);
        return;
      }
    }
    // Throws RpcError PROTOCOL on a malformed envelope (caught by #onData): the connection closes.
    this.#session!.receive(body);
  };

  #keepAlive(interval: number): void {
    if (this.#closing) return;
    const now = performance.now();
    const silentFor = now - this.#lastHeard;
    if (this.#pingSentAt !== 0) {
      if (now - this.#pingSentAt >= interval && silentFor >= interval) this.#fail(new RpcError('CLOSED', `the peer did not answer a keepalive ping within ${interval} ms`), false);
      return;
    }
    if (silentFor >= interval) {
      this.#pingSentAt = now;
      const ping = encodePing(Kind.Ping, ++this.#pingToken);
      this.send(ping.subarray(0, 9), kNothing);
    }
  }

  /** The close record: the peer has written all it will. */
  #peerClosed(): void {
    if (this.#closing) return;
    let reason = new RpcError('CLOSED', 'the peer closed the connection');
    try {
      this.#decoder.end();
    } catch (truncated) {
      reason = truncated as RpcError;
    }
    this.#fail(reason, false);
  }

  #fail(reason: RpcError, tellPeer: boolean): void {
    if (this.#closing) return;
    this.#options.onFail(reason, tellPeer);
  }

  /**
   * This side closes: tells the peer `reason` in a Close envelope (when `tellPeer`), then writes
   * the ring's close record; what is read from then on is dropped. Resolves once both are in the ring (or after a bound
   * when the peer has stopped reading): only then may the worker close the control socket, which
   * the peer takes for the end of everything. Idempotent.
   */
  end(reason: RpcError, tellPeer: boolean): Promise<void> {
    const writer = this.#writer;
    if (this.#closing || writer === undefined) {
      this.#closing = true;
      return Promise.resolve();
    }
    if (tellPeer) {
      try {
        this.#frames.push(encodeClose(this.#options.codec.encodeError(toWireError(reason, { stacks: this.#options.sendStacks }))), true);
      } catch {
        // an unencodable reason is not worth failing the close over
      }
    }
    this.#flush();
    this.#closing = true;
    // The reader runs on (what it reads is dropped) until teardown(): a peer blocked writing to
    // us may be a server that reads nothing until its answers go out, and so would never make
    // room for our Close.
    try {
      writer.close();
    } catch {
      // closed already
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([writer.flushed().catch(() => {}), new Promise<void>((resolve) => (timer = setTimeout(resolve, kFlushTimeoutMs)))]).finally(() => clearTimeout(timer));
  }

  /**
   * The connection has closed (the worker said so, or the task ended): delivers what the peer's
   * ring holds now (its last answers may have overtaken the news of its close), then stops reading
   * (waking this thread's own futex wait), drops the writer's queue and lets go of both rings.
   */
  teardown(): void {
    const reader = this.#reader;
    if (reader !== undefined && !this.#closing) {
      try {
        while (!this.#closing && reader.drain() > 0);
      } catch {
        // a corrupt record: the session closes anyway
      }
    }
    this.#closing = true;
    if (reader !== undefined) {
      reader.stop();
      void readerStopped(reader, this.#fromPeer!);
    }
    this.#writer?.destroy();
    this.#signals?.close();
    if (this.#doorbells !== undefined) closeDoorbells(this.#doorbells);
    this.#signals = undefined;
    this.#doorbells = undefined;
    this.#reader = undefined;
    this.#writer = undefined;
    this.#fromPeer = undefined;
    clearInterval(this.#keepAliveTimer);
    liveLinks.delete(this);
  }
}
