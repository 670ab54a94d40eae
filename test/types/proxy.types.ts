/**
 * Type tests of typed services, checked by `tsc --noEmit -p test/types/tsconfig.json`
 * (test/proxy-types.test.ts). Every `Expect<Equal<…>>` must hold and every `@ts-expect-error` line
 * must be an error: a change that breaks inference fails the check. Nothing here runs.
 */
import { defineService, serveMethods, type CallContext, type Client, type PeerClient, type ServiceImpl, type ServiceProxy } from '../../src/index.js';

/** True when A and B are the same type (not merely assignable either way). */
export type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
export type Expect<T extends true> = T;

interface Greeter {
  echo(text: string): string;
  add(a: number, b: number): Promise<number>;
  greet(name: string, loud?: boolean): Promise<{ text: string }>;
  sum(...values: number[]): number;
  reset(): void;
  maybe?(x: number): number;
  asProperty: (flag: boolean) => Promise<boolean[]>;
  version: string;
  then(): void;
  $secret(): void;
  events(since: number): AsyncIterable<{ at: number }>;
  eventsLater(): Promise<AsyncIterable<number>>;
  anything(): any;
  fails(): never;
}

declare const client: Client;
declare const peer: PeerClient;
declare const ctx: CallContext;

const greeter = defineService<Greeter>('greeter');
type P = ServiceProxy<Greeter>;

// ---- the proxy's type, however it is made
const api = greeter.proxy(client);
const fromClient = client.proxy<Greeter>();
const fromPeer = peer.proxy<Greeter>({ service: 'greeter', timeoutMs: 100 });
const fromCtx = ctx.client.proxy<Greeter>();
const withOptions = api.$with({ timeoutMs: 5, signal: AbortSignal.timeout(5) });
type _made = [
  Expect<Equal<typeof api, P>>,
  Expect<Equal<typeof fromClient, P>>,
  Expect<Equal<typeof fromPeer, P>>,
  Expect<Equal<typeof fromCtx, P>>,
  Expect<Equal<typeof withOptions, P>>,
  Expect<Equal<Awaited<P>, P>>, // `await api` is the proxy itself: it is no thenable
];

// ---- each method: the interface's parameters, a promise of the awaited result
type _methods = [
  Expect<Equal<P['echo'], (text: string) => Promise<string>>>,
  Expect<Equal<P['add'], (a: number, b: number) => Promise<number>>>,
  Expect<Equal<Parameters<P['greet']>, [name: string, loud?: boolean]>>,
  Expect<Equal<ReturnType<P['greet']>, Promise<{ text: string }>>>,
  Expect<Equal<P['sum'], (...values: number[]) => Promise<number>>>,
  Expect<Equal<P['reset'], () => Promise<void>>>,
  Expect<Equal<P['maybe'], (x: number) => Promise<number>>>, // optional in Api, callable on the proxy
  Expect<Equal<P['asProperty'], (flag: boolean) => Promise<boolean[]>>>,
  Expect<Equal<P['anything'], () => Promise<any>>>,
  Expect<Equal<P['fails'], () => Promise<never>>>,
  // Streaming methods are called through $stream (the proxy cannot tell them apart at run time).
  Expect<Equal<P['events'], never>>,
  Expect<Equal<P['eventsLater'], never>>,
  Expect<Equal<P['$stream']['events'], (since: number) => AsyncIterableIterator<{ at: number }>>>,
  Expect<Equal<P['$stream']['eventsLater'], () => AsyncIterableIterator<number>>>,
  Expect<Equal<keyof P['$stream'], 'events' | 'eventsLater'>>,
  // Exactly these names: no data members, no reserved names.
  Expect<Equal<keyof P, '$with' | '$stream' | 'echo' | 'add' | 'greet' | 'sum' | 'reset' | 'maybe' | 'asProperty' | 'anything' | 'fails' | 'events' | 'eventsLater'>>,
];

