/** Between transports and discovery records: what a listener publishes, and what a record connects to. */
import { RpcError } from '../errors.js';
import type { CodecDescriptor } from '../codec/index.js';
import { loadNative } from '../native/addon.js';
import { formatAddress, kVsockCidAny, shm, tcp, unix, vsock, type Address, type TransportDescriptor, type VsockDescriptor } from '../transport/descriptors.js';
import type { TlsSettings } from '../transport/tls-options.js';
import type { DiscoveryBackend, StoredRecord, Topology, TransportKind } from './types.js';

/** The kind a record names: TLS over TCP is its own kind, so a plain client refuses it clearly. */
function recordKind(a: Address): string {
  return a.kind === 'tcp' && a.tls ? 'tls' : a.kind;
}

/** The record a server publishes for the addresses it listens on: one map entry per address, "0", "1", … */
export function topologyFor(addresses: Address[], codec: CodecDescriptor): Topology {
  const kinds = new Set(addresses.map(recordKind));
  const kind = addresses[0] && recordKind(addresses[0]);
  if (kinds.size > 1) throw new RpcError('INVALID_ARGUMENT', `a record has one transport kind: publish every served transport of one kind, got ${[...kinds].join(', ')}`);
  if (kind === undefined || (kind !== 'tcp' && kind !== 'tls' && kind !== 'unix' && kind !== 'shm' && kind !== 'vsock')) {
    throw new RpcError('INVALID_ARGUMENT', `only tcp (plain or tls), unix, shm and vsock listeners can be published, got ${[...kinds].join(', ') || 'none'}`);
  }
  const map: Record<string, string> = {};
  addresses.forEach((a, i) => (map[String(i)] = publishedAddress(a)));
  return { transport_kind: kind, codec_kind: codec.kind, map };
}

function publishedAddress(a: Address): string {
  switch (a.kind) {
    case 'shm':
      return a.name;
    case 'vsock':
      // A peer cannot dial VMADDR_CID_ANY: publish the CID this machine answers on.
      return `${a.cid === kVsockCidAny ? localCid() : a.cid}:${a.port}`;
    default:
      return formatAddress(a);
  }
}

function localCid(): number {
  try {
    return loadNative().vsockLocalCid();
  } catch (cause) {
    if (RpcError.is(cause)) throw cause;
    throw new RpcError('UNAVAILABLE', `cannot publish a vsock listener on VMADDR_CID_ANY: this machine's CID is unknown (${(cause as Error).message}); serve vsock({ cid, port }) instead`, { cause });
  }
}

/** What a client speaks: a record of another kind is refused; `tls` is how it reaches a record of kind tls. */
export interface ExpectedKinds {
  transport: TransportKind;
  codec: CodecDescriptor;
  tls?: TlsSettings;
}

/**
 * The transport to reach a published record (its first address), refusing one whose transport or
 * codec kind is not what this client speaks (it could not talk to it).
 */
export function transportFromRecord(name: string, record: StoredRecord, expected: ExpectedKinds): TransportDescriptor {
  checkKinds(name, record, expected);
  return transportFor(record.transport_kind, record.map['0'] ?? Object.values(record.map)[0], expected.tls);
}

/**
 * The transports to reach every address of every live record under a name (one map entry per
 * serving endpoint, one record per instance), each address once. A record this client cannot talk
 * to is skipped while others are usable; when every record is such, INVALID_ARGUMENT.
 */
export function transportsFromRecords(name: string, records: StoredRecord[], expected: ExpectedKinds): TransportDescriptor[] {
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
        const transport = transportFor(record.transport_kind, address, expected.tls);
        out.set(formatAddress(transport), transport);
      } catch {
        // an address that does not parse is unreachable; the record's others still count
      }
    }
  }
  if (out.size === 0 && refused) throw refused;
  return [...out.values()];
}

function checkKinds(name: string, record: StoredRecord, expected: ExpectedKinds): void {
  if (record.transport_kind !== expected.transport || record.codec_kind !== expected.codec.kind) {
    throw new RpcError(
      'INVALID_ARGUMENT',
      `service ${name} is published as ${record.transport_kind}/${record.codec_kind}, but this client speaks ${expected.transport}/${expected.codec.kind}`,
    );
  }
}

function transportFor(kind: TransportKind, address: string, tls: TlsSettings | undefined): TransportDescriptor {
  switch (kind) {
    case 'tcp':
      return tcp(address);
    case 'tls':
      return { ...tcp(address), tls: tls ?? { requestCert: false, rejectUnauthorized: true } };
    case 'unix':
      return unix(address);
    case 'shm':
      return shm(address);
    case 'vsock': {
      const m = /^(\d{1,10}):(\d{1,10})$/.exec(address);
      if (!m) throw new RpcError('INVALID_ARGUMENT', `a published vsock address ${JSON.stringify(address)}; expected "cid:port"`);
      return vsock({ cid: Number(m[1]), port: Number(m[2]) });
    }
  }
}

/**
 * A self-managed vsock client's descriptor with its VM's CID filled in from the backend's host
 * entry; any other descriptor unchanged. INVALID_ARGUMENT when the backend keeps no host entries,
 * UNAVAILABLE when it has none for that VM.
 */
export async function resolveVsockVm(transport: TransportDescriptor, discovery: DiscoveryBackend): Promise<TransportDescriptor> {
  if (transport.kind !== 'vsock' || transport.vm === undefined) return transport;
  const { vm, ...rest } = transport;
  if (typeof discovery.lookupHost !== 'function') {
    throw new RpcError('INVALID_ARGUMENT', `vsock({ vm: ${JSON.stringify(vm)} }) needs a discovery backend with host entries (lookupHost); this one has none`);
  }
  const cid = await discovery.lookupHost(vm);
  if (cid === undefined) throw new RpcError('UNAVAILABLE', `no vsock CID is registered for VM ${JSON.stringify(vm)}`);
  if (!(Number.isInteger(cid) && cid >= 0 && cid < kVsockCidAny)) throw new RpcError('INVALID_ARGUMENT', `the host entry of VM ${JSON.stringify(vm)} holds ${String(cid)}, not a CID`);
  return { ...rest, cid } satisfies VsockDescriptor;
}
