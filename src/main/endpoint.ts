/**
 * One endpoint of a client: an address, served by one connection task at a time, and where it is
 * in its life. idle → connecting → ready; a failed attempt goes to transient-failure and tries
 * again after a delay; a ready connection that drops goes to transient-failure and tries again at
 * once (or after a delay, when it had not lived for `maxDelayMs`). Without `reconnect`, a failure
 * or drop is final: the endpoint goes to closed and stays there. The Channel moves endpoints
 * between these states; this file holds the states and what is read off them.
 */
import type { RpcError } from '../errors.js';
import type { Session } from '../session/session.js';
import { formatAddress, type TransportDescriptor } from '../transport/descriptors.js';
import type { RemoteTask } from './remote-task.js';

/** Where one endpoint is: `ready` ones take calls. */
export type EndpointState = 'idle' | 'connecting' | 'ready' | 'transient-failure' | 'closed';

/**
 * The client as a whole: `ready` when any endpoint is, else `connecting` when any is, else
 * `transient-failure` when any is waiting to retry; `idle` with no endpoint (discovery lists none
 * right now); `closed` once closed, or when every endpoint is closed for good (no reconnect).
 */
export type ClientState = EndpointState;

/** The payload of a client's `state` event: one endpoint changed state. */
export interface ClientStateEvent {
  /** The endpoint, as an address (`127.0.0.1:4000`, a socket path, `shm:<name>`). */
  endpoint: string;
  state: EndpointState;
  previous: EndpointState;
  /** The client's state after this change. */
  client: ClientState;
  /** Why, for `transient-failure` and `closed` (the connection's close reason or the attempt's error). */
  error?: RpcError;
}

/** One endpoint as `client.endpoints` reports it. */
export interface EndpointInfo {
  endpoint: string;
  state: EndpointState;
  /** Calls in flight on its connection. */
  pending: number;
}

/** One endpoint in RunningNode.stats(): its EndpointInfo, and the frames of its current connection. */
export interface EndpointStats extends EndpointInfo {
  /** Frames received and sent on its current connection (0 while it has none). */
  framesIn: number;
  framesOut: number;
  /**
   * The main↔worker ring pair its current connection rides (undefined while it has none): every
   * connection that one pool thread hosts for this thread shares one.
   */
  ringPair?: number;
  /** True when its connection is shm's direct path: this thread reads and writes the shared-memory rings itself (no ring pair, no worker hop). */
  direct?: true;
}

/** One address of a client and its current connection; the Channel owns it and changes its state. */
export class Endpoint {
  readonly key: string;
  state: EndpointState = 'idle';
  /** The task of the current connection, while ready. */
  task: RemoteTask | undefined;
  /** The attempt in progress. */
  opening: Promise<void> | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Consecutive failed attempts (a connection that dropped young counts as one): sets the next delay. */
  failures = 0;
  readyAt = 0;
  /** Why it last failed or closed. */
  error: RpcError | undefined;
  /** Still named by discovery; an endpoint that is not is never reconnected. */
  wanted = true;
  /** Taken out of the channel's list. */
  removed = false;

  constructor(readonly transport: TransportDescriptor) {
    this.key = formatAddress(transport);
  }

  /** The session of its connection while ready, else undefined. */
  get session(): Session | undefined {
    return this.state === 'ready' ? this.task!.clientSession : undefined;
  }

  /** This endpoint as `client.endpoints` reports it. */
  info(): EndpointInfo {
    return { endpoint: this.key, state: this.state, pending: this.session?.pendingCount ?? 0 };
  }
}

/** The client's state from its endpoints' (see ClientState); `closed` once the client is. */
export function clientState(endpoints: readonly Endpoint[], closed: boolean): ClientState {
  if (closed) return 'closed';
  const states = new Set(endpoints.map((e) => e.state));
  if (states.has('ready')) return 'ready';
  if (states.has('connecting')) return 'connecting';
  if (states.has('transient-failure')) return 'transient-failure';
  if (states.has('closed')) return 'closed';
  return 'idle';
}

/** Every endpoint with its state and last error's code, for error messages. */
export function describeEndpoints(endpoints: readonly Endpoint[]): string {
  if (endpoints.length === 0) return 'no endpoint is known';
  return endpoints.map((e) => `${e.key} ${e.state}${e.error ? `: ${e.error.code}` : ''}`).join(', ');
}
