/** What `start()` resolves to: a node's listeners, its client's channel and its pool lease, closed as one. */
import { RpcError } from '../errors.js';
import { checkInteger, kMaxTimerMs } from '../limits.js';
import type { Address } from '../transport/descriptors.js';
import type { PoolLease } from './pool.js';
import type { ListenerStats, ServedAddress } from './listener.js';
import type { Channel } from './channel.js';
import type { EndpointStats } from './endpoint.js';
import { Client } from './client.js';
import type { CloseOptions } from './options.js';

/** A started node. Close it (or `await using` it) to release its sockets and workers. */
export class RunningNode<Req = unknown, Res = unknown> {
  /** Addresses the node listens on, with port 0 resolved. */
  readonly addresses: Address[];
  readonly #client: Client<Req, Res> | undefined;
  readonly #channel: Channel | undefined;
  readonly #listeners: ServedAddress[];
  readonly #lease: PoolLease;
  readonly #unpublish: (() => Promise<void>) | undefined;
  #closing: Promise<void> | undefined;
  /** While a graceful close waits: ends the wait at once. */
  #cutGrace: (() => void) | undefined;

  /** @internal */
  constructor(listeners: ServedAddress[], channel: Channel | undefined, lease: PoolLease, unpublish?: () => Promise<void>) {
    this.#listeners = listeners;
    this.#channel = channel;
    this.#client = channel && new Client<Req, Res>(channel);
    this.#lease = lease;
    this.#unpublish = unpublish;
    this.addresses = listeners.flatMap((l) => (l.address ? [l.address] : []));
  }

  /** The client of the `connect()` transport. Throws when the node only serves. */
  get client(): Client<Req, Res> {
    if (this.#client === undefined) throw new RpcError('INVALID_ARGUMENT', 'this node has no client: call .connect() before .start()');
    return this.#client;
  }

  /**
   * Removes its discovery record, closes connections (pending calls reject with CLOSED), stops
   * listening, removes socket files. With `graceMs`, a graceful close first: it stops listening,
   * every served connection refuses new calls with UNAVAILABLE (not run, so safe to send again
   * elsewhere) and closes once it has answered the calls it serves, and the node's own client's
   * calls in flight may settle; after `graceMs` whatever is left is closed as without it. A
   * close() without `graceMs` during a graceful one cuts it short. Idempotent.
   */
  close(options: CloseOptions = {}): Promise<void> {
    let graceMs: number;
    try {
      graceMs = checkInteger('close() graceMs', options?.graceMs, { fallback: 0, min: 0, max: kMaxTimerMs });
    } catch (err) {
      return Promise.reject(err);
    }
    if (graceMs === 0) this.#cutGrace?.();
    this.#closing ??= (async () => {
      // The record goes first: nobody should find a server that is closing.
      await this.#unpublish?.().catch(() => {});
      if (graceMs > 0) await this.#drain(graceMs);
      // Connections first, so a node serving and calling itself closes its client before its server.
      await this.#channel?.close();
      for (const listener of [...this.#listeners].reverse()) await listener.close();
      await this.#lease.release();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * What the node carries now, read from its connection workers: per listener (in serve() order)
   * the connections open, those taken in and the frames since its worker task started, and its
   * restarts; per client endpoint its state, calls in flight and its connection's frames.
   * Rejects with CLOSED once close() has begun.
   */
  async stats(): Promise<NodeStats> {
    if (this.#closing !== undefined) throw new RpcError('CLOSED', 'the node was closed');
    const [listeners, endpoints] = await Promise.all([Promise.all(this.#listeners.map((l) => l.stats())), this.#channel?.stats() ?? []]);
    return { listeners, endpoints };
  }

  /** The graceful part of close(): until every listener's connections and the client's calls are done, or `graceMs` passed. */
  async #drain(graceMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const over = new Promise<void>((resolve) => {
      this.#cutGrace = resolve;
      timer = setTimeout(resolve, graceMs);
    });
    const drained = Promise.all([this.#channel?.drain(), ...this.#listeners.map((l) => l.drain())]);
    await Promise.race([drained.catch(() => {}), over]);
    clearTimeout(timer);
    this.#cutGrace = undefined;
  }
}

/** What RunningNode#stats reports. */
export interface NodeStats {
  /** One per serve(), in that order. */
  listeners: ListenerStats[];
  /** The client's endpoints (none without connect()). */
  endpoints: EndpointStats[];
}
