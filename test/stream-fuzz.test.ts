/**
 * Property test of the stream protocol against a hostile peer: any sequence of well-formed and
 * malformed stream envelopes thrown at a session (as caller and as callee) ends in PROTOCOL errors
 * at worst, never another throw, never an unbounded buffer, and every open stream and call
 * settles once the session closes.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RpcError } from '../src/index.js';
import { createCodec } from '../src/codec/index.js';
import { Kind, HeaderScratch, creditHeader, idHeader, openHeader, requestHeader, streamHeader } from '../src/protocol/envelope.js';
import { Session } from '../src/session/session.js';

const codec = createCodec();
const cat = (head: Uint8Array, payload: Uint8Array = new Uint8Array(0)) => {
  const b = new Uint8Array(head.length + payload.length);
  b.set(head);
  b.set(payload, head.length);
  return b;
};

/** One envelope a hostile peer might send: ids from a small range so they hit live calls. */
const envelope = fc.oneof(
  fc.record({ k: fc.constant('open'), id: fc.integer({ min: 1, max: 6 }), flags: fc.integer({ min: 0, max: 7 }), credit: fc.nat(100), v: fc.jsonValue() }),
  fc.record({ k: fc.constant('item'), id: fc.integer({ min: 1, max: 6 }), dir: fc.integer({ min: 0, max: 2 }), v: fc.jsonValue(), raw: fc.boolean() }),
  fc.record({ k: fc.constant('end'), id: fc.integer({ min: 1, max: 6 }), dir: fc.integer({ min: 0, max: 1 }) }),
  fc.record({ k: fc.constant('credit'), id: fc.integer({ min: 1, max: 6 }), dir: fc.integer({ min: 0, max: 1 }), n: fc.nat(50) }),
  fc.record({ k: fc.constant('cancel'), id: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ k: fc.constant('response'), id: fc.integer({ min: 1, max: 6 }), v: fc.jsonValue() }),
  fc.record({ k: fc.constant('request'), id: fc.integer({ min: 1, max: 6 }), v: fc.jsonValue() }),
  fc.record({ k: fc.constant('garbage'), bytes: fc.uint8Array({ maxLength: 24 }) }),
);

function toBody(e: any): Uint8Array {
  const s = new HeaderScratch();
  switch (e.k) {
    case 'open':
      return cat(openHeader(s, e.id, 0, e.flags, e.credit), e.flags & 2 ? undefined : codec.encode(e.v));
    case 'item':
      return cat(streamHeader(s, Kind.Item, e.id, e.dir), e.raw ? new Uint8Array([0xc1]) : codec.encode(e.v));
    case 'end':
      return cat(streamHeader(s, Kind.End, e.id, e.dir as 0 | 1));
    case 'credit':
      return cat(creditHeader(s, e.id, e.dir as 0 | 1, e.n));
    case 'cancel':
      return cat(idHeader(s, Kind.Cancel, e.id));
    case 'response':
      return cat(idHeader(s, Kind.Response, e.id), codec.encode(e.v));
    case 'request':
      return cat(requestHeader(s, e.id, 0), codec.encode(e.v));
    default:
      return e.bytes;
  }
}

describe('streams against a hostile peer (property)', function () {
  this.timeout(60_000);

  it('never throws anything but PROTOCOL, never buffers past the window, and settles everything on close', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(envelope, { maxLength: 40 }), async (envelopes) => {
        let produced = 0;
        const session = new Session({
          codec,
          peer: { transport: 'fuzz', auth: 'none', connectionId: 1 },
          send: () => {},
          handler: {
            async onRequest(req: unknown) {
              if (req !== null && typeof req === 'object' && Symbol.asyncIterator in (req as object)) {
                let n = 0;
                for await (const _ of req as AsyncIterable<unknown>) n++;
                return n;
              }
              return (async function* () {
                for (let i = 0; i < 1000; i++) {
                  produced++;
                  yield i;
                }
              })();
            },
          },
          onUnhandled: () => {},
        });
        // Our own calls, so the peer's items, ends, credits and answers have something to hit.
        const streams = [session.stream('a', { window: 4 }), session.stream('b', { window: 2 })];
        const settled: Promise<unknown>[] = streams.map(async (it) => {
          try {
            for await (const _ of it) {
              // consume
            }
          } catch (err) {
            assert.ok(RpcError.is(err), `a stream failed with a non-RpcError: ${err}`);
          }
        });
        settled.push(session.call('c').catch((err) => assert.ok(RpcError.is(err))));
        settled.push(
          session
            .call(
              (async function* () {
                yield 1;
                yield 2;
              })(),
            )
            .catch((err) => assert.ok(RpcError.is(err))),
        );
        for (const e of envelopes) {
          try {
            session.receive(toBody(e));
          } catch (err) {
            assert.ok(RpcError.is(err) && err.code === 'PROTOCOL', `receive threw ${err}`);
          }
          await new Promise(setImmediate);
        }
        // Our producers were pulled only against credit the peer granted (Open credit, Credit dir 1).
        const granted = envelopes.reduce((sum, e: any) => sum + (e.k === 'open' && e.flags & 1 ? e.credit : e.k === 'credit' && e.dir === 1 ? e.n : 0), 0);
        assert.ok(produced <= granted, `produced ${produced} items against ${granted} credit`);
        session.close(new RpcError('CLOSED', 'fuzz over'));
        await Promise.race([
          Promise.all(settled),
          new Promise((_, reject) => setTimeout(() => reject(new Error('a stream or call never settled after close')), 2000)),
        ]);
        assert.equal(session.pendingCount, 0);
      }),
      { numRuns: 300 },
    );
  });
});
