/**
 * RingSession: a call session over a tagged ring pair shared with another thread, as the main
 * thread runs one per relayed connection and an isolate plugin's thread runs one. In-process rings,
 * both ends in this thread: what each end writes is read back from its ring.
 */
import assert from 'node:assert/strict';
import { createCodec } from '../src/codec/index.js';
import { RpcError, fromWireError, toWireError, type WireError } from '../src/errors.js';
import { ControlKind, decodeControl, encodeControl } from '../src/bridge/control.js';
import { RingSession, type RingEnd, type RingSessionOptions } from '../src/bridge/ring-session.js';
import { Kind, encodePing, kindOf } from '../src/protocol/envelope.js';
import { RingReader, RingWriter, createRing } from '../src/shm/ring.js';
import type { Handler } from '../src/types.js';

const codec = createCodec();
const tick = () => new Promise((resolve) => setImmediate(resolve));

/** One end's session writing into a fresh ring; `written()` reads back what it wrote, as [tag, bytes] (copies). */
function oneEnd(end: RingEnd, extra: Partial<RingSessionOptions> = {}, connectionId = 5) {
  const sab = createRing(4096);
  const writer = new RingWriter(sab);
  const ended: RpcError[] = [];
  const failed: RpcError[] = [];
  const conn = new RingSession({
    session: { codec, peer: { transport: 'test', auth: 'none', connectionId } },
    end,
    ring: () => writer,
    onEnded: (reason) => ended.push(reason),
    onFailed: (reason) => failed.push(reason),
    ...extra,
  });
  const records: Array<[number, Uint8Array]> = [];
  const reader = new RingReader(sab, { onMessage: (tag, bytes) => records.push([tag, bytes.slice()]) });
  const written = () => {
    reader.drain();
    return records.splice(0);
  };
  return { conn, writer, ended, failed, written };
}

/** A main end and a worker end joined by a ring pair, each reading its ring as the hubs do. */
function pair(handlers: { main?: Handler; worker?: Handler }, ids: { main: number; worker: number }) {
  const toWorker = createRing(4096);
  const toMain = createRing(4096);
  const mainWriter = new RingWriter(toWorker);
  const workerWriter = new RingWriter(toMain);
  const tags: number[] = [];
  const main = new RingSession({
    session: { codec, peer: { transport: 'test', auth: 'none', connectionId: ids.main }, handler: handlers.main },
    end: 'main',
    ring: () => mainWriter,
    onEnded: (reason) => main.close(reason),
  });
  const worker = new RingSession({
    session: { codec, peer: { transport: 'test', auth: 'none', connectionId: ids.worker }, handler: handlers.worker },
    end: 'worker',
    ring: () => workerWriter,
    onEnded: (reason) => worker.close(reason),
  });
  const readers = [
    new RingReader(toWorker, {
      onMessage: (tag, bytes) => {
        tags.push(tag);
        worker.record(bytes);
      },
    }),
    new RingReader(toMain, {
      onMessage: (tag, bytes) => {
        tags.push(tag);
        main.record(bytes);
      },
    }),
  ];
  for (const r of readers) r.start();
  return { main, worker, tags, stop: () => readers.forEach((r) => r.stop()) };
}

