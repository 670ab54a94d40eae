/**
 * The ring pair this pool thread shares with one main thread: every connection it hosts for that
 * thread (of all its tasks, client connections and served ones alike) rides it, each record
 * tagged with an id unique within the pair. A burst of calls over many connections is then one
 * batch and one wake-up per direction, as it is over one connection.
 */
import { widestWindows, type RingWindows } from '../idle.js';
import type { HubOffer, TaskControl } from './control.js';
import { exposeThreadControl } from './thread-control.js';
import { RingReader, RingWriter } from '../shm/ring.js';
import type { Connection } from '../worker/connection.js';

/** A task that hosts connections on a hub. */
export interface HubMember {
  /** Its task's TaskSpec.key, by which the pair's control channel reaches it. */
  readonly key: number;
  /** What the main thread calls on it over the pair's control channel. */
  readonly control: TaskControl;
  /** A record from the main thread for this member's connection `id`. */
  fromMain(id: number, bytes: Uint8Array, owned: boolean): void;
  /** The idle windows this member asks of the ring it reads (the hub takes the widest). */
  readonly ringWindows: RingWindows;
}

/** This thread's hubs, by the main thread (threadId) they serve. */
const hubs = new Map<number, WorkerHub>();

export class WorkerHub {
  /** The id the main thread gave the ring pair when it offered it. */
  readonly id: number;
  /** To the main thread; members write their connections' records here. */
  readonly toMain: RingWriter;
  readonly #fromMain: RingReader;
  readonly #owner: number;
  /** Its members by TaskSpec.key: the pair's control channel answers for them. */
  readonly #members = new Map<number, HubMember>();
  readonly #control: HubOffer['control'];
  readonly #routes = new Map<number, HubMember>();
  /**
   * Connections with frames queued, each once (Connection#flushQueued), flushed at the batch's or
   * the turn's end. An array and a flag: a Set filled and cleared for every batch cost more than
   * the rest of the relay. A connection that closes meanwhile leaves a null behind.
   */
  #dirty: Array<Connection | null> = [];
  #flushScheduled = false;
  /** Records from the main thread are being delivered: the batch's end flushes, no turn-end flush is needed. */
  #inBatch = false;
  #nextId = 1;

  /**
   * Joins `member` to this thread's hub for the offering main thread, adopting `offer` when there
   * is none yet (else the offer and its control channel go unused). The caller stores the returned hub's id in its TaskSpec.thread, which is how the
   * main thread learns which pair, and which control channel, carries the task.
   */
  static join(offer: HubOffer, member: HubMember): WorkerHub {
    let hub = hubs.get(offer.owner);
    if (hub === undefined) {
      hub = new WorkerHub(offer);
      hubs.set(offer.owner, hub);
    } else {
      offer.control.close();
    }
    hub.#members.set(member.key, member);
    hub.#retune();
    return hub;
  }

  private constructor(offer: HubOffer) {
    this.id = offer.id;
    this.#owner = offer.owner;
    this.#control = offer.control;
    exposeThreadControl(offer.control, (key) => this.#members.get(key)?.control);
    this.toMain = new RingWriter(offer.toMain);
    this.#fromMain = new RingReader(offer.toWorker, {
      onMessage: (id, bytes, owned) => {
        this.#inBatch = true;
        try {
          this.#routes.get(id)?.fromMain(id, bytes, owned);
        } catch (err) {
          // The reader stops on a throw and no onBatch follows: write what the batch queued now.
          this.#inBatch = false;
          this.#flush();
          throw err;
        }
      },
      // One write per dirty connection per batch, whichever task it belongs to.
      onBatch: () => {
        this.#inBatch = false;
        this.#flush();
      },
    });
    this.#fromMain.start();
  }

  /** A fresh id for a connection of `member`; records from the main thread for it go to the member until forget(). */
  open(member: HubMember): number {
    let id = this.#nextId;
    // u32 tags: after 2^32 connections on one pair, skip ids still in use.
    while (this.#routes.has(id)) id = id >= 0xffffffff ? 1 : id + 1;
    this.#nextId = id >= 0xffffffff ? 1 : id + 1;
    this.#routes.set(id, member);
    return id;
  }

  /** Connection `conn` has closed: nothing more for it. */
  forget(conn: Connection): void {
    this.#routes.delete(conn.id);
    if (conn.flushQueued) {
      conn.flushQueued = false;
      const at = this.#dirty.indexOf(conn);
      if (at >= 0) this.#dirty[at] = null;
    }
  }

  markDirty(conn: Connection): void {
    if (!conn.flushQueued) {
      conn.flushQueued = true;
      this.#dirty.push(conn);
    }
    if (this.#flushScheduled || this.#inBatch) return;
    this.#flushScheduled = true;
    // One write per connection per event-loop turn, however many frames the turn produced.
    setImmediate(() => this.#flush());
  }

  /**
   * Relays one body of connection `connId` to the main thread (ConnectionHost#relay). The wake-up
   * it may owe the main thread waits for the end of this event-loop turn (setImmediate): the
   * answers read from every socket this turn then reach it with one wake-up, as one batch.
   */
  relay(connId: number, body: Uint8Array): boolean {
    this.toMain.holdWakeForTurn();
    return this.toMain.write(connId, body);
  }

  /** The main thread is expected to write within `ms` (see RingReader#expectWithin). */
  expectWithin(ms: number): void {
    this.#fromMain.expectWithin(ms);
  }

  /**
   * `member` has ended: its connections' ids are forgotten, and the last member to leave closes
   * the pair (after the records already written), which tells the main thread to drop its end.
   */
  leave(member: HubMember): void {
    if (this.#members.get(member.key) !== member) return;
    this.#members.delete(member.key);
    for (const [id, m] of this.#routes) if (m === member) this.#routes.delete(id);
    if (this.#members.size > 0) {
      this.#retune();
      return;
    }
    if (hubs.get(this.#owner) === this) hubs.delete(this.#owner);
    for (const conn of this.#dirty) if (conn !== null) conn.flushQueued = false;
    this.#dirty = [];
    this.toMain.close();
    this.#fromMain.stop();
    // After comlink's replies of this turn (the leaving task's close(), say) have gone out.
    setImmediate(() => this.#control.close());
  }

  #retune(): void {
    this.#fromMain.setWindows(widestWindows(this.#members.values()));
  }

  #flush(): void {
    this.#flushScheduled = false;
    const dirty = this.#dirty;
    // By index: a flush may queue frames on a connection not yet in the list, which joins it.
    for (let i = 0; i < dirty.length; i++) {
      const conn = dirty[i];
      if (conn === null) continue;
      conn.flushQueued = false;
      conn.flush();
    }
    dirty.length = 0;
  }
}
