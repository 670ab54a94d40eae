/** One typed definition of a service, used on both sides: `svc.serve(impl)` and `svc.proxy(client)`. */
import { RpcError } from '../errors.js';
import type { CallOptions, Handler, PeerClient, ServiceFactory } from '../types.js';
import { createProxy } from './proxy.js';
import { serveMethods } from './serve.js';
import type { ServiceImpl, ServiceProxy } from './types.js';

/** A service described by the interface `Api`; `name`, when given, travels with every call and is checked by the server. */
export interface ServiceDefinition<Api> {
  /** The service's name, or undefined for an unnamed service. */
  readonly name: string | undefined;
  /** A Handler serving `Api` with `impl` (an object of methods, or a per-request `(ctx) => object`); see `serveMethods`. */
  serve(impl: ServiceImpl<Api> | ServiceFactory<ServiceImpl<Api>>): Handler<unknown, unknown>;
  /** A typed proxy calling `Api` through `client` (a node's `client`, or a handler's `ctx.client`); `options` are each call's defaults. */
  proxy(client: Pick<PeerClient, 'call' | 'stream'>, options?: CallOptions): ServiceProxy<Api>;
}

/** Defines the service `Api` (an interface of methods; only its type matters), optionally named. */
export function defineService<Api>(name?: string): ServiceDefinition<Api> {
  if (name !== undefined && (typeof name !== 'string' || name.length === 0)) {
    throw new RpcError('INVALID_ARGUMENT', `defineService(name): the name is a non-empty string when given, got ${typeof name}`);
  }
  const service = name;
  return Object.freeze({
    name: service,
    serve: (impl: ServiceImpl<Api> | ServiceFactory<ServiceImpl<Api>>) => serveMethods<Api>(impl, { service }),
    proxy: (client: Pick<PeerClient, 'call' | 'stream'>, options: CallOptions = {}) => createProxy<Api>(client, { ...options, service }),
  });
}
