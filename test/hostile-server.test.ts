/**
 * A client against a server that speaks the protocol badly (property): whatever frames come back
 * (answers with valid or garbage payloads, answers and stream frames for ids nobody asked for,
 * calls back with garbage, unknown kinds, random bytes, a Close with any payload), and however the
 * server then ends (closes, half-closes, or falls silent), every call, stream and notify of the
 * client settles: resolved, or rejected with an RpcError of a known code. Nothing is thrown
 * uncaught, nothing hangs, and the process's other connections are served as before.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { Node, RpcError, tcp, type RunningNode } from '../src/index.js';
import { errorCodes } from '../src/errors.js';
import { createCodec } from '../src/codec/index.js';
import { encodeFrame } from '../src/protocol/framing.js';
import {
  HeaderScratch,
  Kind,
  creditHeader,
  encodeClose,
  encodeError,
  encodeEvent,
  encodePing,
  encodeRequest,
  encodeResponse,
  streamHeader,
} from '../src/protocol/envelope.js';
import { callIdsOf } from './helpers.js';

const codec = createCodec();
const kCodes: ReadonlySet<string> = new Set(errorCodes);
/** A silent server's calls end by their own time limit, this long. */
const kCallTimeoutMs = 400;
/** Everything must have settled this long after the server's last act. */
const kSettleMs = 5000;

const bytes = fc.uint8Array({ maxLength: 40 });
const payload = fc.oneof(
  bytes,
  fc.string({ maxLength: 12 }).map((text) => codec.encode({ type: 'Echo', text })),
  fc.constant(codec.encode({ code: 'REMOTE', name: 'Error', message: 'from the server' })),
  fc.constant(codec.encode({ code: 'NOT_A_CODE', name: 42, message: { no: 1 } })),
);
const id = fc.oneof(fc.integer({ min: 0, max: 10 }), fc.maxSafeNat());

/** What the server does next; `pick` names one of the client's calls received so far (by index, modulo). */
type Act =
  | { k: 'answer'; pick: number; error: boolean; payload: Uint8Array }
  | { k: 'answerId'; id: number; error: boolean; payload: Uint8Array }
  | { k: 'item' | 'end' | 'credit'; pick: number; dir: 0 | 1; n: number; payload: Uint8Array }
  | { k: 'callback'; id: number; payload: Uint8Array }
  | { k: 'event'; payload: Uint8Array }
  | { k: 'ping'; id: number }
  | { k: 'kind'; kind: number; rest: Uint8Array }
  | { k: 'random'; body: Uint8Array }
  | { k: 'closeEnvelope'; payload: Uint8Array }
  | { k: 'wait' };

const act: fc.Arbitrary<Act> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ k: fc.constant('answer' as const), pick: fc.nat(), error: fc.boolean(), payload }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('answerId' as const), id, error: fc.boolean(), payload }) },
  {
    weight: 2,
    arbitrary: fc.record({ k: fc.constantFrom('item' as const, 'end' as const, 'credit' as const), pick: fc.nat(), dir: fc.constantFrom(0 as const, 1 as const), n: fc.nat(), payload }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('callback' as const), id, payload }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('event' as const), payload }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('ping' as const), id }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('kind' as const), kind: fc.constantFrom(0, ...Object.values(Kind), 13, 0xff), rest: bytes }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('random' as const), body: bytes }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('closeEnvelope' as const), payload }) },
  { weight: 2, arbitrary: fc.constant({ k: 'wait' as const }) },
);

interface Script {
  acts: Act[];
  /** How the server ends: destroys the socket, ends its side, or says nothing more. */
  ending: 'destroy' | 'end' | 'silent';
}

