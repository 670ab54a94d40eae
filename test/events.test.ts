/**
 * One-way events that go wrong on the serving side: an onEvent that throws, and an event whose
 * payload cannot be decoded. Neither has anybody to answer, so each becomes a process warning that
 * says which it was; the connection and its calls carry on.
 */
import assert from 'node:assert/strict';
import { createCodec } from '../src/codec/index.js';
import { Kind, decodeEnvelope, encodeEvent, encodeRequest } from '../src/protocol/envelope.js';
import { Session } from '../src/session/session.js';

const codec = createCodec();
const tick = () => new Promise(setImmediate);
/** Not msgpack: a map header that promises one entry, then nothing. */
const undecodable = new Uint8Array([0x81]);

/** A serving session whose handler records events (and throws on `{ throw: true }`), and what it sends. */
function servingSession(onUnhandled?: (err: unknown) => void) {
  const events: unknown[] = [];
  const sent: Array<{ kind: number; value?: unknown }> = [];
  const session = new Session({
    codec,
    peer: { transport: 'unix', address: '/tmp/peer.sock', auth: 'none', connectionId: 1 },
    send: (head, payload) => {
      const env = decodeEnvelope(new Uint8Array(Buffer.concat([head, payload])));
      sent.push({ kind: env.kind, value: 'payload' in env ? codec.decode(env.payload) : undefined });
    },
    handler: {
      onRequest: (req: unknown) => req,
      onEvent: (event: any) => {
        if (event?.throw) throw new Error('the handler threw this');
        events.push(event);
      },
    },
    ...(onUnhandled === undefined ? {} : { onUnhandled }),
  });
  return { session, events, sent };
}

describe('one-way events that go wrong on the serving side', function () {
  this.timeout(10_000);

  it('an undecodable event is dropped with one PROTOCOL report per connection; later events and calls carry on', async () => {
    const reported: unknown[] = [];
    const { session, events, sent } = servingSession((err) => reported.push(err));
    session.receive(encodeEvent(undecodable));
    session.receive(encodeEvent(undecodable));
    session.receive(encodeEvent(codec.encode({ n: 1 })));
    session.receive(encodeRequest(1, 0, codec.encode('still here')));
    await tick();
    assert.deepEqual(events, [{ n: 1 }]);
    assert.deepEqual(sent, [{ kind: Kind.Response, value: 'still here' }]);
    assert.equal(reported.length, 1);
    const err = reported[0] as any;
    assert.equal(err.code, 'PROTOCOL');
    assert.match(err.message, /an event from unix \/tmp\/peer\.sock could not be decoded and was dropped/);
    assert.equal(session.closedWith, undefined);
  });

  it('by default each becomes a process warning that says which it was', async () => {
    const warnings: string[] = [];
    const listener = (w: Error) => {
      if (w.message.startsWith('ogurpchik:')) warnings.push(w.message);
    };
    process.on('warning', listener);
    try {
      const { session } = servingSession();
      session.receive(encodeEvent(undecodable));
      session.receive(encodeEvent(codec.encode({ throw: true })));
      // Warnings are emitted on the next tick.
      await tick();
      await tick();
    } finally {
      process.off('warning', listener);
    }
    assert.equal(warnings.length, 2, warnings.join('\n'));
    assert.match(warnings[0], /^ogurpchik: an event from unix \/tmp\/peer\.sock could not be decoded and was dropped .*msgpack/);
    assert.doesNotMatch(warnings[0], /onEvent handler threw/);
    assert.match(warnings[1], /^ogurpchik: an onEvent handler threw: Error: the handler threw this/);
  });
});
