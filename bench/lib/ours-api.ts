/**
 * The slice of ogurpchik's public API (DESIGN §2) that the bench uses, and its loader.
 *
 * The runtime is imported dynamically so that the bench still builds and runs its baselines
 * while `src/index.ts` does not exist yet or fails to load; the type import below holds this
 * slice to the real exports as soon as the module exists.
 */

// @ts-ignore -- until src/index.ts exists this resolves to `any`; afterwards the check is real.
import type * as Real from '../../src/index.js';

/** An address from `running.addresses`, as far as the bench reads it. */
export interface OursAddress {
  kind: string;
  host?: string;
  port?: number;
  path?: string;
  name?: string;
}

/** The handler object of DESIGN §2; a module URL instead loads `handler` inside the worker. */
export interface OursHandler {
  onRequest(req: unknown, ctx: unknown): Promise<unknown>;
}

export interface OursClient {
  /** Resolves with the peer handler's return value. */
  call(req: unknown): Promise<unknown>;
}

export interface OursRunning {
  readonly client?: OursClient;
  readonly addresses: readonly OursAddress[];
  close(): Promise<void>;
}

export interface OursBuilder {
  serve(transport: unknown, handler: OursHandler | URL, options?: { threads?: number }): OursBuilder;
  connect(transport: unknown): OursBuilder;
  start(): Promise<OursRunning>;
}

/** The NodeOptions the bench sets: the idle policy (NodeOptions.idle, idleTuning). */
export interface OursNodeOptions {
  idle?: OursIdle;
  idleTuning?: { spinMicros?: number; pollMicros?: number; peerPollMicros?: number; clientPollMicros?: number };
}

/** NodeOptions.idle's presets. */
export type OursIdle = 'sleep' | 'balanced' | 'latency' | 'spin';

export interface OursApi {
  Node: new (options?: OursNodeOptions) => OursBuilder;
  /** `options.tls`: TLS settings (PEM text or files), as in the real `tcp()`. */
  tcp(address: string, options?: { tls?: Record<string, unknown> }): unknown;
  unix(path: string): unknown;
  /** The worker-isolate transport; optional so the rest of the suite runs without it. */
  isolate?(module: URL, options?: { closeTimeoutMs?: number }): unknown;
  /** The shared-memory transport (needs the native addon); optional like `isolate`. */
  shm?(name: string, options?: { capacity?: number }): unknown;
}

// Compile-time check: the real module must offer at least this slice (a no-op while it is `any`).
type Satisfies<T extends U, U> = T;
export type RealApiCheck = Satisfies<typeof Real, OursApi>;

/** Where the compiled runtime lives, relative to this compiled file (dist/bench/lib/). */
const kRuntimeUrl = new URL('../../src/index.js', import.meta.url);

/** Imports the runtime; throws with a one-line reason when it is missing or incomplete. */
export async function loadOurs(): Promise<OursApi> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(kRuntimeUrl.href)) as Record<string, unknown>;
  } catch (err) {
    const code = (err as { code?: string }).code;
    const reason = code === 'ERR_MODULE_NOT_FOUND' ? 'dist/src/index.js not found' : (err as Error).message;
    throw new Error(`cannot import ../src/index.js (${reason})`);
  }
  const missing = ['Node', 'tcp', 'unix'].filter((name) => typeof mod[name] !== 'function');
  if (missing.length > 0) throw new Error(`../src/index.js does not export ${missing.join(', ')}`);
  return mod as unknown as OursApi;
}

/** The transport descriptor for an address a server child reported. */
export function transportFor(api: OursApi, address: OursAddress, options: { shmCapacity?: number; tls?: Record<string, unknown> } = {}): unknown {
  if (address.kind === 'tcp') return api.tcp(`${address.host}:${address.port}`, options.tls === undefined ? undefined : { tls: options.tls });
  if (address.kind === 'unix' && address.path !== undefined) return api.unix(address.path);
  if (address.kind === 'shm' && address.name !== undefined && api.shm !== undefined) {
    return api.shm(address.name, options.shmCapacity === undefined ? {} : { capacity: options.shmCapacity });
  }
  throw new Error(`unexpected address ${JSON.stringify(address)}`);
}
