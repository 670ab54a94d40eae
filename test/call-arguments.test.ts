/**
 * Whatever a caller passes wrong to call(), stream(), notify() or a proxy — options that are not an
 * object, a time limit no timer holds, a signal that is not an AbortSignal, a request over
 * maxFrameBytes, a value whose reading throws — fails that call alone with an RpcError and a code,
 * the same way in each entry point: a rejected promise (a stream: its first next()), never a
 * synchronous throw, with nothing sent, nothing left pending and no timer left running. And an
 * error answer the handler's side cannot encode still reaches the caller, as an error.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { Node, RpcError, errorCodes, unix, type Handler } from '../src/index.js';
import { createCodec, json, msgpack, type Codec } from '../src/codec/index.js';
import { Session } from '../src/session/session.js';
import { rejectionOf, sleep, tempDir } from './helpers.js';

const kCodes: ReadonlySet<string> = new Set(errorCodes);
const kMax = 64 * 1024;

/** Timers alive in this thread now. */
function timers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

/** Timers alive once the test runs asynchronously (mocha arms its own timeout when the test's promise is returned). */
async function timersAtStart(): Promise<number> {
  await Promise.resolve();
  return timers();
}

/** Whether the timers alive come down to `before` within `ms` (a live client's own timers come and go). */
async function timersBackTo(before: number, ms = 2000): Promise<boolean> {
  const by = Date.now() + ms;
  while (timers() > before && Date.now() < by) await sleep(20);
  return timers() <= before;
}

/** Rejections nobody handled while `run` ran (and shortly after). */
async function unhandledDuring(run: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const listener = (reason: unknown) => void seen.push(reason);
  process.on('unhandledRejection', listener);
  try {
    await run();
    await sleep(50);
  } finally {
    process.off('unhandledRejection', listener);
  }
  return seen;
}

/** Two sessions wired to each other in memory; `sent` counts the caller's bodies. */
function pair(options: { codec?: Codec; serverCodec?: Codec; maxFrameBytes?: number; handler?: Handler }) {
  const codec = options.codec ?? createCodec(msgpack());
  const sent: Uint8Array[] = [];
  let client: Session;
  const server = new Session({
    codec: options.serverCodec ?? codec,
    peer: { transport: 'test', auth: 'none', connectionId: 1 },
    maxFrameBytes: options.maxFrameBytes,
    send: (head, payload) => {
      const body = Buffer.concat([head, payload]);
      queueMicrotask(() => client.receive(body));
    },
    handler: options.handler ?? { onRequest: answer },
  });
  client = new Session({
    codec,
    peer: { transport: 'test', auth: 'none', connectionId: 2 },
    maxFrameBytes: options.maxFrameBytes,
    send: (head, payload) => {
      const body = Buffer.concat([head, payload]);
      sent.push(body);
      queueMicrotask(() => server.receive(body));
    },
  });
  return { client, server, sent };
}

/** Echoes a request; a streaming one is answered with its count of items. */
async function answer(req: unknown): Promise<unknown> {
  if (req !== null && typeof req === 'object' && Symbol.asyncIterator in req) {
    let n = 0;
    for await (const _ of req as AsyncIterable<unknown>) n++;
    return n;
  }
  return req;
}

async function* items(...values: unknown[]): AsyncGenerator<unknown> {
  for (const v of values) yield v;
}

/** The first next() of `it`, as a settled outcome: what a for-await would see first. */
async function firstOf(it: AsyncIterator<unknown>): Promise<unknown> {
  return it.next();
}

