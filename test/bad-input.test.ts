/** Garbage, oversize and truncated frames close only the connection they came on. */
import assert from 'node:assert/strict';
import net from 'node:net';
import { Node, tcp, type RunningNode } from '../src/index.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { Kind, decodeEnvelope, encodeRequest } from '../src/protocol/envelope.js';
import { createCodec } from '../src/codec/index.js';
import { startServer, type ChildServer } from './helpers.js';

interface RawResult {
  closed: boolean;
  /** Why the server said it closed, when it sent a Close envelope first. */
  reason?: { code: string; message: string };
  frames: number;
}

/** Opens a raw socket, writes `bytes` (then ends when `end`), and reports how the server reacted. */
function rawExchange(port: number, bytes: Uint8Array, end: boolean): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const dec = new FrameDecoder();
    const result: RawResult = { closed: false, frames: 0 };
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('the server did not close the connection within 5 s'));
    }, 5000);
    socket.on('data', (chunk) =>
      dec.push(chunk, (body) => {
        result.frames++;
        const env = decodeEnvelope(body);
        if (env.kind === Kind.Close) result.reason = createCodec().decode(env.payload) as RawResult['reason'];
      }),
    );
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      result.closed = true;
      resolve(result);
    });
    socket.write(bytes);
    if (end) socket.end();
  });
}

for (const handler of ['module', 'main'] as const) {
  describe(`bad input closes only its own connection (${handler} handler)`, function () {
    this.timeout(20_000);
    let server: ChildServer;
    let good: RunningNode<any, any>;
    let port: number;

    before(async () => {
      server = await startServer({ transport: 'tcp', handler, maxFrameBytes: 1024 * 1024 });
      port = (server.address as any).port;
      good = await new Node().connect(tcp(server.address as any)).start();
    });
    after(async () => {
      await good?.close();
      await server?.kill();
    });
    afterEach(async () => {
      // The well-behaved client on its own connection is unaffected.
      assert.deepEqual(await good.client.call({ type: 'Echo', text: 'ok' }), { type: 'Echo', text: 'ok' });
      assert.equal(good.client.closedWith, undefined);
    });

    it('garbage bytes: the server closes that connection with PROTOCOL', async () => {
      const garbage = Buffer.concat([Buffer.from([12, 0, 0, 0]), Buffer.from('not an envelope')]);
      const r = await rawExchange(port, garbage, false);
      assert.equal(r.closed, true);
      assert.equal(r.reason?.code, 'PROTOCOL');
    });

    it('a length prefix over the maximum: closed with FRAME_TOO_LARGE', async () => {
      const r = await rawExchange(port, new Uint8Array([0, 0, 0x20, 0, 1, 2, 3]), false); // 2 MiB > 1 MiB
      assert.equal(r.closed, true);
      assert.equal(r.reason?.code, 'FRAME_TOO_LARGE');
    });

    it('a truncated frame: the connection closes and nothing is answered', async () => {
      const frame = encodeFrame(encodeRequest(1, 0, createCodec().encode({ type: 'Ping' })));
      const r = await rawExchange(port, frame.subarray(0, frame.length - 2), true);
      assert.equal(r.closed, true);
      assert.equal(r.frames === 0 || r.reason?.code === 'PROTOCOL', true);
    });

    /** Sends one request frame on a raw socket and resolves with the first reply: its kind and decoded payload. */
    async function rawReply(requestBody: Uint8Array): Promise<{ kind: number; value: any }> {
      const socket = net.connect(port, '127.0.0.1');
      try {
        return await new Promise((resolve, reject) => {
          const dec = new FrameDecoder();
          socket.on('error', reject);
          socket.on('data', (c) =>
            dec.push(c, (b) => {
              const env = decodeEnvelope(b);
              if (env.kind === Kind.Error || env.kind === Kind.Response) resolve({ kind: env.kind, value: createCodec().decode(env.payload) });
            }),
          );
          socket.write(encodeFrame(requestBody));
        });
      } finally {
        socket.destroy();
      }
    }

    /** Sends `requests` (payloads) on a raw socket that then reads nothing, and runs `during` before closing it. */
    async function whileNotReading(requests: Uint8Array[], during: () => Promise<void>): Promise<void> {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      try {
        await new Promise((resolve) => socket.once('connect', resolve));
        for (const payload of requests) socket.write(encodeFrame(encodeRequest(1, 0, payload)));
        await during();
      } finally {
        socket.destroy();
      }
    }

    it('a client that never reads its answers holds back only its own connection', async () => {
      // 50 MiB of answers that nobody reads: the server stops reading this socket, and its
      // answers wait in memory, but the other client's calls go on. With a main-thread handler,
      // the server used to hold the ring from its main thread for this one connection, which
      // stalled every other connection's answers until this one drained (here: never).
      const blob = createCodec().encode({ type: 'Blob', n: 256 * 1024 });
      await whileNotReading(Array.from({ length: 200 }, () => blob), async () => {
        for (let i = 0; i < 10; i++) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          assert.deepEqual(await good.client.call({ type: 'Echo', text: `during ${i}` }, { timeoutMs: 3000 }), { type: 'Echo', text: `during ${i}` });
        }
      });
    });

    it('events to a client that never reads wait for it: notify() holds back while its connection is backed up', async () => {
      await whileNotReading([createCodec().encode({ type: 'Flood', size: 32 * 1024, max: 2000 })], async () => {
        const flooded = async () => (await good.client.call({ type: 'Flooded' }, { timeoutMs: 3000 })) as number;
        for (let i = 0; i < 50 && (await flooded()) === 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));
        await new Promise((resolve) => setTimeout(resolve, 500));
        // Without backpressure all 2,000 (62 MiB) go out into memory at once; with it, what the
        // socket's buffers take.
        const sent = await flooded();
        assert.ok(sent > 0 && sent < 500, `${sent} events of 32 KiB sent to a client that reads nothing`);
      });
    });

    it('a valid frame on a raw socket is answered (the raw client speaks the protocol)', async () => {
      const reply = await rawReply(encodeRequest(1, 0, createCodec().encode({ type: 'Ping' })));
      assert.equal(reply.kind, Kind.Response);
      assert.deepEqual(reply.value, { type: 'Pong' });
    });

    it('an undecodable request payload gets a PROTOCOL error reply, the connection stays', async () => {
      const reply = await rawReply(encodeRequest(5, 0, new Uint8Array([0x92, 1]))); // an array of two with one element
      assert.equal(reply.kind, Kind.Error);
      assert.equal(reply.value.code, 'PROTOCOL');
    });
  });
}
