/**
 * One connection inside a worker: a byte stream, optionally a handshake on its raw bytes, framing on
 * top, and above that either a local call layer (a handler module running in this worker) or a
 * relay of envelope bodies to the main thread through the task's ring. The stream knows nothing of
 * calls; the session knows nothing of bytes.
 */
import { deferred, type Deferred } from '../deferred.js';
import { RpcError, toWireError } from '../errors.js';
import type { Codec } from '../codec/index.js';
import { HandshakeChannel } from '../handshake/channel.js';
import { Kind, checkEnvelope, encodeClose, encodePing, encodePong } from '../protocol/envelope.js';
import { FrameDecoder, FrameWriter } from '../protocol/framing.js';
import { helloScheme } from '../handshake/packets.js';
import type { Session } from '../session/session.js';
import type { ByteStream } from '../transport/types.js';
import type { PeerInfo } from '../types.js';

/** What a connection needs from the task that owns it. */
export interface ConnectionHost {
  readonly codec: Codec;
  readonly maxFrameBytes: number;
  /** Whether the reason a Close tells the peer carries its stack. */
  readonly sendStacks: boolean;
  /** A client without a handshake: a Hello as the first frame means the server wants one. */
  readonly expectsNoHello?: boolean;
  /** Whether reading pauses while this side's writes are backed up (servers: yes; clients: no). */
  readonly readsWaitForWrites: boolean;
  /** The connection has frames queued: flush it at the end of this turn. */
  markDirty(conn: Connection): void;
  /** Relays one body to the main thread; returns false when the ring is full (then wait for `relayFlushed`). */
  relay?(connId: number, body: Uint8Array): boolean;
  relayFlushed?(): Promise<void>;
  /** The connection closed; `reason` says why. */
  closed(conn: Connection, reason: RpcError): void;
  /** The stream went over its write limit (`false`) or drained below it (`true`). */
  writableChanged?(conn: Connection, writable: boolean): void;
  /** Bytes came from the peer (after the handshake): the host may keep its event loop awake for the next ones. */
  heard?(): void;
}

const kResolved = Promise.resolve();

export class Connection {
  readonly id: number;
  readonly peer: PeerInfo;
  /** Frames received and sent, for stats. */
  framesIn = 0;
  framesOut = 0;
  /** Set by the host while this connection waits in its list of connections to flush. */
  flushQueued = false;
  readonly #stream: ByteStream;
  readonly #host: ConnectionHost;
  readonly #decoder: FrameDecoder;
  readonly #writer: FrameWriter;
  #session: Session | undefined;
  /** Set while a handshake owns the stream's bytes (until `open()`). */
  #handshake: HandshakeChannel | undefined;
  #closing: RpcError | undefined;
  #writable = true;
  /** Settles when the stream drains (or the connection closes); made by the first whenWritable() of a backup. */
  #drained: Deferred | undefined;
  #readPaused = 0;
  /** performance.now() when the peer last sent anything; the keepalive works from it. */
  #lastHeard = performance.now();
  #pingSentAt = 0;
  #destroyTimer: ReturnType<typeof setTimeout> | undefined;
  #pingToken = 0;
  /** From a served connection's read until the microtask after it, which flushes what was sent meanwhile. */
  #flushAfterRead = false;

