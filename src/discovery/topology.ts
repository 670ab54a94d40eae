/** Between transports and discovery records: what a listener publishes, and what a record connects to. */
import { RpcError } from '../errors.js';
import type { CodecDescriptor } from '../codec/index.js';
import { formatAddress, shm, tcp, unix, type Address, type TransportDescriptor } from '../transport/descriptors.js';
import type { StoredRecord, Topology, TransportKind } from './types.js';

/** The record a server publishes for the addresses it listens on: one map entry per address, "0", "1", … */
export function topologyFor(addresses: Address[], codec: CodecDescriptor): Topology {
  const kinds = new Set(addresses.map((a) => a.kind));
  const kind = addresses[0]?.kind;
  if (kinds.size > 1) throw new RpcError('INVALID_ARGUMENT', `a record has one transport kind: publish every served transport of one kind, got ${[...kinds].join(', ')}`);
  if (kind === undefined || (kind !== 'tcp' && kind !== 'unix' && kind !== 'shm')) {
    throw new RpcError('INVALID_ARGUMENT', `only tcp, unix and shm listeners can be published, got ${[...kinds].join(', ') || 'none'}`);
  }
  const map: Record<string, string> = {};
  addresses.forEach((a, i) => (map[String(i)] = a.kind === 'shm' ? a.name : formatAddress(a)));
  return { transport_kind: kind, codec_kind: codec.kind, map };
}

/**
 * The transport to reach a published record (its first address), refusing one whose transport or
 * codec kind is not what this client speaks (it could not talk to it).
 */
export function transportFromRecord(name: string, record: StoredRecord, expected: { transport: TransportKind; codec: CodecDescriptor }): TransportDescriptor {
  checkKinds(name, record, expected);
  return transportFor(record.transport_kind, record.map['0'] ?? Object.values(record.map)[0]);
}

/**
 * The transports to reach every address of every live record under a name (one map entry per
 * serving endpoint, one record per instance), each address once. A record this client cannot talk
 * to is skipped while others are usable; when every record is such, INVALID_ARGUMENT.
 */
export function transportsFromRecords(name: string, records: StoredRecord[], expected: { transport: TransportKind; codec: CodecDescriptor }): TransportDescriptor[] {
  const out = new Map<string, TransportDescriptor>();
  let refused: RpcError | undefined;
  for (const record of records) {
    try {
      checkKinds(name, record, expected);
    } catch (err) {
      refused ??= err as RpcError;
      continue;
    }
    for (const address of Object.values(record.map)) {
      try {
        const transport = transportFor(record.transport_kind, address);
        out.set(formatAddress(transport), transport);
      } catch {
        // an address that does not parse is unreachable; the record's others still count
      }
    }
  }
  if (out.size === 0 && refused) throw refused;
  return [...out.values()];
}

function checkKinds(name: string, record: StoredRecord, expected: { transport: TransportKind; codec: CodecDescriptor }): void {
  if (record.transport_kind !== expected.transport || record.codec_kind !== expected.codec.kind) {
    throw new RpcError(
      'INVALID_ARGUMENT',
      `service ${name} is published as ${record.transport_kind}/${record.codec_kind}, but this client speaks ${expected.transport}/${expected.codec.kind}`,
    );
  }
}

function transportFor(kind: TransportKind, address: string): TransportDescriptor {
  switch (kind) {
    case 'tcp':
      return tcp(address);
    case 'unix':
      return unix(address);
    case 'shm':
      return shm(address);
  }
}