/** The body a server act sends; `calls` are the ids of the client's calls and streams received so far. */
function bodyOf(a: Act, calls: number[]): Uint8Array | undefined {
  const picked = (pick: number) => (calls.length === 0 ? 1 : calls[pick % calls.length]);
  const head = (build: (scratch: HeaderScratch) => Uint8Array) => build(new HeaderScratch()).slice();
  const join = (parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
  switch (a.k) {
    case 'answer':
      return a.error ? encodeError(picked(a.pick), a.payload) : encodeResponse(picked(a.pick), a.payload);
    case 'answerId':
      return a.error ? encodeError(a.id, a.payload) : encodeResponse(a.id, a.payload);
    case 'item':
      return join([head((s) => streamHeader(s, Kind.Item, picked(a.pick), a.dir)), a.payload]);
    case 'end':
      return head((s) => streamHeader(s, Kind.End, picked(a.pick), a.dir));
    case 'credit':
      return head((s) => creditHeader(s, picked(a.pick), a.dir, a.n % 0x100000000));
    case 'callback':
      return encodeRequest(a.id, 0, a.payload);
    case 'event':
      return encodeEvent(a.payload);
    case 'ping':
      return encodePing(Kind.Ping, a.id);
    case 'kind':
      return join([new Uint8Array([a.kind]), a.rest]);
    case 'random':
      return a.body;
    case 'closeEnvelope':
      return encodeClose(a.payload);
    case 'wait':
      return undefined;
  }
}

/** Plays `script` on one accepted socket: each act after a turn of the loop, so the client's frames keep arriving meanwhile. */
async function play(socket: net.Socket, script: Script): Promise<void> {
  // Let the client's first calls arrive.
  const calls = await callIdsOf(socket, { waitMs: 200 });
  for (const a of script.acts) {
    if (socket.destroyed) return;
    const body = bodyOf(a, calls);
    if (body === undefined) await new Promise((resolve) => setTimeout(resolve, 3));
    else socket.write(encodeFrame(body));
    await new Promise(setImmediate);
  }
  if (script.ending === 'destroy') socket.destroy();
  else if (script.ending === 'end') socket.end();
}

/** Resolves with how `p` settled, or rejects if it has not within kSettleMs. */
async function settled(p: Promise<unknown>, what: string): Promise<{ ok: true } | { ok: false; err: unknown }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${kSettleMs} ms`)), kSettleMs);
  });
  try {
    return await Promise.race([p.then(() => ({ ok: true as const }), (err: unknown) => ({ ok: false as const, err })), hang]);
  } finally {
    clearTimeout(timer);
  }
}

function assertKnownRejection(outcome: { ok: true } | { ok: false; err: unknown }, what: string): void {
  if (outcome.ok) return;
  const err = outcome.err as RpcError;
  assert.ok(RpcError.is(err), `${what} rejected with something other than an RpcError: ${(err as Error)?.stack ?? err}`);
  assert.ok(kCodes.has(err.code), `${what} rejected with an unknown code ${err.code}`);
}

describe('a client against a server that speaks the protocol badly (property)', function () {
  this.timeout(180_000);
  let server: net.Server;
  let port: number;
  let script: Script = { acts: [], ending: 'destroy' };
  let good: RunningNode<unknown, unknown>;
  let goodServer: RunningNode<unknown, unknown>;

  before(async () => {
    server = net.createServer((socket) => void play(socket, script));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    goodServer = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (req: unknown) => req }).start();
    good = await new Node().connect(tcp(goodServer.addresses[0] as { host: string; port: number })).start();
  });
  after(async () => {
    await good?.close();
    await goodServer?.close();
    await new Promise((resolve) => server?.close(resolve));
  });

  it('settles every call, stream and notify with a value or a known RpcError, and affects no other connection', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(act, { minLength: 1, maxLength: 14 }),
        fc.constantFrom('destroy' as const, 'end' as const, 'silent' as const),
        fc.integer({ min: 1, max: 5 }),
        fc.boolean(),
        async (acts, ending, calls, withStream) => {
          script = { acts, ending };
          const node = await new Node({ keepAliveMs: 0 }).connect(tcp({ host: '127.0.0.1', port })).start();
          try {
            const work: Array<[string, Promise<unknown>]> = [];
            for (let i = 0; i < calls; i++) work.push([`call ${i}`, node.client.call({ type: 'Echo', text: `c${i}` }, { timeoutMs: kCallTimeoutMs })]);
            if (withStream) {
              work.push([
                'stream',
                (async () => {
                  for await (const item of node.client.stream({ type: 'Items' }, { timeoutMs: kCallTimeoutMs })) void item;
                })(),
              ]);
            }
            work.push(['notify', node.client.notify({ type: 'Note' })]);
            // Each watched from now on: one that settles before another is looked at is still handled.
            const outcomes = await Promise.all(work.map(([what, p]) => settled(p, what)));
            outcomes.forEach((outcome, i) => assertKnownRejection(outcome, work[i][0]));
          } finally {
            await node.close();
          }
          assert.deepEqual(await good.client.call('still served', { timeoutMs: 3000 }), 'still served');
        },
      ),
      { numRuns: 50 },
    );
  });
});