describe('RingSession', function () {
  this.timeout(10_000);

  it('a main end and a worker end over one ring pair: calls both ways answer, every record tagged with the connection id, a client\'s learnt after its session was made', async () => {
    const { main, worker, tags, stop } = pair(
      { main: { onRequest: (r: string) => `main:${r}` }, worker: { onRequest: (r: string) => `worker:${r}` } },
      { main: 0, worker: 9 },
    );
    try {
      main.session.peer.connectionId = 9;
      assert.equal(await main.session.call('a'), 'worker:a');
      assert.equal(await worker.session.call('b'), 'main:b');
      assert.deepEqual(await Promise.all([1, 2, 3].map((i) => main.session.call(`c${i}`))), ['worker:c1', 'worker:c2', 'worker:c3']);
      assert.ok(tags.length >= 10);
      assert.deepEqual([...new Set(tags)], [9]);
    } finally {
      stop();
    }
  });

  it('ConnPaused holds what waits for room (notify) until ConnResumed; close() lets it go too', async () => {
    const { conn, written } = oneEnd('main');
    conn.record(Uint8Array.of(ControlKind.ConnPaused));
    let sent = false;
    const first = conn.session.notify('e1').then(() => (sent = true));
    await tick();
    await tick();
    assert.equal(sent, false, 'notify waits while the connection is paused');
    assert.equal(written().length, 1, 'the event itself has gone out');
    conn.record(Uint8Array.of(ControlKind.ConnResumed));
    await first;
    assert.equal(await Promise.race([conn.session.notify('e2').then(() => 'sent'), tick().then(() => 'held')]), 'sent', 'not paused any more');

    conn.record(Uint8Array.of(ControlKind.ConnPaused));
    let released = false;
    const third = conn.session.notify('e3').then(() => (released = true));
    await tick();
    assert.equal(released, false);
    conn.close(new RpcError('CLOSED', 'gone'));
    await third;
    assert.equal(conn.session.closedWith?.message, 'gone');
  });

  for (const { end, endedKind, closeKind, ended: endedName, close: closeName } of [
    { end: 'main', endedKind: ControlKind.ConnClosed, closeKind: ControlKind.CloseConn, ended: 'ConnClosed', close: 'CloseConn' },
    { end: 'worker', endedKind: ControlKind.CloseConn, closeKind: ControlKind.ConnClosed, ended: 'CloseConn', close: 'ConnClosed' },
  ] as const) {
    it(`${end} end: the other end's close record (${endedName}) reaches onEnded with its reason; the session is the owner's to close`, () => {
      const { conn, ended, written } = oneEnd(end);
      conn.record(encodeControl(endedKind, toWireError(new RpcError('HANDSHAKE_FAILED', 'refused', { data: { why: 1 } }))));
      assert.equal(ended.length, 1);
      assert.equal(ended[0]!.code, 'HANDSHAKE_FAILED');
      assert.equal(ended[0]!.message, 'refused');
      assert.deepEqual(ended[0]!.data, { why: 1 });
      assert.equal(conn.session.closedWith, undefined);
      assert.deepEqual(written(), [], 'nothing is written back');
    });

    it(`${end} end: a malformed record closes the session (PROTOCOL), rejects its calls, and tells the other end with ${closeName}, behind what it wrote before`, async () => {
      const { conn, failed, ended, written } = oneEnd(end, {}, 12);
      const call = conn.session.call('x');
      conn.record(Uint8Array.of(0x7f, 1, 2, 3));
      const err = await call.then(
        () => assert.fail('the call resolved'),
        (e: unknown) => e as RpcError,
      );
      assert.equal(err.code, 'PROTOCOL');
      assert.equal(conn.session.closedWith, err);
      assert.deepEqual(failed, [err]);
      assert.deepEqual(ended, []);
      const records = written();
      assert.deepEqual(
        records.map(([tag, bytes]) => [tag, kindOf(bytes)]),
        [
          [12, Kind.Request],
          [12, closeKind],
        ],
      );
      const told = fromWireError(decodeControl(records[1]![1]) as WireError);
      assert.equal(told.code, 'PROTOCOL');
      assert.equal(told.message, err.message);
    });
  }

  it('options.send carries the bodies instead of the ring; the close record still rides the ring', async () => {
    const bodies: number[] = [];
    const { conn, written } = oneEnd('main', { send: (head) => void bodies.push(head[0]!) });
    void conn.session.notify('e');
    assert.equal(bodies.length, 1);
    assert.deepEqual(written(), []);
    conn.closeOtherEnd(new RpcError('CLOSED', 'the server closed'));
    const records = written();
    assert.equal(records.length, 1);
    assert.equal(kindOf(records[0]![1]), ControlKind.CloseConn);
  });

  it('with no ring yet a call fails CLOSED; closeOtherEnd on no ring or a closed one is a no-op', async () => {
    let ring: RingWriter | undefined;
    const conn = new RingSession({
      session: { codec, peer: { transport: 'test', auth: 'none', connectionId: 3 } },
      end: 'main',
      ring: () => ring,
      onEnded: () => {},
    });
    const err = await conn.session.call('x').then(
      () => assert.fail('the call resolved'),
      (e: unknown) => e as RpcError,
    );
    assert.equal(err.code, 'CLOSED');
    conn.closeOtherEnd(new RpcError('CLOSED', 'x'));
    ring = new RingWriter(createRing(4096));
    ring.close();
    conn.closeOtherEnd(new RpcError('CLOSED', 'x'));
  });

  it('onBody is told of each body written to the ring and each taken from it, not of control records', () => {
    const seen: string[] = [];
    const { conn, written } = oneEnd('main', { onBody: (d) => void seen.push(d) });
    void conn.session.notify('e');
    conn.record(Uint8Array.of(ControlKind.ConnPaused));
    conn.record(Uint8Array.of(ControlKind.ConnResumed));
    conn.record(encodePing(Kind.Ping, 1));
    assert.deepEqual(seen, ['out', 'in', 'out'], 'the event, the ping, its pong');
    assert.deepEqual(written().map(([, bytes]) => kindOf(bytes)), [Kind.Event, Kind.Pong]);
  });
});