  constructor(id: number, stream: ByteStream, peer: PeerInfo, host: ConnectionHost) {
    this.id = id;
    this.peer = peer;
    this.#stream = stream;
    this.#host = host;
    this.#decoder = new FrameDecoder(host.maxFrameBytes);
    const wrote = (ok: boolean): void => {
      if (!ok && this.#writable) {
        this.#writable = false;
        // A server that cannot send its answers stops taking requests (backpressure to the
        // client). A client always keeps reading: if both sides stopped reading while their own
        // writes were backed up, each would wait for the other forever.
        if (host.readsWaitForWrites) this.#pauseReading();
        host.writableChanged?.(this, false);
      }
    };
    this.#writer = new FrameWriter(
      (chunk) => wrote(stream.write(chunk)),
      stream.writeCopy === undefined ? undefined : (head, body) => wrote(stream.writeCopy!(head, body)),
    );
  }

  /** Serves this connection's envelopes with a local session instead of relaying them. */
  attach(session: Session): void {
    this.#session = session;
  }

  /** Starts the stream with framing from its first byte (no handshake). */
  start(): void {
    this.#startStream();
  }

  /**
   * Starts the stream and runs `run` on its raw bytes before any frame is read. On failure closes
   * this connection (the peer hears only what `run` wrote) and rethrows; on success the framing
   * layer waits for `open()`, so the host can set the connection up first.
   */
  async handshake<T>(run: (channel: HandshakeChannel) => Promise<T>): Promise<T> {
    const channel = new HandshakeChannel((bytes) => {
      if (!this.#closing) this.#stream.write(bytes);
    });
    this.#handshake = channel;
    this.#startStream();
    try {
      const result = await run(channel);
      // Closed meanwhile (e.g. the node closing while a check was running): it must not go live.
      if (this.#closing) throw this.#closing;
      return result;
    } catch (err) {
      const reason = RpcError.is(err) ? err : new RpcError('HANDSHAKE_FAILED', String((err as Error)?.message ?? err), { cause: err });
      this.close(reason, false);
      throw reason;
    }
  }

  /** After a successful `handshake()`: starts framing, beginning with the bytes that followed the handshake. */
  open(): void {
    const channel = this.#handshake;
    if (channel === undefined) return;
    this.#handshake = undefined;
    const rest = channel.takeRest();
    if (rest.length > 0) this.#onData(rest);
  }

  /**
   * After a successful `handshake()`, instead of `open()`: another thread reads and writes the
   * stream's bytes from now on (shm's direct path). Returns the bytes that followed the handshake.
   * The connection stays in its handshake state, so it sends nothing more (no keepalive, no Close),
   * and it closes with its stream.
   */
  handOver(): Uint8Array {
    return this.#handshake?.takeRest() ?? new Uint8Array(0);
  }

  #startStream(): void {
    this.#stream.start({
      data: (chunk) => {
        if (this.#handshake) this.#handshake.push(chunk);
        else {
          this.#host.heard?.();
          // A served connection writes what a read's calls answered in the microtask after the
          // read (its handlers' promises settle before it), as a hand-written server writes in its
          // data callback: the peer gets the answers while this thread reads other sockets, and
          // the connection's state is still in cache. Answers that come later take the host's
          // end-of-turn flush.
          const served = this.#session !== undefined && !this.#flushAfterRead;
          if (served) this.#flushAfterRead = true;
          this.#onData(chunk);
          // (Not queueMicrotask: Node wraps each callback in an AsyncResource, several times the cost.)
          if (served) void kResolved.then(this.#flushRead);
        }
      },
      drain: () => {
        if (this.#writable) return;
        this.#writable = true;
        if (this.#host.readsWaitForWrites) this.#resumeReading();
        this.#settleDrained();
        this.#host.writableChanged?.(this, true);
      },
      close: (error) => this.#onClose(error),
    });
  }

  /** Queues one envelope body for the peer. `owned`: the caller will not reuse `body`. */
  send(body: Uint8Array, owned: boolean): void {
    if (this.#closing) return;
    this.framesOut++;
    this.#writer.push(body, owned);
    if (!this.#flushAfterRead) this.#host.markDirty(this);
  }

  /** Queues one envelope body given as header + payload (both copied). */
  send2(head: Uint8Array, payload: Uint8Array): void {
    if (this.#closing) return;
    this.framesOut++;
    this.#writer.push2(head, payload);
    if (!this.#flushAfterRead) this.#host.markDirty(this);
  }

  readonly #flushRead = (): void => {
    this.#flushAfterRead = false;
    this.#writer.flush();
  };

  /** Writes queued frames in one chunk. */
  flush(): void {
    this.#writer.flush();
  }

  /** False while the stream's write buffer is over its limit: upstream should hold back. */
  get writable(): boolean {
    return this.#writable;
  }

  /** Resolves when the stream is under its write limit again, or the connection has closed. */
  whenWritable(): Promise<void> {
    if (this.#writable || this.#closing) return Promise.resolve();
    this.#drained ??= deferred();
    return this.#drained.promise;
  }

  #settleDrained(): void {
    const drained = this.#drained;
    this.#drained = undefined;
    drained?.resolve();
  }

  /**
   * A closing server: this connection's session (if it serves here) stops taking calls, and the
   * connection closes with `reason` once the calls it serves have been answered.
   */
  drain(reason: RpcError): void {
    this.#session?.drain(() => this.close(reason, true));
  }

  /** Marks the connection failed with `reason` without touching its stream (one that could not even start). */
  fail(reason: RpcError): void {
    this.#closing ??= reason;
    this.#session?.close(reason);
  }

  /** Closes with `reason`: tells the peer why (when `tellPeer`), ends the stream, settles everything. */
  close(reason: RpcError, tellPeer: boolean): void {
    if (this.#closing) return;
    // A Close envelope means nothing to a peer still in the handshake: it learns why from the Ack.
    if (tellPeer && this.#handshake === undefined) {
      try {
        this.#writer.push(encodeClose(this.#host.codec.encodeError(toWireError(reason, { stacks: this.#host.sendStacks }))), true);
      } catch {
        // an unencodable reason is not worth failing the close over
      }
    }
    this.#writer.flush();
    this.#closing = reason;
    this.#settleDrained();
    this.#handshake?.fail(reason);
    this.#stream.end();
    // A peer that never closes its side must not keep us open. Cleared when the stream closes:
    // meanwhile the timer holds this connection, its task and the task's rings.
    this.#destroyTimer = setTimeout(() => this.#stream.destroy(), 2000).unref();
  }

  /**
   * Keepalive tick (the task calls it every `intervalMs / 2`): ping a connection that has been
   * silent for an interval; close it if a further interval passes with no word at all.
   */
  keepAlive(now: number, intervalMs: number): void {
    if (this.#closing || this.#handshake !== undefined) return;
    const silentFor = now - this.#lastHeard;
    if (this.#pingSentAt !== 0) {
      if (now - this.#pingSentAt >= intervalMs && silentFor >= intervalMs) {
        this.close(new RpcError('CLOSED', `the peer did not answer a keepalive ping within ${intervalMs} ms`), false);
        this.#stream.destroy();
      }
      return;
    }
    if (silentFor >= intervalMs) {
      this.#pingSentAt = now;
      this.send(encodePing(Kind.Ping, ++this.#pingToken), true);
    }
  }

  #onData(chunk: Uint8Array): void {
    this.#lastHeard = performance.now();
    this.#pingSentAt = 0;
    try {
      this.#decoder.push(chunk, (body) => this.#onFrame(body));
    } catch (err) {
      const reason = RpcError.is(err) ? err : new RpcError('PROTOCOL', (err as Error).message, { cause: err });
      this.close(reason, true);
      this.#stream.pause();
    }
  }

  #onFrame(body: Uint8Array): void {
    if (this.#closing) return;
    if (this.framesIn++ === 0 && this.#host.expectsNoHello) {
      const scheme = helloScheme(body);
      if (scheme !== undefined) {
        this.close(new RpcError('HANDSHAKE_FAILED', `the server runs a ${scheme} handshake, but this client has none: configure the same scheme on both ends`), false);
        return;
      }
    }
    const kind = checkEnvelope(body);
    if (kind === Kind.Ping) {
      // Answered here, so keepalive never waits on a busy main thread.
      this.send(encodePong(body), true);
      return;
    }
    if (kind === Kind.Pong) return; // its arrival already counted as a sign of life

    if (this.#session) {
      this.#session.receive(body);
      return;
    }
    const relay = this.#host.relay;
    if (relay && !relay(this.id, body)) {
      // The ring to the main thread is full: stop reading this socket until it drains (backpressure).
      this.#pauseReading();
      this.#host.relayFlushed!().then(() => this.#resumeReading());
    }
  }

  #pauseReading(): void {
    if (this.#readPaused++ === 0) this.#stream.pause();
  }

  #resumeReading(): void {
    if (--this.#readPaused === 0 && !this.#closing) this.#stream.resume();
  }

  #onClose(error: Error | undefined): void {
    clearTimeout(this.#destroyTimer);
    let reason = this.#closing;
    if (reason === undefined) {
      try {
        // A reset or a close inside a frame is still the peer going away, not malformed input.
        this.#decoder.end(error);
        reason = error
          ? new RpcError('CLOSED', `connection lost: ${error.message}`, { cause: error })
          : new RpcError('CLOSED', this.framesIn === 0 && !this.#host.readsWaitForWrites && this.peer.transport === 'tcp'
              ? // What a TLS server does to a client that speaks plain bytes to it: close, silently.
                'the peer closed the connection before sending anything (if it serves TLS, connect with tcp(address, { tls }))'
              : 'the peer closed the connection');
      } catch (truncated) {
        reason = truncated as RpcError;
      }
    }
    this.#closing = reason;
    this.#settleDrained();
    this.#handshake?.fail(new RpcError('HANDSHAKE_FAILED', `the connection closed during the handshake${error ? `: ${error.message}` : ''}`, { cause: error }));
    this.#session?.close(reason);
    this.#host.closed(this, reason);
  }
}
