/**
 * The control plane between the main thread and a connection worker: the task a worker runs for one
 * listener or connection, and the object it exposes back over comlink. Data never travels here; it
 * rides the ring pair the task's pool thread shares with the main thread (see src/shm/ring.ts), as
 * envelope bodies tagged with a connection id unique within that pair.
 */
import type { CodecDescriptor, DecodeLimits } from '../codec/index.js';
import type { RemoteStacks, WireError } from '../errors.js';
import type { HandshakeSpec } from '../handshake/spec.js';
import type { IdleWindows } from '../idle.js';
import type { Address, TransportDescriptor } from '../transport/descriptors.js';
import type { MessagePort } from 'node:worker_threads';
import type { PeerInfo } from '../types.js';
import type { ShmDoorbells } from '../shm/doorbells.js';
import { kKindBytes } from '../protocol/envelope.js';

/** Where a connection's requests and events are served. */
export type HandlerSpec =
  | { kind: 'none' } // no handler: incoming requests are answered with UNIMPLEMENTED
  | { kind: 'main' } // relayed to the main thread through the task's rings
  | { kind: 'module'; url: string }; // the module's export `handler`, run inside the worker

/**
 * How one listener or connection is configured: built once by the node from its options and
 * carried whole to the worker that runs the task (inside TaskSpec).
 */
export interface TaskConfig {
  role: 'listen' | 'connect';
  transport: TransportDescriptor;
  codec: CodecDescriptor;
  /** The handshake every connection of this task runs before its first frame (listeners: as server; connect: as client). */
  handshake: HandshakeSpec;
  /** Time limit of a transport's own handshake (TLS), ms; the node's `handshakeTimeoutMs`. */
  handshakeTimeoutMs: number;
  maxFrameBytes: number;
  /** What decoding one payload may build (NodeOptions.decodeLimits). */
  decodeLimits: DecodeLimits;
  /** NodeOptions.remoteStacks: whether errors sent to this task's peers carry stacks (see sendsStacks). */
  remoteStacks: RemoteStacks;
  /**
   * Listener only: the most clients it serves at once (default Infinity: no limit); one more is
   * refused with BUSY. 'one-to-one' is one client, refused as a one-to-one server's second.
   */
  maxConnections?: number | 'one-to-one';
  /** Listener only: the most calls one connection may have served at once (default Infinity: no limit). */
  maxConcurrentCalls?: number;
  /**
   * Listener only, one of several tasks serving one address (serve(..., { threads })): the
   * listening socket the main thread holds, of which this task adopts a duplicate; the count of
   * connections all of them serve (word 0), which maxConnections bounds, and each one's own
   * (word 1 + member), which a task started in a dead one's place takes back from the total.
   */
  shared?: { listenFd: number; connections: Int32Array; member: number };
  /** NodeOptions.idle and idleTuning, resolved for this task's transport (clientPollMicros applies to connect tasks only). */
  idle: IdleWindows;
  /** Ping a connection silent for this long and close it if the next interval passes without a word (0: off). */
  keepAliveMs: number;
  /** Connect only: give up with UNAVAILABLE when the transport has not connected within this long (0: wait as long as the OS does). */
  connectTimeoutMs: number;
}

/** The number of clients TaskConfig.maxConnections allows at once. */
export function connectionLimit(config: TaskConfig): number {
  const max = config.maxConnections ?? Infinity;
  return max === 'one-to-one' ? 1 : max;
}

/** What a worker is given to run one task: its configuration, and how it reaches the main thread. */
export interface TaskSpec extends TaskConfig {
  handler: HandlerSpec;
  /**
   * The task's number, unique in the main thread's process: the ConnOpen record of each of its
   * connections carries it, so the main thread knows whose connection a new ring id is.
   */
  key: number;
  /** The ring pair offered for this task's thread (see HubOffer). */
  hub: HubOffer;
  /**
   * Two shared words, stored by the task's first act, before it loads anything: its worker's
   * threadId (word kThreadWord), so the main thread can terminate that thread if the task never
   * answers; and the id of the ring pair it joined (word kHubWord, notified), whose control
   * channel is then the task's.
   */
  thread: Int32Array;
  /** shm with a main-thread caller or handler: each connection's rings go to the main thread once it is set up (ShmHandOver). */
  shmDirect?: boolean;
}

/**
 * A ring pair between the main thread and whichever pool thread runs the task. The worker adopts
 * it only when its thread has no ring pair with that main thread yet; otherwise the task joins the
 * thread's existing one and this offer is dropped. Either way the task stores the id it joined.
 */
export interface HubOffer {
  /** The ring pair's id, unique in the main thread's process. */
  id: number;
  /** The main thread that offers it (its threadId): a pool thread keeps one ring pair per owner. */
  owner: number;
  /** Main → worker ring and worker → main ring. */
  toWorker: SharedArrayBuffer;
  toMain: SharedArrayBuffer;
  /**
   * The pair's control channel: the worker exposes ThreadControl on it for every task that rides
   * the pair, so a thread pair has one MessagePort however many connections it carries. Moved to
   * the worker with the spec; the worker closes it when it joins another pair instead.
   */
  control: MessagePort;
}

