/** Streams: async-iterable results and requests, flow control, cancellation from either side, on every transport. */
import assert from 'node:assert/strict';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Node, RpcError, isolate, shm, tcp, unix, type CallContext, type Handler, type RunningNode, type TransportDescriptor } from '../src/index.js';
import { loadNative } from '../src/native/addon.js';
import { tempDir } from './helpers.js';

const moduleHandler = new URL('./fixtures/stream-handler.js', import.meta.url);

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function* numbers(n: number, seen?: { produced: number }): AsyncGenerator<number> {
  for (let i = 0; i < n; i++) {
    if (seen) seen.produced++;
    yield i;
  }
}

async function rejectionOf(p: Promise<unknown>): Promise<RpcError> {
  try {
    await p;
  } catch (err) {
    assert.ok(RpcError.is(err), `expected an RpcError, got ${err}`);
    return err;
  }
  assert.fail('expected a rejection');
}

/** Resolves with what `fn` signals, or rejects after `ms`. */
function within<T>(ms: number, what: string, fn: (done: (v: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
    fn((v) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}

describe('streams: a main-thread handler over tcp', function () {
  this.timeout(60_000);
  let server: RunningNode;
  let node: RunningNode<any, any>;
  /** What the current test's handler does; set per test. */
  let serve: (req: any, ctx: CallContext) => unknown;

  before(async () => {
    const handler: Handler = { onRequest: (req, ctx) => serve(req, ctx) as any };
    server = await new Node().serve(tcp('127.0.0.1:0'), handler).start();
    node = await new Node().connect(tcp(server.addresses[0] as any)).start();
  });

  after(async () => {
    await node?.close();
    await server?.close();
  });

  it('yields every item of an async generator, in order', async () => {
    serve = (n: number) => numbers(n);
    assert.deepEqual(await collect(node.client.stream(1000)), Array.from({ length: 1000 }, (_, i) => i));
    assert.deepEqual(await collect(node.client.stream(0)), []);
  });

  it('keeps a slow consumer of a 100k-item stream from letting the producer run ahead (bounded by the window)', async () => {
    const seen = { produced: 0 };
    serve = () => numbers(100_000, seen);
    const window = 16;
    let consumed = 0;
    let maxAhead = 0;
    for await (const x of node.client.stream<number>(null, { window })) {
      assert.equal(x, consumed);
      consumed++;
      maxAhead = Math.max(maxAhead, seen.produced - consumed);
      if (consumed % 5000 === 0) await sleep(20); // a consumer that stalls now and then …
      else if (consumed % 7 === 0) await new Promise(setImmediate); // … and is slow otherwise
    }
    assert.equal(consumed, 100_000);
    // The producer is pulled only against credit: at most `window` items sent and not taken, plus one in hand.
    assert.ok(maxAhead <= window + 1, `the producer ran ${maxAhead} items ahead of the consumer (window ${window})`);
    assert.ok(maxAhead >= window / 2, `the test never filled the window (max ${maxAhead} ahead): it proves nothing`);
  });

  it('a consumer that stops reading pauses the producer at the window', async () => {
    const seen = { produced: 0 };
    serve = () => numbers(1_000_000, seen);
    const it = node.client.stream<number>(null, { window: 8 });
    assert.deepEqual(await it.next(), { value: 0, done: false });
    await sleep(300);
    assert.ok(seen.produced <= 8 + 2, `the producer made ${seen.produced} items while the consumer took 1`);
    await it.return!();
  });

  it('break stops the producer (its finally runs, its signal aborts)', async () => {
    let finallyRan!: (v: string) => void;
    const stopped = new Promise<string>((resolve) => (finallyRan = resolve));
    serve = (_req, ctx) =>
      (async function* () {
        try {
          for (let i = 0; ; i++) yield i;
        } finally {
          finallyRan(ctx.signal.aborted ? (ctx.signal.reason as RpcError).code : 'not aborted');
        }
      })();
    let got = 0;
    for await (const _ of node.client.stream(null)) if (++got === 5) break;
    assert.equal(await within(5000, 'the producer stopping', (done) => stopped.then(done)), 'CANCELLED');
    assert.equal(node.client.pending, 0);
  });

  it('an aborted signal rejects the consumer with CANCELLED and stops the producer', async () => {
    let finallyRan!: () => void;
    const stopped = new Promise<void>((resolve) => (finallyRan = resolve));
    serve = () =>
      (async function* () {
        try {
          for (let i = 0; ; i++) {
            await sleep(5);
            yield i;
          }
        } finally {
          finallyRan();
        }
      })();
    const ac = new AbortController();
    const it = node.client.stream<number>(null, { signal: ac.signal });
    assert.equal((await it.next()).value, 0);
    ac.abort();
    const err = await rejectionOf(it.next());
    assert.equal(err.code, 'CANCELLED');
    await within(5000, 'the producer stopping', (done) => stopped.then(() => done(undefined)));
  });

  it('timeoutMs covers the whole stream (TIMEOUT)', async () => {
    serve = () =>
      (async function* () {
        for (let i = 0; ; i++) {
          await sleep(20);
          yield i;
        }
      })();
    const err = await rejectionOf(collect(node.client.stream(null, { timeoutMs: 150 })));
    assert.equal(err.code, 'TIMEOUT');
  });

  it("delivers the items sent before a producer's error, then the error as REMOTE", async () => {
    serve = () =>
      (async function* () {
        yield 1;
        yield 2;
        throw new RangeError('ran out');
      })();
    const got: number[] = [];
    const err = await rejectionOf(
      (async () => {
        for await (const x of node.client.stream<number>(null)) got.push(x);
      })(),
    );
    assert.deepEqual(got, [1, 2]);
    assert.equal(err.code, 'REMOTE');
    assert.equal(err.remote?.name, 'RangeError');
    assert.match(err.message, /ran out/);
  });

  it('an item the codec cannot encode fails the stream and releases the producer', async () => {
    let released!: () => void;
    const stopped = new Promise<void>((resolve) => (released = resolve));
    serve = () =>
      (async function* () {
        try {
          yield 1;
          yield 2n ** 70n; // too large for msgpack: the codec refuses it
          yield 3;
        } finally {
          released();
        }
      })();
    const got: number[] = [];
    const err = await rejectionOf(
      (async () => {
        for await (const x of node.client.stream<number>(null)) got.push(x);
      })(),
    );
    assert.deepEqual(got, [1]);
    assert.ok(['REMOTE', 'INVALID_ARGUMENT'].includes(err.code), err.code);
    await within(5000, "the producer's finally", (done) => stopped.then(() => done(undefined)));
  });

  it('sends an async-iterable request as a stream; the handler reads it as one', async () => {
    serve = async (req: AsyncIterable<number>) => {
      let sum = 0;
      for await (const x of req) sum += x;
      return sum;
    };
    assert.equal(await node.client.call(numbers(10_000)), (9999 * 10_000) / 2);
  });

  it("a slow handler reading a request stream keeps the caller's generator from running ahead", async () => {
    const seen = { produced: 0 };
    let maxAhead = 0;
    serve = async (req: AsyncIterable<number>) => {
      let taken = 0;
      for await (const _ of req) {
        taken++;
        maxAhead = Math.max(maxAhead, seen.produced - taken);
        if (taken % 100 === 0) await sleep(5);
      }
      return taken;
    };
    assert.equal(await node.client.call(numbers(3000, seen)), 3000);
    // The callee grants 32 items of credit at a time (kDefaultWindow).
    assert.ok(maxAhead <= 32 + 1, `the caller's generator ran ${maxAhead} items ahead`);
  });

  it('streams both ways at once', async () => {
    serve = (req: AsyncIterable<number>) =>
      (async function* () {
        for await (const x of req) yield x * 2;
      })();
    assert.deepEqual(await collect(node.client.stream(numbers(500))), Array.from({ length: 500 }, (_, i) => i * 2));
  });

  it('a request stream that throws rejects the call with CANCELLED (cause kept) and cancels it at the handler', async () => {
    let handlerSaw!: (code: string) => void;
    const saw = new Promise<string>((resolve) => (handlerSaw = resolve));
    serve = async (req: AsyncIterable<number>) => {
      try {
        for await (const _ of req) {
          // reads until the stream fails
        }
        handlerSaw('ended normally');
      } catch (err) {
        handlerSaw((err as RpcError).code);
      }
      return 'done';
    };
    const err = await rejectionOf(
      node.client.call(
        (async function* () {
          yield 1;
          throw new TypeError('source broke');
        })(),
      ),
    );
    assert.equal(err.code, 'CANCELLED');
    assert.equal((err.cause as Error).message, 'source broke');
    assert.equal(await within(5000, 'the handler seeing the cancel', (done) => saw.then(done)), 'CANCELLED');
  });

  it('a handler that stops reading a request stream stops the caller sending (its generator is returned)', async () => {
    let callerFinally!: () => void;
    const callerStopped = new Promise<void>((resolve) => (callerFinally = resolve));
    let releaseHandler!: () => void;
    const handlerMayAnswer = new Promise<void>((resolve) => (releaseHandler = resolve));
    serve = async (req: AsyncIterable<number>) => {
      for await (const x of req) if (x === 3) break;
      await handlerMayAnswer; // answer only once the caller's source has been stopped by the credit-0 message
      return 'enough';
    };
    const answer = node.client.call(
      (async function* () {
        try {
          for (let i = 0; ; i++) yield i;
        } finally {
          callerFinally();
        }
      })(),
    );
    await within(5000, "the caller's generator being returned", (done) => callerStopped.then(() => done(undefined)));
    releaseHandler();
    assert.equal(await answer, 'enough');
  });

  it('refuses a stream() of a handler that answers with one value, and a call() of one that answers with a stream', async () => {
    serve = () => 42;
    const e1 = await rejectionOf(collect(node.client.stream(null)));
    assert.equal(e1.code, 'INVALID_ARGUMENT');
    assert.match(e1.message, /call\(\)/);
    let released = false;
    serve = () =>
      (async function* () {
        try {
          yield 1;
        } finally {
          released = true;
        }
      })();
    const e2 = await rejectionOf(node.client.call(null));
    assert.equal(e2.code, 'INVALID_ARGUMENT');
    assert.match(e2.message, /stream\(\)/);
    void released; // a generator never started has no finally to run; return() still ends it
  });

  it('refuses a bad window at once', async () => {
    for (const window of [0, -1, 1.5, 70_000]) {
      const err = await rejectionOf(node.client.stream(null, { window }).next());
      assert.equal(err.code, 'INVALID_ARGUMENT');
    }
  });

  it('calls and streams run side by side on one connection', async () => {
    serve = (req: any) => (req === 'stream' ? numbers(2000) : req);
    const [items, ...answers] = await Promise.all([collect(node.client.stream('stream')), ...Array.from({ length: 50 }, (_, i) => node.client.call(i))]);
    assert.equal((items as number[]).length, 2000);
    assert.deepEqual(answers, Array.from({ length: 50 }, (_, i) => i));
  });
});

describe('streams: a connection that closes mid-stream', function () {
  this.timeout(30_000);

  it('rejects the consumer with CLOSED when the server goes away', async () => {
    const server = await new Node()
      .serve(tcp('127.0.0.1:0'), {
        onRequest: () =>
          (async function* () {
            for (let i = 0; ; i++) {
              await sleep(5);
              yield i;
            }
          })(),
      })
      .start();
    await using node = await new Node().connect<any, any>(tcp(server.addresses[0] as any)).start();
    const it = node.client.stream<number>(null);
    assert.equal((await it.next()).value, 0);
    await server.close();
    const err = await rejectionOf(collect(it));
    assert.equal(err.code, 'CLOSED');
    // A stream asked for once no connection is left fails at its first next(), with why.
    const late = await rejectionOf(node.client.stream(null).next());
    assert.equal(late.code, 'CLOSED');
  });

  it('a reconnecting client with no server fails a stream fast with UNAVAILABLE, and streams again after a restart', async () => {
    const first = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (n: number) => numbers(n) }).start();
    const address = first.addresses[0] as { host: string; port: number };
    await using node = await new Node().connect<number, number>(tcp(address), { reconnect: { initialDelayMs: 20, maxDelayMs: 100 } }).start();
    assert.deepEqual(await collect(node.client.stream(3)), [0, 1, 2]);
    await first.close();
    await within(5000, 'the client noticing', (done) => {
      const check = () => (node.client.state !== 'ready' ? done(undefined) : setTimeout(check, 10));
      check();
    });
    assert.equal((await rejectionOf(node.client.stream(3).next())).code, 'UNAVAILABLE');
    await using second = await new Node().serve(tcp(address), { onRequest: (n: number) => numbers(n) }).start();
    assert.deepEqual(await collect(node.client.stream(4, { waitForReady: true, timeoutMs: 10_000 })), [0, 1, 2, 3]);
    void second;
  });
});

describe('streams: the callback direction', function () {
  this.timeout(30_000);

  it('a handler streams from the client that called it (ctx.client.stream), and the client streams to it', async () => {
    await using server = await new Node()
      .serve(tcp('127.0.0.1:0'), {
        async onRequest(req: number, ctx: CallContext) {
          let sum = 0;
          for await (const x of ctx.client.stream<number>(req)) sum += x;
          return sum;
        },
      })
      .start();
    await using node = await new Node()
      .connect<number, number>(tcp(server.addresses[0] as any), { handler: { onRequest: (n: number) => numbers(n) } })
      .start();
    assert.equal(await node.client.call(100), (99 * 100) / 2);
  });
});

/** Every transport: a module handler in the connection worker (or an isolate plugin) serving streams. */
const transports: { name: string; make(dir: string): TransportDescriptor; serverless?: boolean; skip?: () => string | undefined }[] = [
  { name: 'tcp', make: () => tcp('127.0.0.1:0') },
  { name: 'unix', make: (dir) => unix(path.join(dir, 's.sock')) },
  {
    name: 'shm',
    make: () => shm(`st-${process.pid}-${Date.now() % 100000}`),
    skip: () => {
      try {
        loadNative();
        return undefined;
      } catch {
        return 'native addon not built';
      }
    },
  },
  { name: 'isolate', make: () => isolate(moduleHandler), serverless: true },
];

for (const t of transports) {
  describe(`streams over ${t.name}, handler in the worker`, function () {
    this.timeout(60_000);
    let server: RunningNode | undefined;
    let node: RunningNode<any, any>;
    let tmp: ReturnType<typeof tempDir>;

    before(async function () {
      const why = t.skip?.();
      if (why) this.skip();
      tmp = tempDir();
      const descriptor = t.make(tmp.dir);
      if (t.serverless) {
        node = await new Node().connect(descriptor).start();
      } else {
        server = await new Node().serve(descriptor, moduleHandler).start();
        node = await new Node().connect(server.addresses[0].kind === 'tcp' ? tcp(server.addresses[0] as any) : descriptor).start();
      }
    });

    after(async () => {
      await node?.close();
      await server?.close();
      tmp?.remove();
    });

    it('result stream, with a small window', async () => {
      const items = await collect(node.client.stream({ type: 'Count', n: 5000 }, { window: 4 }));
      assert.equal(items.length, 5000);
      assert.equal(items[4999], 4999);
    });

    it('request stream and both ways', async () => {
      async function* withOp(op: string, n: number) {
        yield { op };
        yield* numbers(n);
      }
      assert.equal(await node.client.call(withOp('sum', 1000)), (999 * 1000) / 2);
      assert.deepEqual(await collect(node.client.stream(withOp('double', 100))), Array.from({ length: 100 }, (_, i) => i * 2));
    });

    it('break cancels; the connection stays usable', async () => {
      let n = 0;
      for await (const _ of node.client.stream({ type: 'Count', n: 1_000_000 })) if (++n === 10) break;
      assert.deepEqual(await node.client.call({ type: 'Echo' }), { type: 'Echo' });
      assert.equal(node.client.pending, 0);
    });

    it("a producer's error arrives after its items", async () => {
      const got: number[] = [];
      const err = await rejectionOf(
        (async () => {
          for await (const x of node.client.stream<number>({ type: 'FailAfter', n: 3 })) got.push(x);
        })(),
      );
      assert.deepEqual(got, [0, 1, 2]);
      assert.equal(err.code, 'REMOTE');
    });
  });
}
