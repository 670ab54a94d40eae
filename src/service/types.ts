/**
 * The types of typed services: one interface `Api` gives a proxy's methods (each returning a
 * promise of the awaited result) and what an implementation must provide. No codegen: `Api` is
 * only a type; at run time a proxy sends `{ method, args }` (src/protocol/method-call.ts).
 */
import type { StreamOptions } from '../call-options.js';

type AnyFunction = (...args: any[]) => any;
type IsAny<T> = 0 extends 1 & T ? true : false;

/**
 * Names a proxy keeps for itself, never sent as methods: `then` (so `await proxy` is the proxy),
 * `toJSON`, Object.prototype's members, and every name starting with `$` (the proxy's own, e.g. `$with`).
 */
export type ReservedName = 'then' | 'toJSON' | '__proto__' | keyof Object | `$${string}`;

type ParamsOf<F> = F extends (...args: infer A) => any ? A : never;
type ReturnOf<F> = F extends (...args: any[]) => infer R ? R : never;

/** True when a method's result is an async iterable: a streaming method, called through `$stream`. */
type IsStreaming<R> = IsAny<R> extends true ? false : [Awaited<R>] extends [never] ? false : [Awaited<R>] extends [AsyncIterable<unknown>] ? true : false;

/** The keys of `Api` a proxy can call: string-named function members, less the reserved names. */
export type MethodName<Api> = {
  [K in keyof Api]-?: K extends ReservedName ? never : K extends string ? (NonNullable<Api[K]> extends AnyFunction ? K : never) : never;
}[keyof Api];

/** The methods of `Api` that answer once (not streaming). */
export type UnaryMethodName<Api> = { [K in MethodName<Api>]: IsStreaming<ReturnOf<NonNullable<Api[K]>>> extends true ? never : K }[MethodName<Api>];

/** The methods of `Api` whose result is an `AsyncIterable`. */
export type StreamingMethodName<Api> = Exclude<MethodName<Api>, UnaryMethodName<Api>>;

/** The parameters of method `K` of `Api`. */
export type MethodParams<Api, K extends MethodName<Api>> = ParamsOf<NonNullable<Api[K]>>;

/** The result of method `K` of `Api`, awaited: what the caller's promise resolves with. */
export type MethodResult<Api, K extends MethodName<Api>> = Awaited<ReturnOf<NonNullable<Api[K]>>>;

/** The item type of streaming method `K` of `Api` (its result is an `AsyncIterable` of these). */
export type MethodItem<Api, K extends MethodName<Api>> = MethodResult<Api, K> extends AsyncIterable<infer T> ? T : never;

/**
 * What the proxy itself gives for a streaming method: nothing callable. The proxy cannot tell at
 * run time which methods stream (`Api` is only a type), so they are called through `api.$stream`.
 */
export type StreamingMethodPending = never;

/** Options of a proxy: which service it calls, and defaults for each call's options (`window` applies to `$stream` calls). */
export interface ProxyOptions extends StreamOptions {
  /**
   * The service's name: a proxy sends it with every call (`service` on the wire); serveMethods
   * refuses a call naming another service with UNIMPLEMENTED (a call naming none is served).
   */
  service?: string;
}

/** The proxy's own members, beside `Api`'s methods. */
export interface ProxyControls<Api> {
  /** A proxy over the same client whose calls use these options (merged over this proxy's), e.g. `{ timeoutMs, signal }`. */
  $with(options: StreamOptions): ServiceProxy<Api>;
  /**
   * The streaming methods: `for await (const x of api.$stream.watch(…))` calls `watch` with
   * `client.stream()` and yields its items (flow control, `break` cancels at the server).
   */
  readonly $stream: StreamingProxy<Api>;
}

/** The streaming methods of `Api`, each returning an async iterator over its items. */
export type StreamingProxy<Api> = {
  readonly [K in StreamingMethodName<Api>]: (...args: MethodParams<Api, K>) => AsyncIterableIterator<MethodItem<Api, K>>;
};

/**
 * A typed client of `Api`: each method sends `{ method, args }` through `call()` and returns a
 * promise of its awaited result; it rejects with an `RpcError` like any call.
 */
export type ServiceProxy<Api> = ProxyControls<Api> & {
  readonly [K in UnaryMethodName<Api>]: (...args: MethodParams<Api, K>) => Promise<MethodResult<Api, K>>;
} & {
  readonly [K in StreamingMethodName<Api>]: StreamingMethodPending;
};

/**
 * What serves `Api`: each method takes the same parameters and returns its result or a promise
 * of it; a streaming method returns an async iterable (an `async *` method). Optional methods of
 * `Api` stay optional (a missing one answers UNIMPLEMENTED).
 */
export type ServiceImpl<Api> = {
  [K in keyof Api as K extends MethodName<Api> ? K : never]: ImplMethod<Api, K & MethodName<Api>>;
};

/** One method of an implementation: `Api`'s parameters, its awaited result or a promise of it. */
type ImplMethod<Api, K extends MethodName<Api>> = (...args: MethodParams<Api, K>) => MethodResult<Api, K> | PromiseLike<MethodResult<Api, K>>;

/** An `Api` with no declared methods: every name is a method taking anything and resolving with `unknown`. */
export type UntypedApi = Record<string, (...args: any[]) => unknown>;
