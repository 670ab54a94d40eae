/**
 * The client side of typed services: a proxy whose every method sends `{ method, args }` through
 * `call()`. `Api` exists only as a type, so the proxy knows no names in advance: a JS Proxy turns
 * any name it is asked for into a method, except the names it keeps for itself.
 */
import { RpcError, messageOf } from '../errors.js';
import { checkServiceOption, methodCall } from '../protocol/method-call.js';
import { callOptionsError } from '../call-options.js';
import type { PeerClient, StreamOptions } from '../types.js';
import type { ProxyOptions, ServiceProxy, UntypedApi } from './types.js';

/**
 * A typed proxy over `client` (anything with `call`). Its methods may be taken off it
 * (`const { echo } = api`); `then`, `toJSON`, Object.prototype's names and `$`-names are never
 * sent, so `await api` is `api` itself and `JSON.stringify(api)` makes no call.
 */
export function createProxy<Api = UntypedApi>(client: Pick<PeerClient, 'call' | 'stream'>, options: ProxyOptions = {}): ServiceProxy<Api> {
  const service = checkServiceOption(options, 'proxy');
  if (client === null || typeof client !== 'object' || typeof client.call !== 'function') {
    throw new RpcError('INVALID_ARGUMENT', 'a proxy needs a client with call(): a Client, ctx.client or a PeerClient');
  }
  // Refused here, once, rather than by every call the proxy makes.
  const refused = callOptionsError(options, true);
  if (refused !== undefined) throw refused;
  // Every call option travels to each call (idempotent, waitForReady too), `service` in the payload.
  let callOptions: StreamOptions;
  try {
    const { service: _service, ...rest } = options as ProxyOptions;
    callOptions = rest;
  } catch (err) {
    throw new RpcError('INVALID_ARGUMENT', `the proxy's options could not be read: ${messageOf(err)}`, { cause: err });
  }
  const $with = (more: StreamOptions): ServiceProxy<Api> => {
    if (more !== undefined && (more === null || typeof more !== 'object')) throw new RpcError('INVALID_ARGUMENT', '$with() takes an options object');
    return createProxy<Api>(client, { ...options, ...more, service });
  };
  let $stream: object | undefined;
  const own = {
    $with: () => $with,
    $stream: () => ($stream ??= streamingProxy(client, service, callOptions)),
  };
  return methodProxy(own, (name) => (...args: unknown[]) => client.call(methodCall(name, args, service), callOptions)) as ServiceProxy<Api>;
}

/** `api.$stream`: every name it is asked for (but the reserved ones) is a method called with `client.stream()`. */
function streamingProxy(client: Pick<PeerClient, 'stream'>, service: string | undefined, options: StreamOptions): object {
  if (typeof client.stream !== 'function') throw new RpcError('INVALID_ARGUMENT', 'this client has no stream(): it cannot call streaming methods');
  return methodProxy({}, (name) => (...args: unknown[]) => client.stream(methodCall(name, args, service), options));
}

/**
 * A read-only object that turns any name it is asked for into a method (made once per name by
 * `make`), except its `own` members and the reserved names, which are never sent.
 */
function methodProxy(own: Record<string, () => unknown>, make: (name: string) => (...args: unknown[]) => unknown): object {
  const methods = new Map<string, (...args: unknown[]) => unknown>();
  return new Proxy(
    {},
    {
      get(target, name, receiver) {
        if (typeof name !== 'string') return undefined;
        if (Object.hasOwn(own, name)) return own[name]();
        if (isReserved(name)) return Reflect.get(target, name, receiver);
        let method = methods.get(name);
        if (method === undefined) {
          method = make(name);
          methods.set(name, method);
        }
        return method;
      },
      set: () => false,
      defineProperty: () => false,
      deleteProperty: () => false,
    },
  );
}

/** The runtime twin of the type ReservedName. */
function isReserved(name: string): boolean {
  return name === 'then' || name === 'toJSON' || name.startsWith('$') || name in Object.prototype;
}
