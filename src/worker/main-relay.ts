/**
 * How a task's relayed connections reach the main thread (a connect task's, or a listener's whose
 * handler runs there): their open, close and pause records on the ring pair, and on shm's direct
 * path each connection's rings, handed over once its handshake is done.
 */
import { closeDoorbells } from '../shm/doorbells.js';
import { RpcError, toWireError } from '../errors.js';
import { ControlKind, encodeControl, type ConnOpenRecord, type ShmHandOver } from '../bridge/control.js';
import type { WorkerHub } from '../bridge/worker-hub.js';
import { formatAddress, type TransportDescriptor } from '../transport/descriptors.js';
import { handOverShm } from '../transport/shm.js';
import type { ByteStream } from '../transport/types.js';
import type { Connection } from './connection.js';

const kPausedBody = Uint8Array.of(ControlKind.ConnPaused);
const kResumedBody = Uint8Array.of(ControlKind.ConnResumed);

export interface MainRelayOptions {
  hub: WorkerHub;
  /** TaskSpec.key, which each ConnOpen carries. */
  key: number;
  transport: TransportDescriptor;
  /** shm's direct path (TaskSpec.shmDirect): each connection's rings go to the main thread once set up. */
  direct: boolean;
}

export class MainRelay {
  readonly #options: MainRelayOptions;
  /** A listener's direct connections announced by ConnOpen whose rings the main thread has not taken yet. */
  readonly #handOvers = new Map<number, ShmHandOver>();

  constructor(options: MainRelayOptions) {
    this.#options = options;
  }

  /** Whether this task's connections take shm's direct path. */
  get direct(): boolean {
    return this.#options.direct;
  }

  /** A connection went live: the main thread opens its session (ConnOpen). */
  opened(conn: Connection): void {
    const open: ConnOpenRecord = { key: this.#options.key, peer: conn.peer };
    this.#write(conn.id, encodeControl(ControlKind.ConnOpen, open));
  }

  /** A live connection closed: its session on the main thread closes with `reason` (ConnClosed); its rings, if never taken, go. */
  closed(conn: Connection, reason: RpcError): void {
    const untaken = this.#handOvers.get(conn.id);
    this.#handOvers.delete(conn.id);
    // Nobody will hold these rings now: their doorbells are ours to close.
    if (untaken?.doorbells !== undefined) closeDoorbells(untaken.doorbells);
    this.#write(conn.id, encodeControl(ControlKind.ConnClosed, toWireError(reason)));
  }

  /**
   * A connection's stream went over its write limit or drained: the main thread holds back that
   * connection's waiting sends (see ControlKind.ConnPaused). The ring from the main thread keeps
   * flowing: it carries every other connection of this thread too, and holding it for one peer
   * that stopped reading stalled the answers to all of them.
   */
  writableChanged(conn: Connection, writable: boolean): void {
    this.#write(conn.id, writable ? kResumedBody : kPausedBody);
  }

  /**
   * shm's direct path: once its handshake is done, a connection's rings go to the main thread,
   * which reads and writes them itself; this connection keeps the control socket (the peer's
   * death, the close). Resolves with the rings and the bytes already read past the handshake.
   */
  async handOver(conn: Connection, stream: ByteStream): Promise<ShmHandOver> {
    const rings = handOverShm(stream);
    if (rings === undefined) throw new RpcError('INVALID_ARGUMENT', `${formatAddress(this.#options.transport)} is not an shm stream`);
    return { ...(await rings), rest: conn.handOver() };
  }

  /** Keeps an accepted connection's rings until the main thread takes them (its ConnOpen prompts it). */
  keep(connId: number, rings: ShmHandOver): void {
    this.#handOvers.set(connId, rings);
  }

  /** TaskControl.takeShm: the rings kept for `connId`, once. */
  take(connId: number): ShmHandOver | undefined {
    const rings = this.#handOvers.get(connId);
    this.#handOvers.delete(connId);
    return rings;
  }

  #write(connId: number, body: Uint8Array): void {
    try {
      this.#options.hub.toMain.write(connId, body);
    } catch {
      // the ring is closed: the main side is gone or closing
    }
  }
}
