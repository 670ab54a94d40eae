/**
 * How a client finds a published name: it waits for a first record, then connects to the endpoints
 * of every live instance, and (with reconnect) reads and follows them again through a NameResolver.
 */
import type { RpcError } from '../errors.js';
import type { TransportDescriptor } from '../transport/descriptors.js';
import { transportFromRecord, transportsFromRecords, type ExpectedKinds } from './topology.js';
import { lookupAll, watchRecords, type DiscoveryBackend } from './types.js';

/** Where a client's endpoints come from when it found its server through discovery (what its Channel follows). */
export interface Resolver {
  /** The transports the live records name now. */
  resolve(): Promise<TransportDescriptor[]>;
  /** Calls `onChange` with the transports whenever the records change; returns the stop. */
  watch(onChange: (transports: TransportDescriptor[]) => void, onError: (err: RpcError) => void): () => void;
}

/** The endpoints that one name's live records list, read on demand or followed as they change. */
export class NameResolver implements Resolver {
  readonly #discovery: DiscoveryBackend;
  readonly #name: string;
  readonly #expected: ExpectedKinds;

  constructor(discovery: DiscoveryBackend, name: string, expected: ExpectedKinds) {
    this.#discovery = discovery;
    this.#name = name;
    this.#expected = expected;
  }

  /** The transports the live records list now; INVALID_ARGUMENT when none is of a kind this client speaks. */
  async resolve(): Promise<TransportDescriptor[]> {
    return transportsFromRecords(this.#name, (await lookupAll(this.#discovery, this.#name)).map((e) => e.record), this.#expected);
  }

  /** Calls `onChange` with the transports whenever the records change, `onError` when they cannot be used; returns the stop. */
  watch(onChange: (transports: TransportDescriptor[]) => void, onError: (err: RpcError) => void): () => void {
    return watchRecords(
      this.#discovery,
      this.#name,
      (entries) => {
        try {
          onChange(transportsFromRecords(this.#name, entries.map((e) => e.record), this.#expected));
        } catch (err) {
          onError(err as RpcError);
        }
      },
      onError,
    );
  }
}

/**
 * Waits until `name` is published (UNAVAILABLE after `timeoutMs`), then returns the transports of
 * every live instance and the resolver that follows them. The record found decides a kind mismatch
 * (INVALID_ARGUMENT), as it always did; when the full list cannot be read, that record's first
 * address stands alone.
 */
export async function waitForEndpoints(
  discovery: DiscoveryBackend,
  name: string,
  expected: ExpectedKinds,
  options: { timeoutMs?: number },
): Promise<{ transports: TransportDescriptor[]; resolver: NameResolver }> {
  const record = await discovery.waitFor(name, { timeoutMs: options.timeoutMs });
  const first = transportFromRecord(name, record, expected);
  const resolver = new NameResolver(discovery, name, expected);
  const transports = await resolver.resolve().catch(() => []);
  return { transports: transports.length > 0 ? transports : [first], resolver };
}
