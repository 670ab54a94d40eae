/**
 * The etcd discovery backend, for services spread over several machines: one key per name under
 * a prefix (`<prefix><name>`), or one per instance of a name published by several
 * (`<prefix><name>/<instance>`), each written with its own lease that the client keeps alive, so a
 * record whose owner died (or lost its network) expires after the lease's TTL. Readers watch the
 * name's keys.
 */
import type { Etcd3, IKeyValue, IOptions, Lease, Watcher } from 'etcd3';
import { RpcError } from '../errors.js';
import { checkVmName } from '../transport/descriptors.js';
import {
  asStoredRecord,
  checkCid,
  checkInstanceName,
  checkServiceName,
  heldBy,
  ownerAlive,
  ownerOf,
  parseCid,
  sameOwner,
  waitForRecord,
  type DiscoveryBackend,
  type InstanceOptions,
  type RecordsListener,
  type ServiceEntry,
  type StoredRecord,
  type Topology,
} from './types.js';

export interface EtcdDiscoveryOptions {
  /** etcd endpoints, e.g. 'http://127.0.0.1:2379' (default) or several. */
  hosts?: string | string[];
  /** Key prefix of the records (default 'ogurpchik/services/'). */
  prefix?: string;
  /** Key prefix of host entries, a VM's vsock CID each (default 'ogurpchik/hosts/'). */
  hostsPrefix?: string;
  /** Lease TTL in seconds: how long a dead owner's record outlives it (default 5). */
  ttlSeconds?: number;
  /** Anything else for the etcd3 client (credentials, TLS, timeouts). */
  client?: Omit<IOptions, 'hosts'>;
}

export class EtcdDiscovery implements DiscoveryBackend {
  readonly prefix: string;
  readonly hostsPrefix: string;
  readonly ttlSeconds: number;
  readonly #clientOptions: IOptions;
  /** The etcd3 client (and its gRPC stack) is loaded on first use, not when ogurpchik is imported. */
  #client: Promise<Etcd3> | undefined;
  /** Leases of the records this process published, by key, with the token of the node that did. */
  readonly #leases = new Map<string, { lease: Lease; owner: string | undefined }>();

  constructor(options: EtcdDiscoveryOptions = {}) {
    this.prefix = options.prefix ?? 'ogurpchik/services/';
    this.hostsPrefix = options.hostsPrefix ?? 'ogurpchik/hosts/';
    this.ttlSeconds = options.ttlSeconds ?? 5;
    if (!(Number.isInteger(this.ttlSeconds) && this.ttlSeconds >= 1)) throw new RpcError('INVALID_ARGUMENT', `ttlSeconds must be a positive integer, got ${options.ttlSeconds}`);
    this.#clientOptions = { ...options.client, hosts: options.hosts ?? 'http://127.0.0.1:2379' };
  }

