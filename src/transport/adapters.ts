/** Turns a descriptor into its adapter, inside the connection worker. */
import { RpcError } from '../errors.js';
import type { TransportDescriptor } from './descriptors.js';
import type { IdleWindows } from '../idle.js';
import { shmTransport, type ShmAdapterOptions } from './shm.js';
import { tcpTransport, type TcpAdapterOptions } from './tcp.js';
import type { TransportAdapter } from './types.js';
import { unixTransport, type UnixAdapterOptions } from './unix.js';
import { vsockTransport } from './vsock.js';

export async function adapterFor(d: TransportDescriptor): Promise<TransportAdapter> {
  switch (d.kind) {
    case 'tcp':
      return tcpTransport;
    case 'unix':
      return unixTransport;
    case 'custom': {
      let mod: { transport?: TransportAdapter };
      try {
        mod = await import(d.module);
      } catch (cause) {
        throw new RpcError('INVALID_ARGUMENT', `custom transport module ${d.module} failed to load: ${(cause as Error).message}`, { cause });
      }
      const t = mod.transport;
      if (!t || typeof t.connect !== 'function' || typeof t.listen !== 'function') {
        throw new RpcError('INVALID_ARGUMENT', `custom transport module ${d.module} must export \`transport\` with connect() and listen()`);
      }
      return t;
    }
    case 'shm':
      return shmTransport;
    case 'vsock':
      return vsockTransport;
    case 'isolate':
      throw new RpcError('INVALID_ARGUMENT', 'an isolate() plugin can only be connected to, not served');
    default:
      throw new RpcError('INVALID_ARGUMENT', `unknown transport kind ${JSON.stringify((d as { kind?: unknown }).kind)}`);
  }
}

/** What the task knows beyond a descriptor, for the adapters that use it. */
export interface AdapterContext {
  /** Time limit of a transport's own handshake (TLS), ms. */
  handshakeTimeoutMs: number;
  /** The task's idle windows: an adapter's rings (shm) poll for peerPollMicros and spin for spinMicros. */
  idle: IdleWindows;
  /** tcp and unix listeners of serve(..., { threads }): the shared listening socket to adopt a duplicate of, instead of binding. */
  listenFd?: number;
}

/** The options an adapter receives for a descriptor: tcp also gets the time limit of a TLS handshake, shm the idle strategy of its rings. */
export function adapterOptions(d: TransportDescriptor, context: AdapterContext): unknown {
  const adopt = context.listenFd === undefined ? {} : { listenFd: context.listenFd };
  if (d.kind === 'tcp') return { ...d, handshakeTimeoutMs: context.handshakeTimeoutMs, ...adopt } satisfies TcpAdapterOptions;
  if (d.kind === 'unix') return { ...d, ...adopt } satisfies UnixAdapterOptions;
  if (d.kind === 'shm') return { ...d, pollMicros: context.idle.peerPollMicros, spinMicros: context.idle.spinMicros } satisfies ShmAdapterOptions;
  return d.kind === 'custom' ? d.options : d;
}
