/**
 * The server side of typed services: `serveMethods(impl)` turns an object of methods into a
 * Handler that answers method calls (`{ method, args }`, src/protocol/method-call.ts). It runs
 * wherever a Handler runs: on the main thread, or exported from a handler module in the worker.
 */
import { RpcError, type ErrorCode } from '../errors.js';
import { checkServiceOption, parseMethodCall, quote } from '../protocol/method-call.js';
import { kRefusal } from '../session/session.js';
import type { CallContext, Handler, ServiceFactory } from '../types.js';
import type { ProxyOptions, ServiceImpl } from './types.js';

/** Options of serveMethods: the name of the service it serves (the same option as a proxy's, see `ProxyOptions.service`). */
export type ServeMethodsOptions = Pick<ProxyOptions, 'service'>;

/**
 * A Handler whose `onRequest` calls `impl`'s method named by the request, with the request's
 * arguments, `this` being `impl`. `impl` is an object (its own methods and its class's, never
 * Object.prototype's), or a `(ctx) => object` factory called once per request, for methods that
 * need the call's `ctx`. Refusals reach the caller with their own code: an unknown method (or a
 * name like `constructor`, `__proto__`, `toString`, or a member that is no function) `UNIMPLEMENTED`,
 * a request that is no method call `INVALID_ARGUMENT`; what a method throws reaches it as `REMOTE`.
 * The handler does not use `this`: spread it to add an `onEvent`.
 */
export function serveMethods<Api = unknown>(impl: ServiceImpl<Api> | ServiceFactory<ServiceImpl<Api>>, options: ServeMethodsOptions = {}): Handler<unknown, unknown> {
  const service = checkServiceOption(options, 'serveMethods');
  if (typeof impl === 'function' && /^class\b/.test(Function.prototype.toString.call(impl))) {
    throw new RpcError('INVALID_ARGUMENT', 'serveMethods() takes an object or a (ctx) => object factory, not a class: pass an instance');
  }
  if (impl === null || (typeof impl !== 'object' && typeof impl !== 'function')) {
    throw new RpcError('INVALID_ARGUMENT', `serveMethods() takes an object of methods or a (ctx) => object factory, got ${impl === null ? 'null' : typeof impl}`);
  }
  const factory = typeof impl === 'function' ? (impl as ServiceFactory<object>) : undefined;
  const label = service === undefined ? 'this service' : `service ${quote(service)}`;

  function onRequest(request: unknown, ctx: CallContext): unknown {
    let call: ReturnType<typeof parseMethodCall>;
    try {
      call = parseMethodCall(request);
    } catch (err) {
      throw refusal(err as RpcError);
    }
    const { method, args } = call;
    if (service !== undefined && call.service !== undefined && call.service !== service) {
      throw refusal(new RpcError('UNIMPLEMENTED', `this peer serves ${quote(service)}, not ${quote(call.service)} (method ${quote(method)})`));
    }
    const target = factory === undefined ? (impl as object) : factory(ctx);
    if (target === null || (typeof target !== 'object' && typeof target !== 'function')) {
      throw new RpcError('INVALID_ARGUMENT', `the service factory returned ${target === null ? 'null' : typeof target}, not an object of methods`);
    }
    const fn = findMethod(target, method);
    if (fn === undefined) throw refusal(new RpcError('UNIMPLEMENTED', `${label} has no method ${quote(method)}`));
    // A result stream (an async iterable) goes back as it is: the session serves it to stream().
    return fn.apply(target, args);
  }

  return { onRequest };
}

/** A refusal by the dispatcher (not an error of the method): the caller sees its code, not REMOTE. */
function refusal(err: RpcError): RpcError;
function refusal(code: ErrorCode, message: string): RpcError;
function refusal(codeOrErr: RpcError | ErrorCode, message?: string): RpcError {
  const err = typeof codeOrErr === 'string' ? new RpcError(codeOrErr, message ?? '') : codeOrErr;
  Object.defineProperty(err, kRefusal, { value: true });
  return err;
}

/**
 * The function `name` names on `target`: an own property, or one of its class's (its prototype
 * chain up to Object.prototype). Names that Object.prototype has (`constructor`, `__proto__`,
 * `toString`, `hasOwnProperty`, …) are never looked up, and accessors are never run.
 */
function findMethod(target: object, name: string): ((...args: unknown[]) => unknown) | undefined {
  if (name in Object.prototype) return undefined;
  for (let o: object | null = target; o !== null && o !== Object.prototype && o !== Function.prototype; o = Object.getPrototypeOf(o)) {
    const descriptor = Object.getOwnPropertyDescriptor(o, name);
    if (descriptor !== undefined) return typeof descriptor.value === 'function' ? descriptor.value : undefined;
  }
  return undefined;
}
