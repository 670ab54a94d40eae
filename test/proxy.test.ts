/** Typed service proxies: defineService / serveMethods on one side, client.proxy / ctx.client.proxy on the other. */
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { Node, RpcError, defineService, isolate, json, serveMethods, tcp, type Address, type RunningNode, type ServiceProxy } from '../src/index.js';
import { GreeterImpl, caller, greeter, type Greeter } from './fixtures/greeter.js';
import { rejectionOf } from './helpers.js';

const callerImpl = { shout: (text: string) => `${text.toUpperCase()}!` };

async function rpcError(p: Promise<unknown>): Promise<RpcError> {
  const err = await rejectionOf(p);
  assert.ok(RpcError.is(err), `expected an RpcError, got ${err}`);
  return err;
}

describe('typed proxies, main-thread handler over tcp', function () {
  this.timeout(20_000);
  let server: RunningNode;
  let node: RunningNode;
  let api: ServiceProxy<Greeter>;

  before(async () => {
    server = await new Node().serve(tcp('127.0.0.1:0'), greeter.serve((ctx) => new GreeterImpl(ctx))).start();
    node = await new Node().connect(tcp(server.addresses[0] as Address & { host: string; port: number }), { handler: caller.serve(callerImpl) }).start();
    api = greeter.proxy(node.client);
  });
  after(async () => {
    await node?.close();
    await server?.close();
  });

  it('calls methods with their arguments and resolves with their results', async () => {
    assert.equal(await api.echo('hi'), 'hi');
    assert.equal(await api.add(2, 3), 5);
    assert.deepEqual(await api.where(), { threadId: 0, transport: 'tcp', deadline: false });
    // The same through client.proxy<Api>(), with per-proxy call options reaching the handler's ctx.
    const viaClient = node.client.proxy<Greeter>({ service: 'greeter', timeoutMs: 5000 });
    assert.deepEqual(await viaClient.where(), { threadId: 0, transport: 'tcp', deadline: true });
    assert.deepEqual(await api.$with({ timeoutMs: 5000 }).where(), { threadId: 0, transport: 'tcp', deadline: true });
  });

  it('speaks a wire shape a plain call() can use: { method, args, service? }', async () => {
    assert.equal(await node.client.call({ method: 'echo', args: ['plain'], service: 'greeter' }), 'plain');
    assert.equal(await node.client.call({ method: 'add', args: [1, 1] }), 2); // no service: served
    assert.deepEqual(await node.client.call({ method: 'where' }), { threadId: 0, transport: 'tcp', deadline: false }); // no args
    assert.deepEqual(await node.client.call({ method: 'where', args: null }), { threadId: 0, transport: 'tcp', deadline: false });
  });

  it('refuses an unknown method, and every name that is no method of the service, with UNIMPLEMENTED', async () => {
    const names = ['nope', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'secret', 'danger'];
    for (const method of names) {
      const err = await rpcError(node.client.call({ method, args: [] }));
      assert.equal(err.code, 'UNIMPLEMENTED', `${method}: ${err.code} ${err.message}`);
      assert.ok(err.message.includes(JSON.stringify(method)), err.message);
      assert.ok(err.message.includes('"greeter"'), err.message);
    }
    assert.equal(GreeterImpl.getterRan, false, 'an accessor ran');
    // An untyped proxy reaches any name, and gets the same answer.
    const err = await rpcError(node.client.proxy().nope(1, 2));
    assert.equal(err.code, 'UNIMPLEMENTED');
    assert.match(err.message, /has no method "nope"/);
  });

  it('refuses a call to another service with UNIMPLEMENTED', async () => {
    const err = await rpcError(node.client.proxy<Greeter>({ service: 'other' }).echo('x'));
    assert.equal(err.code, 'UNIMPLEMENTED');
    assert.match(err.message, /serves "greeter", not "other"/);
  });

  it('refuses a request that is no method call with INVALID_ARGUMENT', async () => {
    const bad: [unknown, RegExp][] = [
      ['echo', /is a map \{ method, args \}, got string/],
      [null, /got null/],
      [[1, 2], /got an array/],
      [new Uint8Array(2), /got bytes/],
      [{}, /`method` is a non-empty string, got undefined/],
      [{ method: 5 }, /got number/],
      [{ method: '' }, /non-empty string, got string/],
      [{ method: 'echo', args: 'x' }, /`args` of a call to "echo" are an array, got string/],
      [{ method: 'echo', args: { 0: 'x' } }, /are an array, got an object/],
      [{ method: 'echo', args: ['x'], service: 7 }, /`service` is a string when present, got number/],
      [{ method: 'sum', args: new Array(5000).fill(1) }, /carries 5000 arguments; at most 4096/],
    ];
    for (const [request, message] of bad) {
      const err = await rpcError(node.client.call(request));
      assert.equal(err.code, 'INVALID_ARGUMENT', `${inspect(request)}: ${err.code} ${err.message}`);
      assert.match(err.message, message);
    }
  });

  it("keeps a method's thrown error as REMOTE with its message, name, code and own properties", async () => {
    const err = await rpcError(api.fail('no greeting today'));
    assert.equal(err.code, 'REMOTE');
    assert.equal(err.message, 'no greeting today');
    assert.equal(err.remote?.name, 'TypeError');
    assert.deepEqual(err.data, { statusCode: 418 });
    const coded = await rpcError(api.failWithCode());
    assert.equal(coded.code, 'REMOTE');
    assert.equal(coded.remote?.code, 'BUSY');
    assert.equal(coded.message, 'the greeter is busy');
  });

  it('takes per-call options through $with: a deadline gives TIMEOUT, an abort CANCELLED, and the method sees its signal abort (TIMEOUT or CANCELLED at a deadline)', async () => {
    const timedOut = await rpcError(api.$with({ timeoutMs: 100 }).wait('t1', 10_000));
    assert.equal(timedOut.code, 'TIMEOUT');
    const controller = new AbortController();
    const pending = api.$with({ signal: controller.signal }).wait('t2', 10_000);
    setTimeout(() => controller.abort(), 50);
    assert.equal((await rpcError(pending)).code, 'CANCELLED');
    // At a timeout the method's signal aborts with TIMEOUT (its own deadline) or CANCELLED (the
    // caller's cancel frame), whichever reaches the server first; an abort gives CANCELLED only.
    for (const [tag, expected] of [['t1', /^aborted: (TIMEOUT|CANCELLED)$/], ['t2', /^aborted: CANCELLED$/]] as const) {
      let outcome: string | null = null;
      for (let i = 0; i < 100 && outcome === null; i++) {
        outcome = await api.outcome(tag);
        if (outcome === null) await new Promise((r) => setTimeout(r, 20));
      }
      assert.match(String(outcome), expected);
    }
    // $with keeps the proxy's own options: the service name still travels.
    assert.equal((await rpcError(node.client.proxy<Greeter>({ service: 'other' }).$with({ timeoutMs: 1000 }).echo('x'))).code, 'UNIMPLEMENTED');
  });

  it('calls a streaming method through $stream: items in order, break stops it at the server', async () => {
    const items: number[] = [];
    for await (const x of api.$stream.ticks(100)) items.push(x);
    assert.deepEqual(items, Array.from({ length: 100 }, (_, i) => i));
    assert.equal(await api.outcome('ticks'), 'finished');
    for await (const x of api.$with({ window: 2 }).$stream.ticks(1_000_000)) if (x === 5) break;
    let outcome: string | null = null;
    for (let i = 0; i < 100 && !outcome?.startsWith('stopped'); i++) outcome = await api.outcome('ticks');
    assert.match(outcome ?? '', /^stopped at \d+$/);
    // Called as a unary method, a streaming method is refused (its generator released).
    const err = await rpcError((node.client.proxy() as any).ticks(3));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /stream\(\)/);
  });

  it('keeps its own names: await, JSON, inspection and conversion make no call', async () => {
    const before = await api.served();
    assert.equal(await api, api); // no `then`: awaiting the proxy gives the proxy
    assert.equal((api as unknown as { then?: unknown }).then, undefined);
    assert.equal(JSON.stringify(api), '{}');
    assert.equal(String(api), '[object Object]');
    assert.equal(`${inspect(api)}`, '{}');
    assert.equal((api as unknown as Record<symbol, unknown>)[Symbol.iterator], undefined);
    assert.equal((api as unknown as Record<string, unknown>).$nothing, undefined);
    assert.equal(Object.getPrototypeOf(api), Object.prototype);
    assert.equal(api.echo, api.echo);
    const { add } = api; // a method taken off the proxy still works
    assert.equal(await add(20, 22), 42);
    assert.throws(() => ((api as unknown as Record<string, unknown>).echo = () => 'x'), TypeError);
    // Only `served` and `add` reached the server.
    assert.equal(await api.served(), before + 2);
  });

  it('calls back the other way: the handler proxies ctx.client to a service the client serves', async () => {
    assert.equal(await api.callBack('hello'), 'HELLO!');
  });

  it('refuses unusable arguments at once with INVALID_ARGUMENT', () => {
    const invalid = (fn: () => unknown, message: RegExp) =>
      assert.throws(fn, (err: unknown) => RpcError.is(err) && err.code === 'INVALID_ARGUMENT' && message.test(err.message));
    invalid(() => serveMethods(null as never), /got null/);
    invalid(() => serveMethods(5 as never), /got number/);
    invalid(() => serveMethods(class Impl {} as never), /not a class: pass an instance/);
    invalid(() => serveMethods({}, { service: '' }), /`service` is a non-empty string/);
    invalid(() => defineService(''), /the name is a non-empty string/);
    invalid(() => node.client.proxy({ service: 5 as never }), /`service` is a non-empty string, got number/);
    invalid(() => greeter.proxy(undefined as never), /needs a client with call\(\)/);
  });
});

