/**
 * A call session over a ring pair shared with another thread of this process: its envelope bodies
 * are records tagged with its connection id, and the same rings carry the control records that
 * pause, resume and close it (ControlKind). The main thread runs one per connection relayed to it
 * (src/main/relayed-sessions.ts); an isolate plugin's thread runs one for its single connection
 * (src/worker/isolate.ts). Who reads the rings, and what else a connection has (shm's direct link,
 * a thread to end), stays with them.
 */
import { deferred, type Deferred } from '../deferred.js';
import { RpcError, fromWireError, messageOf, toWireError, type WireError } from '../errors.js';
import { kindOf } from '../protocol/envelope.js';
import { Session, type SendBody, type SessionOptions } from '../session/session.js';
import type { RingWriter } from '../shm/ring.js';
import { ControlKind, decodeControl, encodeControl } from './control.js';

/**
 * Which end of the pair a session is on. The main thread's hears its connection worker's
 * ConnPaused, ConnResumed and ConnClosed, and closes a connection with CloseConn; a worker's end
 * hears CloseConn and closes with ConnClosed.
 */
export type RingEnd = 'main' | 'worker';

/** The control kind that tells each end its connection has closed at the other end, and the one it closes it with. */
const kCloseKinds = {
  main: { ended: ControlKind.ConnClosed, close: ControlKind.CloseConn },
  worker: { ended: ControlKind.CloseConn, close: ControlKind.ConnClosed },
} as const;

export interface RingSessionOptions {
  /** The session's own options; its `send` is this class's. */
  session: Omit<SessionOptions, 'send'>;
  end: RingEnd;
  /** The ring this end writes, undefined while there is none; it may throw RpcError CLOSED once closed. */
  ring(): RingWriter | undefined;
  /** Carries the session's bodies instead of the ring (shm's direct path); control records still ride the ring. */
  send?: SendBody;
  /**
   * The connection closed at the other end: its close record came, saying why (`reason`). The
   * owner lets go of it and calls close().
   */
  onEnded(reason: RpcError): void;
  /** The session failed on a record (it is closed and the other end told): for an owner with more to end. */
  onFailed?(reason: RpcError): void;
  /** Told of each envelope body written to the ring ('out') or taken from it ('in'): an isolate counts them for its stats. */
  onBody?(direction: 'in' | 'out'): void;
}

export class RingSession {
  /** The call session; its `peer.connectionId` is the tag of its records, read at each write (a client learns its id late). */
  readonly session: Session;
  readonly #ring: () => RingWriter | undefined;
  readonly #kinds: (typeof kCloseKinds)[RingEnd];
  readonly #onEnded: (reason: RpcError) => void;
  readonly #onFailed: ((reason: RpcError) => void) | undefined;
  readonly #onBody: ((direction: 'in' | 'out') => void) | undefined;
  /** Set while the other end's stream is over its write limit (ConnPaused): sends wait on it. */
  #paused: Deferred | undefined;

  constructor(options: RingSessionOptions) {
    this.#ring = options.ring;
    this.#kinds = kCloseKinds[options.end];
    this.#onEnded = options.onEnded;
    this.#onFailed = options.onFailed;
    this.#onBody = options.onBody;
    this.session = new Session({ ...options.session, send: options.send ?? this.#sendToRing });
  }

  /** The session's `send` (unless options.send): one body to the ring, tagged. Throws RpcError CLOSED when there is no ring. */
  readonly #sendToRing: SendBody = (head, payload) => {
    const ring = this.#ring();
    if (ring === undefined) throw new RpcError('CLOSED', 'the connection is not open');
    this.#onBody?.('out');
    if (!ring.write2(this.session.peer.connectionId, head, payload)) return ring.flushed();
    // Gone out, but its peer reads slower than we write: who waits for room (a stream's next
    // item, notify) waits until that connection drains. A plain answer never waits.
    return this.#paused?.promise;
  };

  /** A record read for this connection: a control record, or an envelope body for the session. */
  record(bytes: Uint8Array): void {
    const kind = kindOf(bytes);
    if (kind === this.#kinds.ended) {
      this.#onEnded(fromWireError(decodeControl(bytes) as WireError));
      return;
    }
    if (kind === ControlKind.ConnPaused) {
      this.#paused ??= deferred();
      return;
    }
    if (kind === ControlKind.ConnResumed) {
      this.#resume();
      return;
    }
    this.#onBody?.('in');
    try {
      this.session.receive(bytes);
    } catch (err) {
      // A failure of this end of the connection (a bug: the bytes were made in this process, and a
      // peer's were checked where they crossed the wire): close it on both ends, or the other
      // end's calls would wait forever.
      const reason = RpcError.is(err) ? err : new RpcError('CLOSED', `the connection was closed: the session on one of its ends failed: ${messageOf(err)}`, { cause: err });
      this.session.close(reason);
      this.closeOtherEnd(reason);
      this.#onFailed?.(reason);
    }
  }

  /** This end is done with the connection: the session closes with `reason`, and sends waiting for room go on. */
  close(reason: RpcError): void {
    this.#resume();
    this.session.close(reason);
  }

  /**
   * Has the other end close the connection, telling its peer `reason` (CloseConn from the main
   * thread, ConnClosed from a worker): the record rides the ring behind what this end wrote for it
   * before, so its last answers leave first. Does not close the session.
   */
  closeOtherEnd(reason: RpcError): void {
    try {
      this.#ring()?.write(this.session.peer.connectionId, encodeControl(this.#kinds.close, toWireError(reason)));
    } catch {
      // the ring is closed: the other end is ending, and the connection with it
    }
  }

  #resume(): void {
    const paused = this.#paused;
    if (paused === undefined) return;
    this.#paused = undefined;
    paused.resolve();
  }
}
