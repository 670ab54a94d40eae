/**
 * The client side of typed services: a proxy whose every method sends `{ method, args }` through
 * `call()`. `Api` exists only as a type, so the proxy knows no names in advance: a JS Proxy turns
 * any name it is asked for into a method, except the names it keeps for itself.
 */
import { RpcError } from '../errors.js';
import { checkServiceOption, methodCall } from '../protocol/method-call.js';
import type { CallOptions, PeerClient } from '../types.js';
import type { ProxyOptions, ServiceProxy, UntypedApi } from './types.js';

type Method = (...args: unknown[]) => Promise<unknown>;

/**
 * A typed proxy over `client` (anything with `call`). Its methods may be taken off it
 * (`const { echo } = api`); `then`, `toJSON`, Object.prototype's names and `$`-names are never
 * sent, so `await api` is `api` itself and `JSON.stringify(api)` makes no call.
 */
export function createProxy<Api = UntypedApi>(client: Pick<PeerClient, 'call'>, options: ProxyOptions = {}): ServiceProxy<Api> {
  const service = checkServiceOption(options, 'proxy');
  if (client === null || typeof client !== 'object' || typeof client.call !== 'function') {
    throw new RpcError('INVALID_ARGUMENT', 'a proxy needs a client with call(): a Client, ctx.client or a PeerClient');
  }
  const callOptions: CallOptions = {};
  if (options.timeoutMs !== undefined) callOptions.timeoutMs = options.timeoutMs;
  if (options.signal !== undefined) callOptions.signal = options.signal;
  const methods = new Map<string, Method>();
  const $with = (more: CallOptions): ServiceProxy<Api> => createProxy<Api>(client, { ...options, ...more, service });
  return new Proxy({} as ServiceProxy<Api>, {
    get(target, name, receiver) {
      if (typeof name !== 'string') return undefined;
      if (name === '$with') return $with;
      if (isReserved(name)) return Reflect.get(target, name, receiver);
      let method = methods.get(name);
      if (method === undefined) {
        method = (...args: unknown[]) => client.call(methodCall(name, args, service), callOptions);
        methods.set(name, method);
      }
      return method;
    },
    set: () => false,
    defineProperty: () => false,
    deleteProperty: () => false,
  });
}

/** The runtime twin of the type ReservedName. */
function isReserved(name: string): boolean {
  return name === 'then' || name === 'toJSON' || name.startsWith('$') || name in Object.prototype;
}