/** Words of TaskSpec.thread. */
export const kThreadWord = 0;
export const kHubWord = 1;

/** What a ConnOpen record says: whose connection it is (TaskSpec.key), and its peer. */
export interface ConnOpenRecord {
  key: number;
  peer: PeerInfo;
}

/**
 * An shm connection's rings, handed by its worker to the main thread, which reads and writes them
 * from then on (TaskSpec.shmDirect); the worker keeps its control socket. `rest`: bytes from the
 * peer that the worker read past the handshake, the start of what the main thread reads.
 */
export interface ShmHandOver {
  toPeer: SharedArrayBuffer;
  fromPeer: SharedArrayBuffer;
  rest: Uint8Array;
  /** The eventfd doorbells both ends agreed on (fds of this process): whoever ends up holding the rings closes them. */
  doorbells?: ShmDoorbells;
}

/**
 * `shm`: a connect task's rings on shm's direct path. `ended`: the task had ended (and left its
 * pair) before it was asked; why it ended reaches the main thread by its ring and its runner.
 */
export type ReadyResult = { ok: true; address?: Address; connectionId?: number; shm?: ShmHandOver } | { ok: false; error: WireError; ended?: true };

/** What a task has carried since it started (see RunningNode.stats()). */
export interface TaskStats {
  /** Connections open now. */
  connections: number;
  /** Connections that went live (past their handshake, not refused), open or closed since. */
  accepted: number;
  /** Frames received and sent on them all, closed ones included. */
  framesIn: number;
  framesOut: number;
}

/** What a connection task exposes to the main thread. */
export interface TaskControl {
  /** Resolves once listening or connected (or with why not). */
  ready(): Promise<ReadyResult>;
  /** Closes the listener and every connection of this task; resolves when all are closed. */
  close(): Promise<void>;
  /**
   * A listener's graceful close: stops accepting, refuses the handshakes in progress, and lets
   * each connection served in this worker finish the calls it serves and then close (relayed
   * connections are closed by the main thread the same way, with CloseConn). Resolves once every
   * connection of the task has closed. close() still ends it all at any time.
   */
  drain(): Promise<void>;
  stats(): TaskStats;
  /** A listener's connection on shm's direct path (announced by ConnOpen): its rings, once; undefined when it has closed. */
  takeShm(connectionId: number): ShmHandOver | undefined;
}

/**
 * What a worker thread exposes on a ring pair's control channel (HubOffer.control): the
 * TaskControl of each task riding the pair, by TaskSpec.key. A key whose task has ended (or never
 * joined) answers at once: ready() with CLOSED, close() and drain() resolved, stats() and
 * takeShm() undefined, so no call waits on a task that is gone.
 */
export interface ThreadControl {
  ready(key: number): Promise<ReadyResult>;
  close(key: number): Promise<void>;
  drain(key: number): Promise<void>;
  stats(key: number): TaskStats | undefined;
  takeShm(key: number, connectionId: number): ShmHandOver | undefined;
}

/** Connection id of an isolate plugin's single connection (its ring pair is its own). */
export const kClientConnectionId = 1;

/**
 * Kinds of the control records between a connection worker and the main thread. They never travel
 * on the wire, but they share the rings with envelope bodies, tagged with the same connection ids:
 * a record's first byte (kindOf) is all that tells one from the other, so these stay at 0x80 and
 * up, where no wire Kind is (and checkEnvelope refuses them from a peer).
 */
export const ControlKind = {
  /** Worker → main: a connection opened; payload = JSON ConnOpenRecord. */
  ConnOpen: 0x80,
  /** Worker → main: a connection closed; payload = JSON WireError. */
  ConnClosed: 0x81,
  /**
   * Worker → main: a connection's stream is over its write limit (its peer reads slower than we
   * answer); what waits for room on it (a stream's next item, notify) holds back until
   * ConnResumed. No payload. Other connections of the task carry on.
   */
  ConnPaused: 0x82,
  /** Worker → main: the connection's stream drained below its limit. No payload. */
  ConnResumed: 0x83,
  /**
   * Main → worker: close this connection, telling the peer why; payload = JSON WireError. The one
   * way the main thread closes a single connection (drained, or its side failed): it rides the
   * ring behind the connection's last answers, so they go out first.
   */
  CloseConn: 0x84,
} as const;
export type ControlKind = (typeof ControlKind)[keyof typeof ControlKind];

const kControlEncoder = new TextEncoder();
const kControlDecoder = new TextDecoder();

/** A control record for a task's ring: the kind byte, then `value` as JSON. */
export function encodeControl(kind: ControlKind, value: unknown): Uint8Array {
  const text = kControlEncoder.encode(JSON.stringify(value));
  const body = new Uint8Array(kKindBytes + text.length);
  body[0] = kind;
  body.set(text, kKindBytes);
  return body;
}

/** The JSON value of a control record made by encodeControl (a view into the ring is fine). */
export function decodeControl(body: Uint8Array): unknown {
  // A copy: TextDecoder refuses views of shared memory.
  return JSON.parse(kControlDecoder.decode(body.slice(kKindBytes)));
}
