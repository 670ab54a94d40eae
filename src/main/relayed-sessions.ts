/**
 * The main thread's sessions of one task's connections: one per connection relayed to this
 * thread, which writes into the task's ring pair (or, on shm's direct path, into that
 * connection's own cross-process rings through a DirectLink) and is fed the records read for it.
 */
import { closeDoorbells } from '../shm/doorbells.js';
import { deferred, type Deferred } from '../deferred.js';
import { RpcError, fromWireError, messageOf, toWireError, type WireError } from '../errors.js';
import type { Codec } from '../codec/index.js';
import { kindOf } from '../protocol/envelope.js';
import { ControlKind, decodeControl, encodeControl, type ShmHandOver } from '../bridge/control.js';
import type { MainHub } from '../bridge/main-hub.js';
import { Session } from '../session/session.js';
import type { Handler, PeerInfo } from '../types.js';
import { connectionClose, connectionOpen, logger } from '../observe.js';
import { DirectLink, type DirectLinkOptions } from './shm-direct.js';

const log = logger('connection');

export interface RelayedSessionsOptions {
  codec: Codec;
  /** The main-thread handler of the task's connections, if it has one here. */
  handler: Handler | undefined;
  maxFrameBytes: number;
  maxConcurrentCalls: number;
  sendStacks: boolean;
  /** shm's direct path: what each connection's DirectLink is made with; undefined for every other task. */
  direct: Omit<DirectLinkOptions, 'onFail'> | undefined;
  /** The ring pair the task's connections ride, once known. */
  hub(): MainHub | undefined;
  /** A listener's direct connection's rings, taken from its worker once (undefined when it has closed). */
  takeShm(connId: number): Promise<ShmHandOver | undefined>;
}

export class RelayedSessions {
  readonly #options: RelayedSessionsOptions;
  readonly #sessions = new Map<number, Session>();
  /** Connections whose stream is over its write limit (ControlKind.ConnPaused): their sends wait on it. */
  readonly #paused = new Map<number, Deferred>();
  /** A connect task's session, made before its connection's ring id is known. */
  #client: Session | undefined;
  /** Set by drain(): sessions stop taking calls and close their connection once they have answered the rest. */
  #draining = false;
  /** The direct links of these sessions, and the frames of those that have closed. */
  readonly #links = new Map<Session, DirectLink>();
  #linkFramesIn = 0;
  #linkFramesOut = 0;

  constructor(options: RelayedSessionsOptions) {
    this.#options = options;
  }

  /** A connect task's session, made now; its ring id comes with ConnOpen or ready() (bindClient), whichever this thread hears first. */
  openClient(): Session {
    this.#client = this.#open(0, undefined);
    return this.#client;
  }

  /** The connect task's session has ring id `connId`; false if it had one already (or there is none). */
  bindClient(connId: number): boolean {
    const client = this.#client;
    if (client === undefined || client.peer.connectionId !== 0) return false;
    client.peer.connectionId = connId;
    this.#sessions.set(connId, client);
    return true;
  }

  /** The frames of the direct links, open and closed: a direct connection's frames pass this thread only. */
  get linkFrames(): { framesIn: number; framesOut: number } {
    let framesIn = this.#linkFramesIn;
    let framesOut = this.#linkFramesOut;
    for (const link of this.#links.values()) {
      framesIn += link.framesIn;
      framesOut += link.framesOut;
    }
    return { framesIn, framesOut };
  }