  #etcd(): Promise<Etcd3> {
    this.#client ??= import('etcd3').then(({ Etcd3 }) => new Etcd3(this.#clientOptions));
    return this.#client;
  }

  /** The exclusive record's key, or one instance's: `<prefix><name>[/<instance>]`. */
  #key(name: string, instance?: string): string {
    return this.prefix + checkServiceName(name) + (instance === undefined ? '' : `/${checkInstanceName(instance)}`);
  }

  async publish(name: string, topology: Topology, options: InstanceOptions = {}): Promise<void> {
    const key = this.#key(name, options.instance);
    const exclusive = this.#key(name);
    const what = options.instance === undefined ? 'exclusively' : `as instance ${options.instance}`;
    const held = this.#leases.get(key);
    if (held !== undefined && !sameOwner(held.owner, options.owner)) {
      throw new RpcError('BUSY', `service ${name} is already published ${what} by another node of this process`);
    }
    const record: StoredRecord = {
      transport_kind: topology.transport_kind,
      codec_kind: topology.codec_kind,
      map: topology.map,
      owner: ownerOf(options.owner),
    };
    // Publishing again what we hold: the old record goes with its lease, the new one gets its own.
    if (held !== undefined) await this.#revoke(key);
    const client = await this.#etcd();
    if (options.instance === undefined) {
      // An exclusive name and instances of it exclude each other, as in the file backend.
      let instances: string[];
      try {
        instances = await client.getAll().prefix(`${exclusive}/`).keys();
      } catch (cause) {
        throw unavailable(`cannot publish ${name} to etcd`, cause);
      }
      if (instances.length > 0) throw new RpcError('BUSY', `service ${name} is already published as ${instances.length} instance(s): publish it with { shared: true }`);
    }
    // The etcd3 client keeps the lease alive while this process runs; when it dies, the key expires.
    const lease = client.lease(this.ttlSeconds, { autoKeepAlive: true });
    try {
      const id = await lease.grant();
      // Written only where nobody holds the key (nor, for an instance, the exclusive name): a live
      // owner's record, kept by its own lease, is never overwritten. One that a dead process of
      // this host left, its lease not yet expired (a restart within the TTL), is taken over.
      for (let attempt = 0; ; attempt++) {
        let txn = client.if(key, 'Create', '==', 0);
        if (options.instance !== undefined) txn = txn.and(exclusive, 'Create', '==', 0);
        if ((await txn.then(client.put(key).value(JSON.stringify(record)).lease(id)).commit()).succeeded) break;
        const taken = await this.#holderOf(client, [key, ...(options.instance === undefined ? [] : [exclusive])]);
        if (taken === undefined || ownerAlive(taken.record) || attempt > 0) throw new RpcError('BUSY', `service ${name} is already published by ${heldBy(taken?.record.owner)}`);
        // Removed only if unchanged since read: a live publisher racing us keeps its record.
        await client.if(taken.key, 'Mod', '==', taken.modRevision).then(client.delete().key(taken.key)).commit();
      }
    } catch (cause) {
      await lease.revoke().catch(() => {});
      throw RpcError.is(cause) ? cause : unavailable(`cannot publish ${name} to etcd`, cause);
    }
    lease.on('lost', () => this.#leases.delete(key));
    this.#leases.set(key, { lease, owner: options.owner });
  }

  /** The first of `keys` that holds a record: its key, record and mod revision. */
  async #holderOf(client: Etcd3, keys: string[]): Promise<{ key: string; record: StoredRecord; modRevision: string } | undefined> {
    for (const key of keys) {
      const kv = (await client.get(key).exec()).kvs[0];
      const record = kv === undefined ? undefined : parse(kv.value.toString());
      if (kv !== undefined && record !== undefined) return { key, record, modRevision: String(kv.mod_revision) };
    }
    return undefined;
  }

  async unpublish(name: string, options: InstanceOptions = {}): Promise<void> {
    const key = this.#key(name, options.instance);
    const held = this.#leases.get(key);
    // Only the caller's own record: another node of this process may hold the name meanwhile.
    if (held !== undefined && !sameOwner(held.owner, options.owner)) return;
    await this.#revoke(key);
  }

  async #revoke(key: string): Promise<void> {
    const held = this.#leases.get(key);
    this.#leases.delete(key);
    // Revoking the lease deletes the key with it.
    await held?.lease.revoke().catch(() => {});
  }

  async lookup(name: string): Promise<StoredRecord | undefined> {
    return (await this.lookupAll(name))[0]?.record;
  }

  async lookupAll(name: string): Promise<ServiceEntry[]> {
    const base = this.#key(name);
    let all: Record<string, string>;
    try {
      all = await (await this.#etcd()).getAll().prefix(base).strings();
    } catch (cause) {
      throw unavailable(`cannot read ${name} from etcd`, cause);
    }
    // The prefix also matches longer names (`svc` finds `svc2`): keep the name's own keys, exclusive first.
    return this.#entries(all).filter((e) => e.name === name);
  }

  async waitFor(name: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<StoredRecord> {
    const base = this.#key(name);
    if (options.signal?.aborted) throw new RpcError('CANCELLED', `waiting for ${name} was cancelled`);
    return waitForRecord(name, options, (found, fail) => {
      let stopped = false;
      let watcher: Watcher | undefined;
      const read = () => this.lookup(name).then((record) => record && found(record), fail);
      // A read at once: finds a record already there, and fails fast when etcd cannot be reached
      // (refused, or TLS credentials it does not accept), while a watch would keep retrying.
      read();
      this.#watcher(base).then(
        (w) => {
          if (stopped) return void w.cancel().catch(() => {});
          watcher = w;
          w.on('put', (kv) => {
            const record = ownKey(kv, base) ? parse(kv.value.toString()) : undefined;
            if (record) found(record);
          });
          w.on('error', (cause) => fail(unavailable(`watching ${name} in etcd failed`, cause)));
          // And once the watch is up: a record written between the first read and the watch.
          read();
        },
        fail,
      );
      // The timeout and the signal end the wait even while the watch is still being set up.
      return () => {
        stopped = true;
        void watcher?.cancel().catch(() => {});
      };
    });
  }

  watch(name: string, listener: RecordsListener, onError: (err: RpcError) => void): () => void {
    const base = this.#key(name);
    let stopped = false;
    let watcher: Watcher | undefined;
    let reading = false;
    let again = false;
    // One read at a time; changes that arrive meanwhile are folded into one more read.
    const refresh = () => {
      if (reading) return void (again = true);
      reading = true;
      this.lookupAll(name)
        .then((entries) => !stopped && listener(entries), (err) => !stopped && onError(err))
        .finally(() => {
          reading = false;
          if (again && !stopped) {
            again = false;
            refresh();
          }
        });
    };
    this.#watcher(base).then(
      (w) => {
        if (stopped) return void w.cancel().catch(() => {});
        watcher = w;
        const onChange = (kv: IKeyValue) => ownKey(kv, base) && refresh();
        w.on('put', onChange);
        w.on('delete', onChange);
        // After a reconnect to etcd: whatever changed while the watch was down.
        w.on('connected', refresh);
        w.on('error', (cause) => !stopped && onError(unavailable(`watching ${name} in etcd failed`, cause)));
        refresh();
      },
      (cause) => !stopped && onError(unavailable(`cannot watch ${name} in etcd`, cause)),
    );
    return () => {
      stopped = true;
      void watcher?.cancel().catch(() => {});
    };
  }

  async list(): Promise<ServiceEntry[]> {
    let all: Record<string, string>;
    try {
      all = await (await this.#etcd()).getAll().prefix(this.prefix).strings();
    } catch (cause) {
      throw unavailable('cannot list etcd records', cause);
    }
    return this.#entries(all);
  }

  async #watcher(base: string): Promise<Watcher> {
    try {
      return await (await this.#etcd()).watch().prefix(base).create();
    } catch (cause) {
      throw unavailable(`cannot watch ${base} in etcd`, cause);
    }
  }

  /** Parses keys under the prefix into entries in key order (a name's exclusive record sorts before its instances); skips anything malformed. */
  #entries(all: Record<string, string>): ServiceEntry[] {
    const out: ServiceEntry[] = [];
    for (const [key, text] of Object.entries(all).sort()) {
      const m = /^([A-Za-z0-9._-]{1,128})(?:\/([A-Za-z0-9._-]{1,128}))?$/.exec(key.slice(this.prefix.length));
      const record = m && parse(text);
      // A key exists only while its owner's lease lives: every listed record is alive.
      if (m && record) out.push(m[2] === undefined ? { name: m[1], record, alive: true } : { name: m[1], instance: m[2], record, alive: true });
    }
    return out;
  }

  /** Records the vsock CID of VM `vm` (its host entry, no lease: it outlives this process), for self-managed `vsock({ vm, port })` clients. */
  async registerHost(vm: string, cid: number): Promise<void> {
    const key = this.hostsPrefix + checkVmName(vm);
    checkCid(cid);
    try {
      await (await this.#etcd()).put(key).value(String(cid));
    } catch (cause) {
      throw unavailable(`cannot write host entry ${vm} to etcd`, cause);
    }
  }

  /** The vsock CID recorded for VM `vm`, or undefined when there is none. */
  async lookupHost(vm: string): Promise<number | undefined> {
    const key = this.hostsPrefix + checkVmName(vm);
    let text: string | null;
    try {
      text = await (await this.#etcd()).get(key).string();
    } catch (cause) {
      throw unavailable(`cannot read host entry ${vm} from etcd`, cause);
    }
    return text === null ? undefined : parseCid(text);
  }

  /** Removes VM `vm`'s host entry, if any. */
  async unregisterHost(vm: string): Promise<void> {
    const key = this.hostsPrefix + checkVmName(vm);
    try {
      await (await this.#etcd()).delete().key(key);
    } catch (cause) {
      throw unavailable(`cannot delete host entry ${vm} from etcd`, cause);
    }
  }

  /** Revokes this process's leases (removing its records) and closes the etcd client. */
  async close(): Promise<void> {
    await Promise.all([...this.#leases.keys()].map((key) => this.#revoke(key)));
    if (this.#client) (await this.#client).close();
  }
}

function parse(text: string): StoredRecord | undefined {
  try {
    return asStoredRecord(JSON.parse(text));
  } catch {
    return undefined;
  }
}

/** Whether a watched key under `<prefix><name>` belongs to that name (its record or an instance's), not to a longer name. */
function ownKey(kv: IKeyValue, base: string): boolean {
  const key = kv.key.toString();
  return key === base || key.startsWith(`${base}/`);
}

function unavailable(message: string, cause: unknown): RpcError {
  return new RpcError('UNAVAILABLE', `${message}: ${(cause as Error)?.message ?? cause}`, { cause });
}
