/**
 * ogurpchik's side of the suite: the same echo scenarios as the raw baseline, through the public
 * API. The server is a child process (ours-server.ts); the client is a `Node` in the bench
 * process, so its connection I/O runs in this process's worker.
 */

import { join } from 'node:path';
import { ChildStartError, startServerChild } from './lib/children.js';
import { withDeadline } from './lib/measure.js';
import { transportFor, type OursAddress, type OursApi, type OursIdle, type OursNodeOptions, type OursRunning } from './lib/ours-api.js';
import { kPayloadBytes, type Subject, type TransportKind } from './lib/subject.js';

export type HandlerMode = 'worker' | 'main';

/** The runtime is present but could not serve or connect: the bench skips ours and says why. */
export class OursUnavailableError extends Error {
  override readonly name = 'OursUnavailableError';
}

export interface OursSubjectOptions {
  transport: TransportKind;
  handler: HandlerMode;
  /** Holds the Unix socket; removed by the caller. */
  dir: string;
  /** When set, the server's main thread stays busy in CPU slices of this length. */
  busySliceMs?: number;
  /** Distinguishes several servers in one `dir`. */
  name?: string;
  /** shm only: the service name (unique per server) and each ring's data capacity in bytes. */
  shmName?: string;
  shmCapacity?: number;
  /** tcp only: serve inside TLS with this certificate and key (PEM files); the client trusts `ca` (PEM text). */
  tls?: { certFile: string; keyFile: string; ca: string };
  /** Overrides the label shown in the table. */
  label?: string;
  /** NodeOptions.idle of both the server and the client (default: the runtime's). */
  idle?: OursIdle;
  /** NodeOptions.idle of the client alone, over `idle` (default: the runtime's). */
  clientIdle?: OursIdle;
}

const kConnectTimeoutMs = 10_000;
const kCloseTimeoutMs = 5_000;

const handlerLabel: Record<HandlerMode, string> = {
  worker: 'worker handler',
  main: 'main-thread handler',
};

/** The opt-in preset measured beside the defaults (NodeOptions.idle on both ends): it adds a peer poll window on both ends. */
export const kPeerPollIdle: OursIdle = 'latency';
/** The key of that subject: sections show it beside their targets, not against them. */
export const kPeerPollKey = 'ours-worker-peer-poll';

/** Ours with a worker handler and the opt-in 'latency' preset on both ends. */
export function startOursPeerPolling(api: OursApi, options: Omit<OursSubjectOptions, 'handler' | 'name' | 'label' | 'idle'>): Promise<Subject> {
  return startOursSubject(api, {
    ...options,
    handler: 'worker',
    name: kPeerPollKey,
    idle: kPeerPollIdle,
    label: `ours worker handler, idle '${kPeerPollIdle}' both ends`,
  });
}

/** The key of ours with a client whose connection worker sleeps at once (client idle 'sleep'): shown beside the targets, not against them. */
export const kClientSleepsKey = 'ours-worker-client-sleeps';

/** Ours with a worker handler and a client whose connection worker sleeps at once (idle 'sleep': the default before the client poll window). */
export function startOursClientSleeping(api: OursApi, options: Omit<OursSubjectOptions, 'handler' | 'name' | 'label' | 'clientIdle'>): Promise<Subject> {
  return startOursSubject(api, {
    ...options,
    handler: 'worker',
    name: kClientSleepsKey,
    clientIdle: 'sleep',
    label: "ours worker handler, client idle 'sleep' (client worker sleeps at once)",
  });
}

/** Starts an ogurpchik echo server child and connects a client Node to it. */
export async function startOursSubject(api: OursApi, options: OursSubjectOptions): Promise<Subject> {
  const name = options.name ?? `ours-${options.handler}`;
  const args = ['--kind', options.transport, '--handler', options.handler];
  if (options.transport === 'unix') args.push('--path', join(options.dir, `${name}.sock`));
  if (options.transport === 'shm') {
    if (options.shmName === undefined) throw new Error('startOursSubject: shm needs shmName');
    args.push('--name', options.shmName);
    if (options.shmCapacity !== undefined) args.push('--capacity', String(options.shmCapacity));
  }
  if (options.busySliceMs !== undefined) args.push('--busy-slice-ms', String(options.busySliceMs));
  if (options.tls !== undefined) args.push('--tls-cert', options.tls.certFile, '--tls-key', options.tls.keyFile);
  if (options.idle !== undefined) args.push('--idle', options.idle);

  let server;
  try {
    server = await startServerChild(new URL('./ours-server.js', import.meta.url), args, {
      label: `ours ${options.transport} server (${handlerLabel[options.handler]})`,
    });
  } catch (err) {
    if (err instanceof ChildStartError && err.reason === 'reported') throw new OursUnavailableError(err.message);
    throw err;
  }

  let running: OursRunning;
  try {
    const descriptorOptions = {
      ...(options.shmCapacity === undefined ? {} : { shmCapacity: options.shmCapacity }),
      ...(options.tls === undefined ? {} : { tls: { ca: options.tls.ca } }),
    };
    const clientIdle = options.clientIdle ?? options.idle;
    const nodeOptions: OursNodeOptions = clientIdle === undefined ? {} : { idle: clientIdle };
    running = await connectWithin(api, server.address, descriptorOptions, nodeOptions, kConnectTimeoutMs);
  } catch (err) {
    await server.stop();
    throw err;
  }
  const client = running.client;
  if (client === undefined) {
    await running.close();
    await server.stop();
    throw new OursUnavailableError('client start() resolved without a client');
  }

  let closed = false;
  return {
    key: name,
    label: options.label ?? `ours ${handlerLabel[options.handler]}`,
    transport: options.transport,
    // A fresh payload per call: the runtime may transfer (detach) what it is given.
    call: () => client.call(new Uint8Array(kPayloadBytes)),
    callBytes: (payload) => client.call(payload),
    close: async () => {
      if (closed) return;
      closed = true;
      try {
        await withDeadline(running.close(), kCloseTimeoutMs, 'ours client close()');
      } finally {
        await server.stop();
      }
    },
  };
}

/** `start()` errors mean "not available yet"; a `start()` that hangs is a bench failure. */
async function connectWithin(
  api: OursApi,
  address: OursAddress,
  descriptorOptions: { shmCapacity?: number; tls?: Record<string, unknown> },
  nodeOptions: OursNodeOptions,
  ms: number,
): Promise<OursRunning> {
  let timer: NodeJS.Timeout | undefined;
  const starting = (async () => {
    try {
      return await new api.Node(nodeOptions).connect(transportFor(api, address, descriptorOptions)).start();
    } catch (err) {
      throw new OursUnavailableError(`client start() failed: ${(err as Error).message}`);
    }
  })();
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`ours client start() did not resolve within ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([starting, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