describe('call arguments: every bad one fails its call alone, with a code', function () {
  this.timeout(20_000);

  describe('a request over maxFrameBytes', () => {
    it('fails the same way in call(), stream() and a call with a streaming request: FRAME_TOO_LARGE, nothing sent, nothing pending', async () => {
      const { client, sent } = pair({ maxFrameBytes: 1024 });
      const big = { text: 'x'.repeat(2048) };

      const before = await timersAtStart();
      const call = await rejectionOf(client.call(big, { timeoutMs: 60_000 }));
      assert.equal(call.code, 'FRAME_TOO_LARGE');
      assert.match(call.message, /a request of \d+ bytes exceeds maxFrameBytes \(1024\): not sent/);

      let it: AsyncIterator<unknown> | undefined;
      assert.doesNotThrow(() => (it = client.stream(big, { timeoutMs: 60_000 })));
      const stream = await rejectionOf(firstOf(it!));
      assert.equal(stream.code, 'FRAME_TOO_LARGE');
      assert.match(stream.message, /a request of \d+ bytes exceeds maxFrameBytes \(1024\): not sent/);
      assert.equal(timers(), before, 'no deadline timer left behind');

      // The Open of a streaming request carries no payload; its oversize item fails the call alike.
      const upload = await rejectionOf(client.call(items(1, big), { timeoutMs: 60_000 }));
      assert.equal(upload.code, 'FRAME_TOO_LARGE');

      assert.equal(sent.filter((b) => b.length > 1024).length, 0, 'nothing over the limit went out');
      assert.equal(client.pendingCount, 0);
      assert.deepEqual(await client.call('small'), 'small');
    });
  });

  describe('a signal that is not an AbortSignal', () => {
    const fakes: Array<[string, unknown]> = [
      ['a plain object', {}],
      ['a number', 5],
      ['an object that looks aborted', { aborted: true, reason: 'no' }],
      // Passes for one until it is listened to.
      ['a signal whose addEventListener throws', { aborted: false, addEventListener: () => { throw new TypeError('not a real signal'); }, removeEventListener: () => {} }],
    ];
    for (const [what, signal] of fakes) {
      it(`${what}: call(), stream() and a streaming request reject with INVALID_ARGUMENT, never throw, and leave no timer`, async () => {
        const { client, sent } = pair({});
        const options = { timeoutMs: 60_000, signal: signal as AbortSignal };
        const before = await timersAtStart();
        let call: Promise<unknown> | undefined;
        let stream: AsyncIterator<unknown> | undefined;
        let upload: Promise<unknown> | undefined;
        assert.doesNotThrow(() => (call = client.call('x', options)));
        assert.doesNotThrow(() => (stream = client.stream('x', options)));
        assert.doesNotThrow(() => (upload = client.call(items(1, 2), options)));
        for (const p of [call!, firstOf(stream!), upload!]) {
          const err = await rejectionOf(p);
          assert.ok(RpcError.is(err), `an RpcError, got ${err}`);
          assert.equal(err.code, 'INVALID_ARGUMENT');
        }
        assert.equal(timers(), before, 'no deadline timer left running');
        assert.equal(client.pendingCount, 0);
        assert.equal(sent.length, 0, 'nothing was sent');
        assert.equal(await client.call('y'), 'y');
      });
    }
  });

  describe('an error answer that cannot be encoded as it is', () => {
    for (const name of ['json', 'msgpack'] as const) {
      it(`${name}: a handler error whose message is a cycle or a bigint reaches the caller as REMOTE; nothing escapes`, async () => {
        const codec = createCodec(name === 'json' ? json() : msgpack());
        const { client } = pair({
          codec,
          handler: {
            async onRequest(req) {
              const err = new Error('replaced');
              if (req === 'cycle') {
                const loop: Record<string, unknown> = {};
                loop.self = loop;
                (err as { message: unknown }).message = loop;
              } else {
                (err as { message: unknown }).message = 10n;
              }
              throw err;
            },
          },
        });
        const unhandled = await unhandledDuring(async () => {
          const cycle = await rejectionOf(Promise.race([client.call('cycle'), sleep(2000).then(() => 'still pending')]));
          assert.equal(cycle.code, 'REMOTE');
          assert.equal(cycle.message, '[object Object]');
          const big = await rejectionOf(Promise.race([client.call('bigint'), sleep(2000).then(() => 'still pending')]));
          assert.equal(big.code, 'REMOTE');
          assert.equal(big.message, '10');
        });
        assert.deepEqual(unhandled, []);
        assert.equal(client.pendingCount, 0);
      });
    }

    it('a codec that encodes no error at all: the caller still hears (PROTOCOL), nothing escapes, the session goes on', async () => {
      const codec = createCodec(msgpack());
      const base = createCodec(msgpack());
      const broken: Codec = {
        kind: base.kind,
        inPlace: base.inPlace,
        encode: (value) => base.encode(value),
        bytesHeader: (value, target, at) => base.bytesHeader(value, target, at),
        decode: (bytes, owned) => base.decode(bytes, owned),
        decodeFrom: (bytes, start, owned) => base.decodeFrom(bytes, start, owned),
        encodeError: () => {
          throw new TypeError('this codec encodes no errors');
        },
        decodeError: (bytes) => base.decodeError(bytes),
      };
      const { client } = pair({
        codec,
        serverCodec: broken,
        handler: {
          async onRequest(req) {
            if (req === 'fail') throw new Error('no');
            return req;
          },
        },
      });
      const unhandled = await unhandledDuring(async () => {
        const err = await rejectionOf(Promise.race([client.call('fail'), sleep(2000).then(() => 'still pending')]));
        assert.equal(err.code, 'PROTOCOL');
        assert.equal(await client.call('ok'), 'ok');
      });
      assert.deepEqual(unhandled, []);
    });

    it('an error over maxFrameBytes is replaced by FRAME_TOO_LARGE, as an oversize answer is', async () => {
      const { client } = pair({
        maxFrameBytes: 4096,
        handler: {
          onRequest() {
            throw new Error('x'.repeat(8192));
          },
        },
      });
      const err = await rejectionOf(client.call('go'));
      assert.equal(err.code, 'FRAME_TOO_LARGE');
      assert.match(err.message, /the handler's error of \d+ bytes exceeds maxFrameBytes \(4096\)/);
    });
  });

  describe('values whose reading throws (a hostile Proxy)', () => {
    const hostile = () =>
      new Proxy(
        {},
        {
          get() {
            throw new Error('no reading me');
          },
          getPrototypeOf() {
            throw new Error('no reading me');
          },
          has() {
            throw new Error('no reading me');
          },
          ownKeys() {
            throw new Error('no reading me');
          },
        },
      );

    it('as a request, options or answer: an RpcError for that call, the session goes on', async () => {
      const { client } = pair({
        handler: {
          onRequest(req) {
            return req === 'hostile' ? hostile() : req;
          },
        },
      });
      let request: Promise<unknown> | undefined;
      assert.doesNotThrow(() => (request = client.call(hostile())));
      assert.equal((await rejectionOf(request!)).code, 'INVALID_ARGUMENT');
      const options = await rejectionOf(client.call('x', hostile() as never));
      assert.equal(options.code, 'INVALID_ARGUMENT');
      assert.equal((await rejectionOf(firstOf(client.stream('x', hostile() as never)))).code, 'INVALID_ARGUMENT');
      const answer = await rejectionOf(client.call('hostile'));
      assert.equal(answer.code, 'INVALID_ARGUMENT');
      assert.match(answer.message, /the handler's answer cannot be sent/);
      assert.equal(client.closedWith, undefined);
      assert.equal(await client.call('after'), 'after');
    });
  });

  describe("a Client's entry points (one live server pair)", () => {
    let tmp: ReturnType<typeof tempDir>;
    let server: Awaited<ReturnType<ReturnType<Node['serve']>['start']>>;
    let node: Awaited<ReturnType<ReturnType<Node['connect']>['start']>>;
    let served = 0;

    before(async () => {
      tmp = tempDir();
      const socket = path.join(tmp.dir, 's.sock');
      server = await new Node({ maxFrameBytes: kMax })
        .serve(unix(socket), {
          async onRequest(req: unknown) {
            served++;
            if (req === 'stream') return items(1, 2, 3);
            if (req === 'wait') await sleep(300);
            return answer(req);
          },
          onEvent() {},
        })
        .start();
      node = await new Node({ maxFrameBytes: kMax }).connect<any, any>(unix(socket)).start();
    });

    after(async () => {
      await node?.close();
      await server?.close();
      tmp?.remove();
    });

    it('an oversize stream() request fails alone (FRAME_TOO_LARGE); the connection and a call in flight go on', async () => {
      const waiting = node.client.call('wait');
      const err = await rejectionOf(firstOf(node.client.stream({ text: 'x'.repeat(kMax) })));
      assert.equal(err.code, 'FRAME_TOO_LARGE');
      assert.equal(await waiting, 'wait');
      const got: unknown[] = [];
      for await (const item of node.client.stream('stream')) got.push(item);
      assert.deepEqual(got, [1, 2, 3]);
    });

    it('options that are not usable: INVALID_ARGUMENT from call(), stream() and proxy(), nothing sent', async () => {
      const bad: unknown[] = [
        5,
        'fast',
        null,
        true,
        () => {},
        [],
        new AbortController().signal,
        { timeoutMs: NaN },
        { timeoutMs: -1 },
        { timeoutMs: 2 ** 31 },
        { timeoutMs: '100' },
        { signal: {} },
        { signal: 'abort' },
        { idempotent: 'yes' },
        { waitForReady: 1 },
      ];
      const servedBefore = served;
      const before = await timersAtStart();
      for (const options of bad) {
        const shown = typeof options === 'function' ? 'a function' : options instanceof AbortSignal ? 'a signal' : JSON.stringify(options);
        let call: Promise<unknown> | undefined;
        let stream: AsyncIterator<unknown> | undefined;
        assert.doesNotThrow(() => (call = node.client.call('x', options as never)), shown);
        assert.doesNotThrow(() => (stream = node.client.stream('stream', options as never)), shown);
        assert.equal((await rejectionOf(call!)).code, 'INVALID_ARGUMENT', `call() with ${shown}`);
        assert.equal((await rejectionOf(firstOf(stream!))).code, 'INVALID_ARGUMENT', `stream() with ${shown}`);
        if (options !== null && typeof options === 'object') {
          assert.throws(() => node.client.proxy(options as never), (e: unknown) => RpcError.is(e) && e.code === 'INVALID_ARGUMENT', `proxy() with ${shown}`);
        }
      }
      for (const window of [0, -1, 1.5, 65537, '8']) {
        assert.equal((await rejectionOf(firstOf(node.client.stream('stream', { window } as never)))).code, 'INVALID_ARGUMENT', `window ${window}`);
      }
      assert.throws(() => node.client.proxy().$with(5 as never), (e: unknown) => RpcError.is(e) && e.code === 'INVALID_ARGUMENT');
      assert.equal(served, servedBefore, 'no request reached the server');
      assert.equal(node.client.pending, 0);
      assert.ok(await timersBackTo(before), 'no timer left running');
      assert.equal(await node.client.call('fine', { timeoutMs: 1000 }), 'fine');
    });

    it('a proxy passes every call option on, idempotent included', async () => {
      const seen: unknown[] = [];
      const fake = {
        call: (request: unknown, options: unknown) => {
          seen.push(options);
          return Promise.resolve(request);
        },
        stream: () => items(),
      };
      const { createProxy } = await import('../src/service/proxy.js');
      const api = createProxy<any>(fake as never, { service: 'svc', timeoutMs: 100, idempotent: true, waitForReady: true });
      await api.echo(1);
      assert.deepEqual(seen, [{ timeoutMs: 100, idempotent: true, waitForReady: true }]);
    });

    it('any options object (property): call(), stream() and notify() settle with an answer or an RpcError with a code; nothing leaks', async () => {
      const signal = fc.oneof(
        fc.constant(undefined),
        fc.anything(),
        fc.constant(0).map(() => new AbortController().signal),
        fc.constant(0).map(() => AbortSignal.abort('gone')),
        fc.constant(0).map(() => ({ aborted: false, addEventListener() {}, removeEventListener() {} })),
      );
      const time = fc.oneof(fc.constant(undefined), fc.constant(Infinity), fc.integer({ min: -5, max: 3000 }), fc.double(), fc.anything());
      const flag = fc.oneof(fc.constant(undefined), fc.boolean(), fc.anything());
      const options = fc.oneof(
        fc.constant(undefined),
        fc.anything(),
        fc.record({ timeoutMs: time, signal, idempotent: flag, waitForReady: flag, window: fc.oneof(fc.integer({ min: -2, max: 70_000 }), fc.anything()) }, { requiredKeys: [] }),
      );
      const before = await timersAtStart();
      const unhandled = await unhandledDuring(async () => {
        await fc.assert(
          fc.asyncProperty(options, fc.constantFrom('call', 'stream', 'upload', 'notify'), fc.anything(), async (opts, how, event) => {
            let outcome: Promise<unknown>;
            try {
              if (how === 'call') outcome = node.client.call('x', opts as never);
              else if (how === 'upload') outcome = node.client.call(items(1, 2), opts as never);
              else if (how === 'notify') outcome = node.client.notify(event);
              else {
                const it = node.client.stream('stream', opts as never);
                outcome = (async () => {
                  const got: unknown[] = [];
                  for await (const item of it) got.push(item);
                  return got;
                })();
              }
            } catch (err) {
              assert.fail(`${how}() threw synchronously: ${err}`);
            }
            try {
              const value = await outcome;
              if (how === 'call') assert.equal(value, 'x');
              if (how === 'upload') assert.equal(value, 2);
              if (how === 'stream') assert.deepEqual(value, [1, 2, 3]);
            } catch (err) {
              assert.ok(RpcError.is(err) && kCodes.has(err.code), `${how}() failed with something other than an RpcError with a code: ${err}`);
            }
          }),
          { numRuns: 150 },
        );
      });
      assert.deepEqual(unhandled, []);
      assert.ok(await timersBackTo(before), 'no timer left running');
      assert.equal(node.client.pending, 0, 'nothing left pending');
      assert.equal(await node.client.call('still'), 'still');
    });
  });
});
