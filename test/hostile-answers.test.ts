/**
 * Answers a hostile server sends (property): in either codec, of any nesting (error cause chains
 * thousands deep, deep arrays and objects in an error's data, a deep result) and of any size up
 * to the client's frame limit and past it, every call and stream of the client settles — with a
 * value, or an RpcError of a known code — by its deadline, and `node.close()` settles whatever
 * has none. An error rebuilt from such an answer keeps the depth limits of errors we send.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { Node, RpcError, json, msgpack, tcp } from '../src/index.js';
import { errorCodes } from '../src/errors.js';
import { encodeFrame } from '../src/protocol/framing.js';
import { HeaderScratch, Kind, decodeEnvelope, encodeClose, encodeError, encodeResponse, streamHeader } from '../src/protocol/envelope.js';
import { createCodec, type Codec } from '../src/codec/index.js';
import { deferred } from '../src/deferred.js';
import { Session } from '../src/session/session.js';
import { callIdsOf } from './helpers.js';

type CodecName = 'msgpack' | 'json';
const kCodes: ReadonlySet<string> = new Set(errorCodes);
/** The client's maxFrameBytes: answers go up to it and past it. */
const kLimit = 2 * 1024 * 1024;
/** A call with a deadline has this one. */
const kCallTimeoutMs = 500;
/** What a settlement may lag its deadline (or close()) on a loaded 2-core machine. */
const kSlackMs = 2500;
/** How deep a rebuilt error's causes and data may go (we send at most 8 of each). */
const kMaxRebuiltDepth = 10;

const packr = createCodec({ kind: 'msgpack' });

/** A value nested `depth` levels deep, as an array chain or an object chain, in the codec's bytes (built without recursion). */
function deepValue(codec: CodecName, shape: 'array' | 'object', depth: number): Uint8Array {
  if (codec === 'json') {
    const text = shape === 'array' ? '['.repeat(depth) + ']'.repeat(depth) || '[]' : '{"a":'.repeat(depth) + '{}' + '}'.repeat(depth);
    return new TextEncoder().encode(text);
  }
  const level = shape === 'array' ? [0x91] : [0x81, 0xa1, 0x61];
  const out = new Uint8Array(level.length * depth + 1);
  for (let i = 0; i < depth; i++) out.set(level, i * level.length);
  out[out.length - 1] = shape === 'array' ? 0x90 : 0x80;
  return out;
}

/** What one error answer looks like; it is built level by level, its causes nested `causeDepth` deep. */
interface HostileError {
  causeDepth: number;
  name: string;
  code: string;
  origin: 'handler' | 'runtime' | undefined;
  messageBytes: number;
  /** Deep data on the outer error and on the innermost cause. */
  data: { shape: 'array' | 'object'; depth: number } | undefined;
}

