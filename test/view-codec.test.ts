/** The zero-copy view codec: FlatBuffers and raw bytes read in place, on worker and main-thread handlers. */
import assert from 'node:assert/strict';
import { Node, RpcError, View, tcp, view, type RunningNode } from '../src/index.js';
import { createCodec } from '../src/codec/index.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { encodeRequest } from '../src/protocol/envelope.js';
import { Session } from '../src/session/session.js';
import { bytesCopied } from '../src/observe.js';
import { buildOrder } from './fixtures/order.js';
import { handler as viewHandler, summarise } from './fixtures/view-handler.js';

const decoder = new TextDecoder();
const asJson = (v: View) => JSON.parse(decoder.decode(v.bytes));

function blob(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

const sum64 = (b: Uint8Array) => b.subarray(0, 64).reduce((a, x) => a + x, 0);

describe('view codec: a handler reads a request where it arrived', function () {
  this.timeout(30_000);

  it('hands the handler a View over the frame body itself (same memory, no copy) and decodes nothing', () => {
    const order = buildOrder({ id: 42n, customer: 'ada', qty: 3, blob: blob(100_000) }).asUint8Array();
    const body = encodeRequest(1, 0, order);
    // Frame it and feed it the way a socket does, in 64 KiB chunks.
    const frame = encodeFrame(body);
    let seen: View | undefined;
    const session = new Session({
      codec: createCodec(view()),
      peer: { transport: 'test', auth: 'none', connectionId: 1 },
      send: () => {},
      handler: {
        onRequest(v: View) {
          seen = v;
          return new Uint8Array([1]);
        },
      },
    });
    const fd = new FrameDecoder();
    const before = bytesCopied();
    let bodyIn: Uint8Array | undefined;
    for (let at = 0; at < frame.length; at += 65536)
      fd.push(frame.subarray(at, at + 65536), (b) => {
        bodyIn = b;
        session.receive(b);
      });
    assert.ok(seen instanceof View);
    assert.equal(seen.bytes.buffer, bodyIn!.buffer, 'the view is over the frame body, not a copy of it');
    assert.equal(seen.bytes.byteOffset, bodyIn!.byteOffset + 13);
    // The only copy is the framing's assembly of a frame larger than one chunk; nothing was decoded.
    assert.equal(bytesCopied() - before, body.length);
    const summary = JSON.parse(decoder.decode(summarise(seen)));
    assert.equal(summary.blobLength, 100_000);
    assert.equal(summary.blobSharesBuffer, true);
  });

  it('a msgpack session copies the whole payload out of a ring view, for comparison', () => {
    const payload = createCodec().encode({ id: 42, customer: 'ada', qty: 3, blob: blob(100_000) });
    let seen: { blob: Uint8Array } | undefined;
    const session = new Session({
      codec: createCodec(),
      peer: { transport: 'test', auth: 'none', connectionId: 1 },
      send: () => {},
      handler: { onRequest: (v: { blob: Uint8Array }) => ((seen = v), 1) },
    });
    const envelope = encodeRequest(1, 0, payload);
    const ring = new Uint8Array(new SharedArrayBuffer(envelope.length));
    ring.set(envelope);
    const before = bytesCopied();
    session.receive(ring);
    assert.equal(bytesCopied() - before, payload.length);
    assert.ok(!(seen!.blob.buffer instanceof SharedArrayBuffer), 'the blob was copied out of the ring');
  });

  it('a msgpack session leaves the binary of a large frame it owns in place, and copies a small one out', () => {
    const seen: Array<{ blob: Uint8Array }> = [];
    const session = new Session({
      codec: createCodec(),
      peer: { transport: 'test', auth: 'none', connectionId: 1 },
      send: () => {},
      handler: { onRequest: (v: { blob: Uint8Array }) => (seen.push(v), 1) },
    });
    const large = encodeRequest(1, 0, createCodec().encode({ blob: blob(100_000) }));
    const small = encodeRequest(2, 0, createCodec().encode({ blob: blob(1000) }));
    const before = bytesCopied();
    session.receive(large);
    assert.equal(bytesCopied() - before, 0, 'nothing of the large frame was copied');
    assert.equal(seen[0].blob.buffer, large.buffer, 'the blob is a view into the frame');
    assert.deepEqual(seen[0].blob, blob(100_000));
    session.receive(small);
    assert.notEqual(seen[1].blob.buffer, small.buffer, 'a small frame is copied, so a kept blob does not pin its chunk');
    assert.deepEqual(seen[1].blob, blob(1000));
  });
});

for (const where of ['worker', 'main'] as const) {
  describe(`view codec over tcp, ${where} handler`, function () {
    this.timeout(30_000);
    let server: RunningNode;
    let node: RunningNode<any, any>;

    before(async () => {
      const handler = where === 'worker' ? new URL('./fixtures/view-handler.js', import.meta.url) : viewHandler;
      server = await new Node().serve(tcp('127.0.0.1:0'), handler, { codec: view() }).start();
      node = await new Node().connect(tcp(server.addresses[0] as any), { codec: view() }).start();
    });

    after(async () => {
      await node?.close();
      await server?.close();
    });

    for (const size of [16, 200_000, 1024 * 1024]) {
      it(`reads a FlatBuffers Order with a ${size}-byte blob field by field`, async () => {
        const b = blob(size);
        const res = await node.client.call(buildOrder({ id: 2n ** 60n + 1n, customer: 'Grace', qty: 7, blob: b }));
        assert.ok(res instanceof View, 'the response is a View too');
        const summary = asJson(res);
        assert.deepEqual(
          { ...summary, payloadIsWindow: undefined, blobSharesBuffer: undefined },
          { id: String(2n ** 60n + 1n), customer: 'Grace', qty: 7, blobLength: size, blobSum: sum64(b), payloadIsWindow: undefined, blobSharesBuffer: undefined },
        );
        assert.equal(summary.blobSharesBuffer, true, 'the blob is read in place, from the same memory as the payload');
        if (where === 'worker' && size <= 16) assert.equal(summary.payloadIsWindow, true, 'a small request is a window on the socket chunk it arrived in');
      });
    }

    it('raw-bytes mode: a Uint8Array goes out as is and arrives as a View', async () => {
      const echo = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (v: View) => v }, { codec: view() }).start();
      try {
        await using c = await new Node().connect<Uint8Array, View>(tcp(echo.addresses[0] as any), { codec: view() }).start();
        const got = await c.client.call(new Uint8Array([1, 2, 3]));
        assert.deepEqual([...got.bytes], [1, 2, 3]);
        assert.deepEqual([...got.copy()], [1, 2, 3]);
      } finally {
        await echo.close();
      }
    });

    it("a handler's error still arrives whole (errors travel as msgpack)", async () => {
      const err = await node.client.call(new Uint8Array(0)).then(
        () => assert.fail('expected a rejection'),
        (e: RpcError) => e,
      );
      assert.equal(err.code, 'REMOTE');
      assert.equal(err.remote?.name, 'RangeError');
      assert.match(err.message, /empty order/);
    });

    it('refuses to send what is not bytes, with INVALID_ARGUMENT', async () => {
      const err = await node.client.call({ not: 'bytes' } as any).then(
        () => assert.fail('expected a rejection'),
        (e: RpcError) => e,
      );
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(err.message, /view codec/);
    });
  });
}
