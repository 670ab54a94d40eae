/**
 * A task's connections as it counts them: open, in their handshake, admitted among maxConnections,
 * and what they carried (TaskControl.stats).
 */
import { RpcError } from '../errors.js';
import { connectionLimit, type TaskConfig, type TaskStats } from '../bridge/control.js';
import type { Connection } from './connection.js';

export class TaskConnections {
  /** Open connections by id: admitted among maxConnections, or live. */
  readonly open = new Map<number, Connection>();
  /** Accepted connections still in their handshake: not yet known to the main thread or a session. */
  readonly handshaking = new Set<Connection>();
  readonly #config: TaskConfig;
  /** Places among maxConnections: this task's own count, or the one its address's tasks share. */
  readonly #slots: ConnectionSlots;
  /** For stats(): connections that went live, and the frames of those that have closed. */
  #accepted = 0;
  #closedFramesIn = 0;
  #closedFramesOut = 0;

  constructor(config: TaskConfig) {
    this.#config = config;
    this.#slots = new ConnectionSlots(connectionLimit(config), config.shared);
  }

  /**
   * Takes a served client's place among maxConnections (shared with the other tasks of its
   * address, if any) and counts it as open; or says why it is refused (a one-to-one server that
   * already serves one, or one at its maxConnections).
   */
  admit(conn: Connection): RpcError | undefined {
    const max = this.#config.maxConnections ?? Infinity;
    if (this.#slots.take()) {
      this.open.set(conn.id, conn);
      return undefined;
    }
    if (max === 'one-to-one') return new RpcError('BUSY', 'this server is one-to-one and already serves a client');
    return new RpcError('BUSY', `this server already serves ${max} clients (its maxConnections)`, { data: { maxConnections: max } });
  }

  /** Counts `conn` as live (past its handshake, not refused). */
  live(conn: Connection): void {
    this.open.set(conn.id, conn);
    this.#accepted++;
  }

  /** Counts `conn` as closed (and a served one gives its place back); false if it was not open. */
  release(conn: Connection): boolean {
    if (!this.open.delete(conn.id)) return false;
    // A listener's connections all took a place in admit(); a client's own connection took none.
    if (this.#config.role === 'listen') this.#slots.give();
    return true;
  }

  /** Keeps the frames of a released connection for stats(). */
  retire(conn: Connection): void {
    this.#closedFramesIn += conn.framesIn;
    this.#closedFramesOut += conn.framesOut;
  }

  /** No connection is left, open or in its handshake. */
  get none(): boolean {
    return this.open.size === 0 && this.handshaking.size === 0;
  }

  stats(): TaskStats {
    let framesIn = this.#closedFramesIn;
    let framesOut = this.#closedFramesOut;
    for (const c of this.open.values()) {
      framesIn += c.framesIn;
      framesOut += c.framesOut;
    }
    return { connections: this.open.size, accepted: this.#accepted, framesIn, framesOut };
  }
}

/**
 * A listener's count of the clients it serves, against its maxConnections: the total (word 0) and
 * this task's own share (word 1 + member) of an Int32Array. The tasks serving one address on
 * several threads share one in shared memory and take a place with compare-and-swap, so two
 * threads cannot both take the last one; a task serving alone has one of its own.
 */
class ConnectionSlots {
  readonly #max: number;
  readonly #counts: Int32Array;
  /** This task's word in `#counts`. */
  readonly #mine: number;

  constructor(max: number, shared: TaskConfig['shared']) {
    this.#max = max;
    this.#counts = shared?.connections ?? new Int32Array(2);
    this.#mine = 1 + (shared?.member ?? 0);
    // Started in the place of a task whose thread died: its clients died with it, but it could
    // not give their places back. (If it died between taking a place and counting it as its own,
    // that one place stays taken: refusing one client too many, never admitting one.)
    const left = Atomics.exchange(this.#counts, this.#mine, 0);
    if (left !== 0) Atomics.sub(this.#counts, 0, left);
  }

  /** Takes a place; false when all are taken. */
  take(): boolean {
    const counts = this.#counts;
    for (;;) {
      const n = Atomics.load(counts, 0);
      if (n >= this.#max) return false;
      if (Atomics.compareExchange(counts, 0, n, n + 1) === n) {
        Atomics.add(counts, this.#mine, 1);
        return true;
      }
    }
  }

  /** Gives back a place taken by take(). */
  give(): void {
    Atomics.sub(this.#counts, this.#mine, 1);
    Atomics.sub(this.#counts, 0, 1);
  }
}
