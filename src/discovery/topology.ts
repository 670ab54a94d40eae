/** Between transports and discovery records: what a listener publishes, and what a record connects to. */
import { RpcError } from '../errors.js';
import type { CodecDescriptor } from '../codec/index.js';
import { formatAddress, shm, tcp, unix, type Address, type TransportDescriptor } from '../transport/descriptors.js';
import type { TlsSettings } from '../transport/tls-options.js';
import type { StoredRecord, Topology, TransportKind } from './types.js';

/** The kind a record names: TLS over TCP is its own kind, so a plain client refuses it clearly. */
function recordKind(a: Address): string {
  return a.kind === 'tcp' && a.tls ? 'tls' : a.kind;
}

/** The record a server publishes for the addresses it listens on. */
export function topologyFor(addresses: Address[], codec: CodecDescriptor): Topology {
  const kinds = new Set(addresses.map(recordKind));
  const kind = addresses[0] && recordKind(addresses[0]);
  if (kind === undefined || kinds.size !== 1 || (kind !== 'tcp' && kind !== 'tls' && kind !== 'unix' && kind !== 'shm')) {
    throw new RpcError('INVALID_ARGUMENT', `only tcp (plain or tls), unix and shm listeners can be published, got ${[...kinds].join(', ') || 'none'}`);
  }
  const map: Record<string, string> = {};
  addresses.forEach((a, i) => (map[String(i)] = a.kind === 'shm' ? a.name : formatAddress(a)));
  return { transport_kind: kind, codec_kind: codec.kind, map };
}

/**
 * The transport to reach a published record, refusing one whose transport or codec kind is not
 * what this client speaks (it could not talk to it).
 */
export function transportFromRecord(
  name: string,
  record: StoredRecord,
  expected: { transport: TransportKind; codec: CodecDescriptor; tls?: TlsSettings },
): TransportDescriptor {
  if (record.transport_kind !== expected.transport || record.codec_kind !== expected.codec.kind) {
    throw new RpcError(
      'INVALID_ARGUMENT',
      `service ${name} is published as ${record.transport_kind}/${record.codec_kind}, but this client speaks ${expected.transport}/${expected.codec.kind}`,
    );
  }
  const address = record.map['0'] ?? Object.values(record.map)[0];
  switch (record.transport_kind) {
    case 'tcp':
      return tcp(address);
    case 'tls':
      return { ...tcp(address), tls: expected.tls ?? { requestCert: false, rejectUnauthorized: true } };
    case 'unix':
      return unix(address);
    case 'shm':
      return shm(address);
  }
}