describe('typed proxies, handler module in the worker, json codec', function () {
  this.timeout(20_000);
  let server: RunningNode;
  let node: RunningNode;
  let api: ServiceProxy<Greeter>;

  before(async () => {
    server = await new Node().serve(tcp('127.0.0.1:0'), new URL('./fixtures/greeter.js', import.meta.url), { codec: json() }).start();
    node = await new Node()
      .connect(tcp(server.addresses[0] as Address & { host: string; port: number }), { codec: json(), handler: serveMethods<typeof callerImpl>(callerImpl, { service: 'caller' }) })
      .start();
    api = node.client.proxy<Greeter>({ service: 'greeter' });
  });
  after(async () => {
    await node?.close();
    await server?.close();
  });

  it('runs the methods inside the connection worker', async () => {
    assert.equal(await api.echo('from the worker'), 'from the worker');
    assert.equal(await api.add(40, 2), 42);
    const where = await api.where();
    assert.notEqual(where.threadId, 0, 'the method ran on the main thread');
    assert.equal(where.transport, 'tcp');
  });

  it('answers refusals and errors there as on the main thread', async () => {
    assert.equal((await rpcError(node.client.call({ method: 'constructor' }))).code, 'UNIMPLEMENTED');
    const unknown = await rpcError(node.client.proxy({ service: 'greeter' }).nope());
    assert.equal(unknown.code, 'UNIMPLEMENTED');
    assert.match(unknown.message, /service "greeter" has no method "nope"/);
    assert.equal((await rpcError(node.client.call({ method: 'echo', args: 'x' }))).code, 'INVALID_ARGUMENT');
    const err = await rpcError(api.fail('from the worker'));
    assert.equal(err.code, 'REMOTE');
    assert.equal(err.message, 'from the worker');
    assert.equal(err.remote?.name, 'TypeError');
    assert.deepEqual(err.data, { statusCode: 418 });
    assert.equal((await rpcError(node.client.proxy().ticks(3))).code, 'INVALID_ARGUMENT');
    const items: number[] = [];
    for await (const x of api.$stream.ticks(5)) items.push(x);
    assert.deepEqual(items, [0, 1, 2, 3, 4]);
  });

  it('calls back from the worker through ctx.client', async () => {
    assert.equal(await api.callBack('worker'), 'WORKER!');
  });
});

it('serves a typed service from an isolate() plugin, which calls the host back through a proxy', async function () {
  this.timeout(20_000);
  await using node = await new Node().connect(isolate(new URL('./fixtures/greeter.js', import.meta.url)), { handler: caller.serve(callerImpl) }).start();
  const api = greeter.proxy(node.client);
  assert.equal(await api.echo('plugin'), 'plugin');
  const where = await api.where();
  assert.notEqual(where.threadId, 0);
  assert.equal(where.transport, 'isolate');
  assert.equal(await api.callBack('host'), 'HOST!');
  assert.equal((await rpcError(node.client.call({ method: '__proto__' }))).code, 'UNIMPLEMENTED');
});