export async function callerSide(): Promise<void> {
  const text: string = await api.echo('x');
  const total: number = await api.add(1, 2);
  const greeting: { text: string } = await api.greet('ann', true);
  await api.greet('bob');
  await api.sum();
  await api.sum(1, 2, 3);
  const { echo } = api; // methods can be taken off the proxy
  const again: string = await echo('y');
  void [text, total, greeting, again];

  // @ts-expect-error wrong argument type
  void api.echo(1);
  // @ts-expect-error too few arguments
  void api.add(1);
  // @ts-expect-error too many arguments
  void api.echo('x', 'y');
  // @ts-expect-error a rest parameter's element type is checked
  void api.sum(1, '2');
  // @ts-expect-error no such method
  void api.nope();
  // @ts-expect-error wrong result use: echo resolves with a string
  const wrongType: number = await api.echo('x');
  // @ts-expect-error wrong result use: a method returns a promise, not its value
  const notAwaited: string = api.echo('x');
  // @ts-expect-error wrong result use: reset resolves with nothing
  const fromVoid: string = await api.reset();
  // @ts-expect-error a data member is no method
  void api.version;
  // @ts-expect-error `then` is kept by the proxy (so `await api` works), never sent
  void api.then;
  // @ts-expect-error `$` names are the proxy's own
  void api.$secret();
  // @ts-expect-error a streaming method is called through $stream, not on the proxy itself
  void api.events(1);
  for await (const e of api.$stream.events(1)) {
    const at: number = e.at;
    void at;
  }
  // @ts-expect-error $stream has only the streaming methods
  void api.$stream.echo('x');
  // @ts-expect-error a streaming method's parameters are checked too
  void api.$stream.events('1');
  // @ts-expect-error its items have the interface's type
  for await (const e of api.$stream.eventsLater()) void (e satisfies string);
  // @ts-expect-error $with takes call options
  void api.$with({ timeout: 5 });
  // @ts-expect-error a proxy's methods are read-only
  api.echo = async () => 'x';
  void [wrongType, notAwaited, fromVoid];
}

// ---- untyped: without an Api, any name is a method resolving with unknown
const untyped = client.proxy();
type _untyped = [Expect<Equal<ReturnType<typeof untyped.anything>, Promise<unknown>>>, Expect<Equal<ReturnType<typeof untyped.$with>, ServiceProxy<Record<string, (...args: any[]) => unknown>>>>];

// ---- the implementation side
const impl = {
  echo: (text: string) => text,
  add: async (a: number, b: number) => a + b,
  greet: async (name: string) => ({ text: `hi ${name}` }),
  sum: (...values: number[]) => values.reduce((a, b) => a + b, 0),
  reset() {},
  asProperty: async (flag: boolean) => [flag],
  anything: () => 1,
  fails: (): never => {
    throw new Error('always');
  },
  async *events(since: number) {
    yield { at: since };
  },
  eventsLater: async () =>
    (async function* () {
      yield 1;
    })(),
};
greeter.serve(impl);
serveMethods<Greeter>(impl);
serveMethods({ whatever: () => 1 }); // untyped: any object of methods
type _impl = [
  Expect<Equal<ServiceImpl<Greeter>['echo'], (text: string) => string | PromiseLike<string>>>,
  Expect<Equal<Parameters<NonNullable<ServiceImpl<Greeter>['maybe']>>, [x: number]>>,
  Expect<Equal<'maybe' extends keyof ServiceImpl<Greeter> ? true : false, true>>,
  Expect<Equal<'version' | 'then' | '$secret' extends keyof ServiceImpl<Greeter> ? true : false, false>>,
];

greeter.serve({
  ...impl,
  echo(text) {
    type _param = Expect<Equal<typeof text, string>>; // parameters are inferred from the interface
    return text.toUpperCase();
  },
});
greeter.serve((callCtx) => {
  type _ctx = Expect<Equal<typeof callCtx, CallContext>>; // the factory gets the request's ctx
  return { ...impl, echo: (text: string) => `${callCtx.peer.transport}: ${text}` };
});

// @ts-expect-error echo must resolve with a string
greeter.serve({ ...impl, echo: (text: string) => text.length });
// @ts-expect-error a parameter of the wrong type
greeter.serve({ ...impl, add: async (a: string, b: number) => b });
// @ts-expect-error a required method is missing
greeter.serve({ echo: impl.echo });
// @ts-expect-error the factory must return the implementation
greeter.serve(() => ({ echo: impl.echo }));
// @ts-expect-error a streaming method must yield the interface's items
greeter.serve({ ...impl, async *events(since: number) { yield { at: String(since) }; } });
// @ts-expect-error serveMethods<Api> checks against Api too
serveMethods<Greeter>({ ...impl, add: () => 'three' });
