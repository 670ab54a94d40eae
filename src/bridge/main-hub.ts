/**
 * This thread's ends of the ring pairs it shares with worker threads: one per pool thread that
 * hosts any of its tasks (an isolate plugin's thread has one of its own). Every connection a pool
 * thread hosts for this thread rides that pair, each record tagged with an id the worker gave the
 * connection (unique within the pair); its first record, ConnOpen, names the task it belongs to.
 *
 * Which pool thread runs a task is piscina's choice, known only once the task runs. So each
 * task's spec offers a fresh pair (offerHub); the worker adopts it only when its thread has no
 * pair with this thread yet, and stores the id of the pair it joined in the task's shared words,
 * where the task looks it up (at ready, at its first ConnOpen, at its end). Nothing reads an
 * offered pair until someone learns that it was adopted: what the worker writes meanwhile waits
 * in the ring. The worker closes a pair when its last task there ends; this end then drops it.
 */
import { MessageChannel, threadId, type MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import { RpcError } from '../errors.js';
import { widestWindows, type RingWindows } from '../idle.js';
import { kindOf } from '../protocol/envelope.js';
import { ControlKind, decodeControl, type ConnOpenRecord, type HubOffer, type ThreadControl } from './control.js';
import { nodeEndpoint } from './endpoint.js';
import { IdTable } from '../session/id-table.js';
import { RingReader, RingWriter, createRing } from '../shm/ring.js';
import { weighShared } from '../shm/weigh.js';
import type { PeerInfo } from '../types.js';

/** A task whose connections ride a hub. */
export interface HubTask {
  /** The idle windows this task asks of the ring it reads (the hub takes the widest). */
  readonly ringWindows: RingWindows;
  /** Its connection `connId` opened on `hub` (the ConnOpen record): records with that id are this task's until ConnClosed. */
  opened(hub: MainHub, connId: number, peer: PeerInfo): void;
  /** Any other record of one of its connections (ConnClosed included, the last). */
  record(connId: number, bytes: Uint8Array): void;
}

/** Offered pairs not yet known to be unused, and adopted ones still open, by id. */
const hubs = new Map<number, MainHub>();
/** Live tasks by key (TaskSpec.key), for ConnOpen records. */
const tasks = new Map<number, HubTask>();
let lastHubId = 0;
let lastKey = 0;

/** Registers a task; returns its key, which its worker puts in each ConnOpen. */
export function registerTask(task: HubTask): number {
  const key = ++lastKey;
  tasks.set(key, task);
  return key;
}

export function unregisterTask(key: number): void {
  tasks.delete(key);
}

/** A fresh pair to offer in a task's spec (see the file comment). */
export function offerHub(ringBytes: number): HubOffer {
  // Most offers go unused (their thread has a pair already): the rings of one that went unused
  // are offered again, so a connect/close loop does not leave two dead rings per connection.
  const at = spareRings.findIndex((r) => r.ringBytes === ringBytes);
  const rings = at >= 0 ? spareRings.splice(at, 1)[0]!.rings : { toWorker: createRing(ringBytes), toMain: createRing(ringBytes) };
  weighShared(rings.toWorker);
  weighShared(rings.toMain);
  // A fresh channel each time: the one of an unused offer went to the worker, which closed it.
  const { port1, port2 } = new MessageChannel();
  const offer: HubOffer = { id: ++lastHubId, owner: threadId, ...rings, control: port2 };
  hubs.set(offer.id, new MainHub(offer, ringBytes, port1));
  return offer;
}

/** Rings of offers nobody adopted: untouched (no worker writes to a pair it did not adopt), so as good as new. */
const spareRings: Array<{ ringBytes: number; rings: Pick<HubOffer, 'toWorker' | 'toMain'> }> = [];
const kMaxSpareRings = 4;

/** The open or offered pair `id`; undefined once closed. */
export function hubById(id: number): MainHub | undefined {
  return hubs.get(id);
}

/** The offer of a task whose worker joined another pair, or never ran: nobody can adopt it now. */
export function discardOffer(id: number): void {
  const hub = hubs.get(id);
  if (hub === undefined || hub.adopted) return;
  hubs.delete(id);
  hub.closeControl();
  if (spareRings.length < kMaxSpareRings) spareRings.push(hub.spare);
}

/** One ring pair in ringPairs(). */
export interface RingPairInfo {
  id: number;
  /** Tasks (listeners and client connections) whose connections ride it. */
  tasks: number;
  /** Connections riding it now. */
  connections: number;
  /** The idle windows this end's reader uses now (the widest its tasks ask for), and how often it has spun and slept. */
  reader: { spinMicros: number; pollMicros: number; spins: number; sleeps: number };
}

/** The ring pairs this thread shares with worker threads now (for tests and debugging). */
export function ringPairs(): RingPairInfo[] {
  const out: RingPairInfo[] = [];
  for (const hub of hubs.values()) if (hub.adopted) out.push(hub.info());
  return out;
}

export class MainHub {
  readonly id: number;
  readonly #offer: HubOffer;
  #toWorker: RingWriter | undefined;
  #fromWorker: RingReader | undefined;
  readonly #members = new Set<HubTask>();
  /** By connection id: ids come in sequence, as call ids do, and this is looked up once per record. */
  readonly #routes = new IdTable<HubTask>();
  #closed = false;
  /** Records being delivered now: drain() from inside one must not re-enter the reader. */
  #delivering = 0;

  readonly #ringBytes: number;
  /** This end of the pair's control channel (HubOffer.control). */
  readonly #port: MessagePort;
  readonly #control: Comlink.Remote<ThreadControl>;
  #controlClosed = false;

  constructor(offer: HubOffer, ringBytes: number, port: MessagePort) {
    this.id = offer.id;
    this.#offer = offer;
    this.#ringBytes = ringBytes;
    this.#port = port;
    this.#control = Comlink.wrap<ThreadControl>(nodeEndpoint(port));
  }

  /**
   * The TaskControl of each task riding the pair, by key; undefined once the pair has closed. A
   * call the worker never answers (its thread died) stays pending: callers race each call with
   * their task's end.
   */
  get control(): Comlink.Remote<ThreadControl> | undefined {
    return this.#controlClosed ? undefined : this.#control;
  }

  /**
   * Ends the control channel (the pair closed, or its offer went unused). The proxy's release lets
   * go of the calls still pending on it, which would otherwise keep it and what they hold reachable.
   */
  closeControl(): void {
    if (this.#controlClosed) return;
    this.#controlClosed = true;
    this.#control[Comlink.releaseProxy]();
    this.#port.close();
  }

  /** The pair's two rings and the size they were made for, to offer again when nobody adopted them. */
  get spare(): { ringBytes: number; rings: Pick<HubOffer, 'toWorker' | 'toMain'> } {
    return { ringBytes: this.#ringBytes, rings: { toWorker: this.#offer.toWorker, toMain: this.#offer.toMain } };
  }

  /** Whether a worker took this pair (and this end reads it). */
  get adopted(): boolean {
    return this.#fromWorker !== undefined;
  }

  /** To the worker; throws RpcError CLOSED once the pair is closed (or before it is adopted). */
  get toWorker(): RingWriter {
    if (this.#toWorker === undefined) throw new RpcError('CLOSED', 'the connection worker\'s ring pair is closed');
    return this.#toWorker;
  }

  /** A worker took this pair: start reading it. Idempotent. */
  adopt(): void {
    if (this.#fromWorker !== undefined || this.#closed) return;
    this.#toWorker = new RingWriter(this.#offer.toWorker);
    this.#fromWorker = new RingReader(
      this.#offer.toMain,
      { onMessage: (connId, bytes) => this.#onMessage(connId, bytes), onClose: () => this.#close() },
      this.#windows(),
    );
    this.#fromWorker.start();
  }

  join(task: HubTask): void {
    this.#members.add(task);
    this.#fromWorker?.setWindows(this.#windows());
  }

  /** Routes records with `connId` to `task` (a connection it learnt of from elsewhere than ConnOpen: ready()). */
  route(connId: number, task: HubTask): void {
    this.#routes.set(connId, task);
  }

  /** `task` has ended: its connections' records are dropped from now on. */
  leave(task: HubTask): void {
    if (!this.#members.delete(task)) return;
    for (const [id, t] of this.#routes.entries()) if (t === task) this.#routes.delete(id);
    this.#fromWorker?.setWindows(this.#windows());
  }

  /** Delivers what the worker has written so far, now (a task ending first hears its connections' last words). */
  drain(): void {
    const reader = this.#fromWorker;
    if (reader === undefined || this.#delivering > 0) return;
    try {
      while (reader.drain() > 0);
    } catch {
      // a corrupt ring: the tasks' sessions close anyway
    }
  }

  /** The worker thread died: nothing more will come, and nothing sent can arrive. */
  dead(): void {
    this.drain();
    this.#close();
  }

  info(): RingPairInfo {
    const r = this.#fromWorker;
    const reader = r === undefined ? { ...this.#windows(), spins: 0, sleeps: 0 } : { ...r.windows, spins: r.spins, sleeps: r.sleeps };
    return { id: this.id, tasks: this.#members.size, connections: this.#routes.size, reader };
  }

  #windows(): RingWindows {
    return widestWindows(this.#members);
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (hubs.get(this.id) === this) hubs.delete(this.id);
    this.#fromWorker?.stop();
    this.#toWorker?.destroy();
    this.#toWorker = undefined;
    this.#routes.clear();
    this.closeControl();
  }

  #onMessage(connId: number, bytes: Uint8Array): void {
    this.#delivering++;
    try {
      if (kindOf(bytes) === ControlKind.ConnOpen) {
        const open = decodeControl(bytes) as ConnOpenRecord;
        const task = tasks.get(open.key);
        if (task === undefined) return;
        this.#routes.set(connId, task);
        task.opened(this, connId, open.peer);
        return;
      }
      const task = this.#routes.get(connId);
      if (task === undefined) return;
      if (kindOf(bytes) === ControlKind.ConnClosed) this.#routes.delete(connId);
      task.record(connId, bytes);
    } finally {
      this.#delivering--;
    }
  }
}