/** The error payload `e` in the codec's bytes. Each level is a map whose last entries (data, cause) are appended raw. */
function errorPayload(codec: CodecName, e: HostileError): Uint8Array {
  const data = e.data === undefined ? undefined : deepValue(codec, e.data.shape, e.data.depth);
  const message = 'm'.repeat(e.messageBytes);
  const levels: Uint8Array[] = [];
  const enc = new TextEncoder();
  for (let i = 0; i <= e.causeDepth; i++) {
    const outer = i === 0;
    const innermost = i === e.causeDepth;
    const fields: Record<string, unknown> = { name: e.name, message: outer ? message : 'c', code: e.code };
    if (outer && e.origin !== undefined) fields.origin = e.origin;
    const extra: Array<[string, Uint8Array | undefined]> = [];
    if (data !== undefined && (outer || innermost)) extra.push(['data', data]);
    // The cause's own bytes follow this level's: `undefined` marks the place.
    if (!innermost) extra.push(['cause', undefined]);
    if (codec === 'json') {
      let text = JSON.stringify(fields).slice(0, -1);
      const parts: Uint8Array[] = [];
      for (const [key, raw] of extra) {
        text += `,"${key}":`;
        if (raw === undefined) continue;
        parts.push(enc.encode(text), raw);
        text = '';
      }
      parts.push(enc.encode(text));
      levels.push(concat(parts));
    } else {
      const entries = Object.entries(fields);
      const parts: Uint8Array[] = [Uint8Array.of(0x80 | (entries.length + extra.length))];
      for (const [key, value] of entries) parts.push(packr.encode(key).slice(), packr.encode(value).slice());
      for (const [key, raw] of extra) {
        parts.push(packr.encode(key).slice());
        if (raw !== undefined) parts.push(raw);
      }
      levels.push(concat(parts));
    }
  }
  // json closes each level after its cause; msgpack needs nothing after it.
  if (codec === 'json') levels.push(enc.encode('}'.repeat(e.causeDepth + 1)));
  return concat(levels);
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** What the server answers; `pick` names one of the client's calls (by index, modulo). */
type Answer =
  | { k: 'error'; pick: number; error: HostileError }
  | { k: 'response'; pick: number; shape: 'array' | 'object'; depth: number }
  | { k: 'item'; pick: number; shape: 'array' | 'object'; depth: number }
  | { k: 'end'; pick: number }
  | { k: 'close'; error: HostileError }
  | { k: 'wait' };

interface Script {
  codec: CodecName;
  answers: Answer[];
  ending: 'destroy' | 'end' | 'silent';
}

/** Plays `script` on one accepted socket; resolves once it has done all it will. */
async function play(socket: net.Socket, script: Script): Promise<void> {
  const calls = await callIdsOf(socket, { maxFrameBytes: Infinity, waitMs: 400 });
  const picked = (pick: number) => (calls.length === 0 ? 1 : calls[pick % calls.length]);
  for (const a of script.answers) {
    if (socket.destroyed) return;
    let body: Uint8Array | undefined;
    switch (a.k) {
      case 'error':
        body = encodeError(picked(a.pick), errorPayload(script.codec, a.error));
        break;
      case 'response':
        body = encodeResponse(picked(a.pick), deepValue(script.codec, a.shape, a.depth));
        break;
      case 'item':
        body = concat([streamHeader(new HeaderScratch(), Kind.Item, picked(a.pick), 1).slice(), deepValue(script.codec, a.shape, a.depth)]);
        break;
      case 'end':
        body = streamHeader(new HeaderScratch(), Kind.End, picked(a.pick), 1).slice();
        break;
      case 'close':
        body = encodeClose(errorPayload(script.codec, a.error));
        break;
      case 'wait':
        await new Promise((resolve) => setTimeout(resolve, 5));
    }
    if (body !== undefined) socket.write(encodeFrame(body));
    await new Promise(setImmediate);
  }
  if (script.ending === 'destroy') socket.destroy();
  else if (script.ending === 'end') socket.end();
}

/** How a promise settled, and when (ms after `watch`). */
interface Watched {
  what: string;
  outcome: { ok: true } | { ok: false; err: unknown } | undefined;
  at: number;
  done: Promise<void>;
}

function watch(p: Promise<unknown>, what: string): Watched {
  const t0 = performance.now();
  const w: Watched = { what, outcome: undefined, at: 0, done: Promise.resolve() };
  w.done = p.then(
    () => void ((w.outcome = { ok: true }), (w.at = performance.now() - t0)),
    (err: unknown) => void ((w.outcome = { ok: false, err }), (w.at = performance.now() - t0)),
  );
  return w;
}

/** Waits until each of `all` has settled or `ms` have passed; then each must have settled. */
async function allSettle(all: Watched[], ms: number, when: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([Promise.all(all.map((w) => w.done)), new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
  for (const w of all) assert.ok(w.outcome !== undefined, `${w.what} did not settle ${when}`);
}

/** Causes and data deeper than this are not rebuilt (counted without recursion). */
function depthOf(value: unknown): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object' || ArrayBuffer.isView(v)) continue;
    max = Math.max(max, d);
    if (max > kMaxRebuiltDepth) return max;
    for (const child of Object.values(v)) stack.push([child, d + 1]);
  }
  return max;
}

function assertKnownOutcome(w: Watched): void {
  const outcome = w.outcome!;
  if (outcome.ok) return;
  const err = outcome.err as RpcError;
  assert.ok(RpcError.is(err), `${w.what} rejected with something other than an RpcError: ${(err as Error)?.stack ?? err}`);
  assert.ok(kCodes.has(err.code), `${w.what} rejected with an unknown code ${err.code}`);
  let causes = 0;
  for (let e: unknown = err.cause; e !== undefined && causes <= kMaxRebuiltDepth; e = (e as Error).cause) {
    causes++;
    assert.ok(depthOf((e as RpcError).data ?? {}) <= kMaxRebuiltDepth, `${w.what}: a cause's data is nested deeper than ${kMaxRebuiltDepth}`);
  }
  assert.ok(causes <= kMaxRebuiltDepth, `${w.what}: its cause chain is deeper than ${kMaxRebuiltDepth}`);
  assert.ok(depthOf(err.data ?? {}) <= kMaxRebuiltDepth, `${w.what}: its data is nested deeper than ${kMaxRebuiltDepth}`);
}

const deep = fc.oneof(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 1000, max: 4000 }), fc.integer({ min: 10_000, max: 20_000 }));
const hostileError: fc.Arbitrary<HostileError> = fc.record({
  causeDepth: deep,
  name: fc.constantFrom('RpcError', 'Error', 'TypeError'),
  code: fc.constantFrom('REMOTE', 'TIMEOUT', 'NOT_A_CODE'),
  origin: fc.constantFrom('handler' as const, 'runtime' as const, undefined),
  messageBytes: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: kLimit - 1024, max: kLimit + 1024 })),
  data: fc.option(fc.record({ shape: fc.constantFrom('array' as const, 'object' as const), depth: deep }), { nil: undefined }),
});
const shape = fc.constantFrom('array' as const, 'object' as const);
const answer: fc.Arbitrary<Answer> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ k: fc.constant('error' as const), pick: fc.nat(), error: hostileError }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('response' as const), pick: fc.nat(), shape, depth: deep }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('item' as const), pick: fc.nat(), shape, depth: deep }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('end' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('close' as const), error: hostileError }) },
  { weight: 1, arbitrary: fc.constant({ k: 'wait' as const }) },
);

