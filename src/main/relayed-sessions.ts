/**
 * The main thread's sessions of one task's connections: one per connection relayed to this
 * thread (a RingSession, ../bridge/ring-session.ts), which writes into the task's ring pair (or,
 * on shm's direct path, into that connection's own cross-process rings through a DirectLink) and
 * is fed the records read for it.
 */
import { closeDoorbells } from '../shm/doorbells.js';
import { RpcError } from '../errors.js';
import type { Codec } from '../codec/index.js';
import type { ShmHandOver } from '../bridge/control.js';
import type { MainHub } from '../bridge/main-hub.js';
import { RingSession } from '../bridge/ring-session.js';
import type { Session } from '../session/session.js';
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
  readonly #sessions = new Map<number, RingSession>();
  /** A connect task's session, made before its connection's ring id is known. */
  #client: RingSession | undefined;
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
    return this.#client.session;
  }

  /** The connect task's session has ring id `connId`; false if it had one already (or there is none). */
  bindClient(connId: number): boolean {
    const client = this.#client;
    if (client === undefined || client.session.peer.connectionId !== 0) return false;
    client.session.peer.connectionId = connId;
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

  #open(connId: number, peer: PeerInfo | undefined): RingSession {
    const options = this.#options;
    const link = options.direct === undefined ? undefined : new DirectLink({ ...options.direct, onFail: (reason, tellPeer) => this.#linkFailed(conn, reason, tellPeer) });
    const conn: RingSession = new RingSession({
      session: {
        codec: options.codec,
        peer: peer ?? { transport: 'unknown', auth: 'none', connectionId: connId },
        handler: options.handler,
        maxFrameBytes: options.maxFrameBytes,
        maxConcurrentCalls: options.maxConcurrentCalls,
        sendStacks: options.sendStacks,
      },
      end: 'main',
      ring: () => options.hub()?.toWorker,
      ...(link !== undefined ? { send: (head: Uint8Array, payload: Uint8Array) => link.send(head, payload) } : {}),
      onEnded: (reason) => this.#ended(conn, reason),
    });
    if (link !== undefined) {
      link.bind(conn.session);
      this.#links.set(conn.session, link);
    }
    if (connId !== 0) this.#sessions.set(connId, conn);
    if (this.#draining) this.#drainSession(connId, conn);
    return conn;
  }

  /** A direct connection's rings have come: its session reads and writes them from now on. */
  attach(session: Session, rings: ShmHandOver): void {
    const link = session.closedWith === undefined ? this.#links.get(session) : undefined;
    if (link !== undefined) link.attach(rings);
    // Closed before its rings came: nobody reads them, and their doorbells are ours to close.
    else if (rings.doorbells !== undefined) closeDoorbells(rings.doorbells);
  }

  /** A listener's direct connection was announced: fetch its rings from the worker. */
  #fetchRings(connId: number, conn: RingSession): void {
    this.#options.takeShm(connId).then(
      (rings) => {
        // Closed meanwhile: its ConnClosed came first, and nobody reads these rings now.
        if (rings === undefined) return;
        if (this.#sessions.get(connId) === conn) this.attach(conn.session, rings);
        else if (rings.doorbells !== undefined) closeDoorbells(rings.doorbells);
      },
      () => {},
    );
  }

  /** A direct link failed, or its peer closed its ring: the session closes now, the connection once our last bytes are in the ring. */
  #linkFailed(conn: RingSession, reason: RpcError, tellPeer: boolean): void {
    conn.session.close(reason);
    const link = this.#links.get(conn.session);
    if (link === undefined) return;
    void link.end(reason, tellPeer).then(() => {
      if (this.#sessions.get(conn.session.peer.connectionId) === conn) conn.closeOtherEnd(reason);
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
    if (existing) Object.assign(existing.session.peer, peer);
    else if (this.#client !== undefined && this.#client.session.peer.connectionId === 0) {
      Object.assign(this.#client.session.peer, peer);
      this.#sessions.set(connId, this.#client);
    } else {
      const conn = this.#open(connId, peer);
      if (this.#options.direct !== undefined) this.#fetchRings(connId, conn);
    }
    log('open #%d %s %s', connId, peer.transport, peer.address ?? '');
    if (connectionOpen.hasSubscribers) connectionOpen.publish({ peer });
  }

  /** A record read for connection `connId`: a control record, or an envelope body for its session. */
  record(connId: number, bytes: Uint8Array): void {
    this.#sessions.get(connId)?.record(bytes);
  }

  /** The worker closed connection `conn` (its ConnClosed record). */
  #ended(conn: RingSession, reason: RpcError): void {
    const { peer } = conn.session;
    this.#dropLink(conn.session);
    this.#sessions.delete(peer.connectionId);
    conn.close(reason);
    log('closed #%d %s: %s %s', peer.connectionId, peer.transport, reason.code, reason.message);
    if (connectionClose.hasSubscribers) connectionClose.publish({ peer, error: reason });
  }

  /** Whether drain() was called. */
  get draining(): boolean {
    return this.#draining;
  }

  /** A listener's graceful close: every session stops taking calls and closes its connection once it has answered the rest (see Session#drain). */
  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    for (const [connId, conn] of this.#sessions) this.#drainSession(connId, conn);
  }

  #drainSession(connId: number, conn: RingSession): void {
    conn.session.drain(() => {
      if (!this.#sessions.has(connId)) return;
      const reason = new RpcError('CLOSED', 'the server closed');
      const link = this.#links.get(conn.session);
      if (link === undefined) {
        conn.closeOtherEnd(reason);
        return;
      }
      // The Close and the ring's close record go behind its last answers, then the worker closes the control socket.
      void link.end(reason, true).then(() => {
        if (this.#sessions.get(connId) === conn) conn.closeOtherEnd(reason);
      });
    });
  }

  /** The task has ended: every session closes with `reason`, every link goes, every paused send is let go. */
  closeAll(reason: RpcError): void {
    for (const conn of this.#sessions.values()) {
      this.#dropLink(conn.session);
      conn.close(reason);
    }
    if (this.#client !== undefined) this.#dropLink(this.#client.session);
    this.#sessions.clear();
  }
}