  /** Ends every direct link, telling each peer `reason`; undefined when there is none. */
  endLinks(reason: RpcError): Promise<unknown> | undefined {
    if (this.#links.size === 0) return undefined;
    return Promise.all([...this.#links.values()].map((link) => link.end(reason, true)));
  }

  #open(connId: number, peer: PeerInfo | undefined): Session {
    const options = this.#options;
    const info = peer ?? { transport: 'unknown', auth: 'none', connectionId: connId };
    const link = options.direct === undefined ? undefined : new DirectLink({ ...options.direct, onFail: (reason, tellPeer) => this.#linkFailed(session, reason, tellPeer) });
    const session = new Session({
      codec: options.codec,
      peer: info,
      handler: options.handler,
      send: link !== undefined ? (head, payload) => link.send(head, payload) : (head, payload) => {
        // The id as it is now: a client's is learnt after its session was made.
        const id = info.connectionId;
        const ring = options.hub()?.toWorker;
        if (ring === undefined) throw new RpcError('CLOSED', 'the connection is not open');
        if (!ring.write2(id, head, payload)) return ring.flushed();
        // Gone out, but its peer reads slower than we write: who waits for room (a stream's next
        // item, notify) waits until that connection drains. A plain answer never waits.
        return this.#paused.get(id)?.promise;
      },
      maxFrameBytes: options.maxFrameBytes,
      maxConcurrentCalls: options.maxConcurrentCalls,
      sendStacks: options.sendStacks,
    });
    if (link !== undefined) {
      link.bind(session);
      this.#links.set(session, link);
    }
    if (connId !== 0) this.#sessions.set(connId, session);
    if (this.#draining) this.#drainSession(connId, session);
    return session;
  }

  /** A direct connection's rings have come: its session reads and writes them from now on. */
  attach(session: Session, rings: ShmHandOver): void {
    const link = session.closedWith === undefined ? this.#links.get(session) : undefined;
    if (link !== undefined) link.attach(rings);
    // Closed before its rings came: nobody reads them, and their doorbells are ours to close.
    else if (rings.doorbells !== undefined) closeDoorbells(rings.doorbells);
  }

  /** A listener's direct connection was announced: fetch its rings from the worker. */
  #fetchRings(connId: number, session: Session): void {
    this.#options.takeShm(connId).then(
      (rings) => {
        // Closed meanwhile: its ConnClosed came first, and nobody reads these rings now.
        if (rings === undefined) return;
        if (this.#sessions.get(connId) === session) this.attach(session, rings);
        else if (rings.doorbells !== undefined) closeDoorbells(rings.doorbells);
      },
      () => {},
    );
  }

  /** A direct link failed, or its peer closed its ring: the session closes now, the connection once our last bytes are in the ring. */
  #linkFailed(session: Session, reason: RpcError, tellPeer: boolean): void {
    session.close(reason);
    const link = this.#links.get(session);
    if (link === undefined) return;
    void link.end(reason, tellPeer).then(() => {
      const connId = session.peer.connectionId;
      if (this.#sessions.get(connId) === session) this.#closeInWorker(connId, reason);
    });
  }

  /** A direct connection has closed: its link delivers what its ring still holds, then lets the rings go. */
  #dropLink(session: Session): void {
    const link = this.#links.get(session);
    if (link === undefined) return;
    link.teardown();
    this.#links.delete(session);
    this.#linkFramesIn += link.framesIn;
    this.#linkFramesOut += link.framesOut;
  }

  /** Connection `connId` opened (its ConnOpen record): the client's session learns its peer, a listener's connection gets one. */
  opened(connId: number, peer: PeerInfo): void {
    const existing = this.#sessions.get(connId);
    if (existing) Object.assign(existing.peer, peer);
    else if (this.#client !== undefined && this.#client.peer.connectionId === 0) {
      Object.assign(this.#client.peer, peer);
      this.#sessions.set(connId, this.#client);
    } else {
      const session = this.#open(connId, peer);
      if (this.#options.direct !== undefined) this.#fetchRings(connId, session);
    }
    log('open #%d %s %s', connId, peer.transport, peer.address ?? '');
    if (connectionOpen.hasSubscribers) connectionOpen.publish({ peer });
  }

  /** A record read for connection `connId`: a control record, or an envelope body for its session. */
  record(connId: number, bytes: Uint8Array): void {
    const kind = kindOf(bytes);
    const session = this.#sessions.get(connId);
    if (session === undefined) return;
    if (kind === ControlKind.ConnPaused) {
      if (!this.#paused.has(connId)) this.#paused.set(connId, deferred());
      return;
    }
    if (kind === ControlKind.ConnResumed) {
      this.#resume(connId);
      return;
    }
    if (kind === ControlKind.ConnClosed) {
      this.#dropLink(session);
      this.#sessions.delete(connId);
      this.#resume(connId);
      const reason = fromWireError(decodeControl(bytes) as WireError);
      session.close(reason);
      log('closed #%d %s: %s %s', connId, session.peer.transport, reason.code, reason.message);
      if (connectionClose.hasSubscribers) connectionClose.publish({ peer: session.peer, error: reason });
      return;
    }
    try {
      session.receive(bytes);
    } catch (err) {
      // A failure of this thread's side of the connection (a bug, never the peer's bytes, which
      // the worker checked): close it on both sides, or the peer's calls would wait forever.
      const reason = RpcError.is(err) ? err : new RpcError('CLOSED', `the connection was closed: the session on one of its ends failed: ${messageOf(err)}`, { cause: err });
      session.close(reason);
      this.#closeInWorker(connId, reason);
    }
  }

  /** Whether drain() was called. */
  get draining(): boolean {
    return this.#draining;
  }

  /** A listener's graceful close: every session stops taking calls and closes its connection once it has answered the rest (see Session#drain). */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    for (const [connId, session] of this.#sessions) this.#drainSession(connId, session);
  }

  #drainSession(connId: number, session: Session): void {
    session.drain(() => {
      if (!this.#sessions.has(connId)) return;
      const reason = new RpcError('CLOSED', 'the server closed');
      const link = this.#links.get(session);
      if (link === undefined) {
        this.#closeInWorker(connId, reason);
        return;
      }
      // The Close and the ring's close record go behind its last answers, then the worker closes the control socket.
      void link.end(reason, true).then(() => {
        if (this.#sessions.get(connId) === session) this.#closeInWorker(connId, reason);
      });
    });
  }

  /**
   * Has the worker close a connection and tell its peer `reason` (ControlKind.CloseConn): the
   * record rides the ring behind what this thread wrote for it before, so its last answers leave
   * first.
   */
  #closeInWorker(connId: number, reason: RpcError): void {
    try {
      this.#options.hub()?.toWorker.write(connId, encodeControl(ControlKind.CloseConn, toWireError(reason)));
    } catch {
      // the ring is closed: the task is ending, and the connection with it
    }
  }

  #resume(connId: number): void {
    const paused = this.#paused.get(connId);
    if (paused === undefined) return;
    this.#paused.delete(connId);
    paused.resolve();
  }

  /** The task has ended: every session closes with `reason`, every link goes, every paused send is let go. */
  closeAll(reason: RpcError): void {
    for (const session of this.#sessions.values()) {
      this.#dropLink(session);
      session.close(reason);
    }
    if (this.#client !== undefined) this.#dropLink(this.#client);
    this.#sessions.clear();
    for (const connId of [...this.#paused.keys()]) this.#resume(connId);
  }
}