describe('a client against a server whose answers are hostile (property)', function () {
  this.timeout(180_000);
  let server: net.Server;
  let port: number;
  let script: Script = { codec: 'msgpack', answers: [], ending: 'silent' };
  /** The script's run on the connection of the current case: set before the client connects, settled once the server has played it. */
  let played = deferred();
  /** What the server's side threw while playing, if anything (a broken test, not a pass). */
  let playError: unknown;

  before(async () => {
    server = net.createServer((socket) => {
      const current = played;
      play(socket, script).then(current.resolve, (err) => {
        playError = err;
        current.resolve();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
  });
  after(async () => {
    await new Promise((resolve) => server?.close(resolve));
  });

  /** Connects a client of `codec`, makes `calls` calls and maybe a stream (with a deadline or not), and checks they all settle. */
  async function run(codec: CodecName, calls: number, withStream: boolean, withDeadline: boolean): Promise<Watched[]> {
    played = deferred();
    const node = await new Node({ keepAliveMs: 0, maxFrameBytes: kLimit })
      .connect(tcp({ host: '127.0.0.1', port }), { codec: codec === 'json' ? json() : msgpack() })
      .start();
    const options = withDeadline ? { timeoutMs: kCallTimeoutMs } : {};
    const work: Watched[] = [];
    try {
      for (let i = 0; i < calls; i++) work.push(watch(node.client.call({ type: 'Echo', text: `c${i}` }, options), `call ${i}`));
      if (withStream) {
        const stream = (async () => {
          for await (const item of node.client.stream({ type: 'Items' }, options)) void item;
        })();
        work.push(watch(stream, 'stream'));
      }
      if (withDeadline) await allSettle(work, kCallTimeoutMs + kSlackMs, `within ${kCallTimeoutMs} ms (its deadline) + ${kSlackMs} ms`);
      else await Promise.race([played.promise, new Promise((resolve) => setTimeout(resolve, 5000))]);
    } finally {
      await node.close();
    }
    await allSettle(work, kSlackMs, 'once node.close() had resolved');
    await Promise.race([played.promise, new Promise((resolve) => setTimeout(resolve, 5000))]);
    if (playError !== undefined) throw playError;
    work.forEach(assertKnownOutcome);
    return work;
  }

  it('a json error whose cause chain is 20000 deep settles its call and its stream, with or without a deadline (it used to leave them pending past both and past close())', async () => {
    const error: HostileError = { causeDepth: 20_000, name: 'Error', code: 'REMOTE', origin: 'handler', messageBytes: 4, data: undefined };
    for (const withDeadline of [true, false]) {
      script = { codec: 'json', answers: [{ k: 'error', pick: 0, error }, { k: 'error', pick: 1, error }], ending: 'silent' };
      await run('json', 1, true, withDeadline);
    }
  });

  for (const codec of ['msgpack', 'json'] as const) {
    it(`a ${codec} error with a cause chain 60 deep and data 30 deep (within decodeLimits.maxDepth) is rebuilt within the depth limits`, async () => {
      const error: HostileError = { causeDepth: 60, name: 'TypeError', code: 'REMOTE', origin: 'handler', messageBytes: 4, data: { shape: 'object', depth: 30 } };
      script = { codec, answers: [{ k: 'error', pick: 0, error }], ending: 'silent' };
      const [call] = await run(codec, 1, false, true);
      assert.equal(call.outcome?.ok === false && (call.outcome.err as RpcError).code, 'REMOTE');
    });

    it(`a ${codec} error nested 1000 deep, past decodeLimits.maxDepth, settles its call with PROTOCOL`, async () => {
      const error: HostileError = { causeDepth: 1000, name: 'TypeError', code: 'REMOTE', origin: 'handler', messageBytes: 4, data: { shape: 'object', depth: 1000 } };
      script = { codec, answers: [{ k: 'error', pick: 0, error }], ending: 'silent' };
      const [call] = await run(codec, 1, false, true);
      assert.equal(call.outcome?.ok === false && (call.outcome.err as RpcError).code, 'PROTOCOL');
    });
  }

  it('settles every call and stream with a value or a known RpcError by its deadline, and at close() without one, in both codecs', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('msgpack' as const, 'json' as const),
        fc.array(answer, { minLength: 1, maxLength: 6 }),
        fc.constantFrom('destroy' as const, 'end' as const, 'silent' as const),
        fc.integer({ min: 1, max: 3 }),
        fc.boolean(),
        fc.boolean(),
        async (codec, answers, ending, calls, withStream, withDeadline) => {
          script = { codec, answers, ending };
          await run(codec, calls, withStream, withDeadline);
        },
      ),
      { numRuns: 30 },
    );
  });
});

describe('a call whose answer cannot be decoded settles (whatever decoding throws)', function () {
  this.timeout(10_000);

  it('an Error, a Response or a stream answer whose decoding throws a non-RpcError (a stack overflow) settles its call with PROTOCOL, with a deadline or not', async () => {
    const real = createCodec({ kind: 'json' });
    const overflow = () => {
      throw new RangeError('Maximum call stack size exceeded');
    };
    // A codec that fails as a recursion in it would: the session must not rely on the codec's own checks.
    const codec: Codec = {
      kind: real.kind,
      inPlace: false,
      encode: (value) => real.encode(value),
      bytesHeader: () => 0,
      encodeError: (error) => real.encodeError(error),
      decode: overflow,
      decodeFrom: overflow,
      decodeError: overflow,
    };
    const sent: Uint8Array[] = [];
    const session = new Session({ codec, peer: { transport: 'test', auth: 'none', connectionId: 1 }, send: (head, payload) => void sent.push(concat([head, payload])) });
    const idOf = (body: Uint8Array) => (decodeEnvelope(body) as { id: number }).id;
    const answers = [
      (id: number) => encodeError(id, real.encode({ name: 'Error', message: 'x' })),
      (id: number) => encodeResponse(id, real.encode('x')),
    ];
    const work: Watched[] = [];
    for (const [i, answer] of answers.entries()) {
      for (const options of [{ timeoutMs: 60_000 }, {}]) {
        work.push(watch(session.call('x', options), `call ${i}`));
        session.receive(answer(idOf(sent.at(-1)!)));
        const stream = session.stream('x', options);
        work.push(watch(stream.next(), `stream ${i}`));
        session.receive(answer(idOf(sent.at(-1)!)));
      }
    }
    await allSettle(work, 1000, 'at once');
    for (const w of work) {
      assert.equal(w.outcome!.ok, false, `${w.what} resolved`);
      const err = (w.outcome as { err: RpcError }).err;
      assert.ok(RpcError.is(err) && err.code === 'PROTOCOL', `${w.what}: ${err}`);
    }
    assert.equal(session.pendingCount, 0);
    session.close(new RpcError('CLOSED', 'done'));
  });
});
