/** The `Client` a running node calls its servers with: a thin face over its channel of endpoints. */
import { RpcError } from '../errors.js';
import { callOptionsError } from '../call-options.js';
import type { CallOptions, PeerClient, StreamOptions } from '../types.js';
import { createProxy } from '../service/proxy.js';
import type { ProxyOptions, ServiceProxy, UntypedApi } from '../service/types.js';
import type { Channel } from './channel.js';
import type { ClientState, ClientStateEvent, EndpointInfo } from './endpoint.js';

/**
 * Calls the server(s) this node connected to: one or more endpoints, each one connection, calls
 * spread over the ready ones. Every method goes through the channel's one "pick a ready session" path.
 */
export class Client<Req = unknown, Res = unknown, Ev = unknown> implements PeerClient<Req, Res, Ev> {
  readonly #channel: Channel;

  /** @internal */
  constructor(channel: Channel) {
    this.#channel = channel;
  }

  /**
   * Sends a request to a ready endpoint; resolves with the response or rejects with an RpcError
   * (TIMEOUT, CANCELLED, REMOTE, CLOSED, UNAVAILABLE while no connection is ready, …). An async
   * iterable request is sent as a stream of items.
   */
  call(request: Req | AsyncIterable<Req>, options?: CallOptions): Promise<Res> {
    // The plain call skips use()'s closure: one allocation fewer on the hottest path.
    const session = options === undefined ? this.#channel.readySession() : undefined;
    if (session !== undefined) return session.call(request);
    // Checked before an endpoint is picked or waited for: bad options fail at once, whatever the connections do.
    const refused = callOptionsError(options);
    if (refused !== undefined) return Promise.reject(refused);
    return this.#channel.use(options, (s, o) => s.call(request, o));
  }

  /**
   * Calls a handler that answers with an async iterable and yields its items, with flow control
   * (at most `window` unread). `break`, `return()`, `signal` or `timeoutMs` cancel it at the server.
   * The endpoint is picked like a call's; no endpoint ready makes the first `next()` reject.
   */
  stream<Item = Res>(request: Req | AsyncIterable<Req>, options?: StreamOptions): AsyncIterableIterator<Item> {
    const refused = callOptionsError(options, true);
    if (refused !== undefined) return deferredIterator(Promise.reject(refused));
    return deferredIterator(this.#channel.use(options, async (session, o) => session.stream(request, o as StreamOptions | undefined)));
  }

  /** Sends a one-way event to a ready endpoint's `onEvent`; resolves once it is queued for writing, in order. */
  notify(event: Ev): Promise<void> {
    return this.#channel.use(undefined, (session) => session.notify(event));
  }

  /** A typed proxy of the service `Api` the server serves: `await api.echo('x')` calls its method `echo` (see `serveMethods`). */
  proxy<Api = UntypedApi>(options?: ProxyOptions): ServiceProxy<Api> {
    return createProxy<Api>(this, options);
  }

  /** Calls in flight, plus calls waiting for a connection. */
  get pending(): number {
    return this.#channel.pending;
  }

  /**
   * Why the client can take no more calls, once it cannot: closed, or, without reconnect, every
   * connection gone (e.g. code BUSY from a one-to-one server, CLOSED when the server went away).
   */
  get closedWith(): RpcError | undefined {
    return this.#channel.closedWith;
  }

  /** The client's connectivity: 'ready' when any endpoint is (see ClientState). */
  get state(): ClientState {
    return this.#channel.state;
  }

  /** Each endpoint's address, state and calls in flight, now. */
  get endpoints(): EndpointInfo[] {
    return this.#channel.endpoints;
  }

  /** `'state'`: `listener` hears every endpoint state change (see ClientStateEvent), synchronously; a throw becomes a process warning. */
  on(event: 'state', listener: (event: ClientStateEvent) => void): this {
    this.#channel.onState(checkStateListener(event, listener));
    return this;
  }

  /** Removes a `'state'` listener. */
  off(event: 'state', listener: (event: ClientStateEvent) => void): this {
    this.#channel.offState(checkStateListener(event, listener));
    return this;
  }
}

function checkStateListener(event: string, listener: unknown): (event: ClientStateEvent) => void {
  if (event !== 'state') throw new RpcError('INVALID_ARGUMENT', `a client emits only 'state' events, got ${JSON.stringify(event)}`);
  if (typeof listener !== 'function') throw new RpcError('INVALID_ARGUMENT', 'a state listener is a function');
  return listener as (event: ClientStateEvent) => void;
}

/** An iterator over one that is still being obtained (the stream of a call that waits for an endpoint). */
function deferredIterator<T>(pending: Promise<AsyncIterableIterator<T>>): AsyncIterableIterator<T> {
  pending.catch(() => {}); // reported by next(), not as an unhandled rejection
  return {
    next: () => pending.then((it) => it.next()),
    return: (value?: unknown) =>
      pending.then(
        (it) => it.return!(value),
        () => ({ value: value as T, done: true as const }),
      ),
    throw: (err?: unknown) => pending.then((it) => it.throw!(err)),
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
