/** Garbage, oversize and truncated frames close only the connection they came on. */
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import fc from 'fast-check';
import { Node, tcp, unix, type RunningNode } from '../src/index.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import {
  HeaderScratch,
  Kind,
  creditHeader,
  decodeEnvelope,
  encodeCancel,
  encodeEvent,
  encodePing,
  encodeRequest,
  encodeResponse,
  openHeader,
  streamHeader,
} from '../src/protocol/envelope.js';
import { createCodec } from '../src/codec/index.js';
import { rejectionOf, sleep, startServer, tempDir, type ChildServer } from './helpers.js';

interface RawResult {
  closed: boolean;
  /** Why the server said it closed, when it sent a Close envelope first. */
  reason?: { code: string; message: string };
  frames: number;
}

const concat = (parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

/**
 * Frame bodies a hostile or broken peer might send: random bytes; a kind byte (wire kinds, the
 * runtime's own control kinds, unknown ones) before random bytes; every wire kind well formed with
 * random ids, deadlines, flags, directions and credits, its payload valid or random; and a valid
 * request cut short or with one byte changed.
 */
function arbitraryBody(): fc.Arbitrary<Uint8Array> {
  const codec = createCodec();
  const id = fc.oneof(fc.integer({ min: 0, max: 20 }), fc.maxSafeNat());
  const payload = fc.oneof(
    fc.uint8Array({ maxLength: 48 }),
    fc.string({ maxLength: 16 }).map((text) => codec.encode({ type: 'Echo', text })),
    fc.constant(codec.encode({ type: 'Ping' })),
  );
  const dir = fc.integer({ min: 0, max: 1 }) as fc.Arbitrary<0 | 1>;
  const header = (build: (scratch: HeaderScratch) => Uint8Array) => build(new HeaderScratch()).slice();
  const valid = encodeRequest(7, 0, codec.encode({ type: 'Echo', text: 'x' }));
  return fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc
      .tuple(fc.constantFrom(0, ...Object.values(Kind), 13, 0x7f, 0x85, 0xff), fc.uint8Array({ maxLength: 40 }))
      .map(([kind, rest]) => concat([new Uint8Array([kind]), rest])),
    fc.tuple(id, fc.integer({ min: 0, max: 0xffffffff }), payload).map(([i, deadline, p]) => encodeRequest(i, deadline, p)),
    fc.tuple(id, payload).map(([i, p]) => encodeResponse(i, p)),
    payload.map((p) => encodeEvent(p)),
    id.map((i) => encodeCancel(i)),
    fc.tuple(fc.constantFrom(Kind.Ping, Kind.Pong), id).map(([kind, i]) => encodePing(kind, i)),
    fc
      .tuple(id, fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 0xffffffff }), payload)
      .map(([i, deadline, flags, credit, p]) => concat([header((s) => openHeader(s, i, deadline, flags, credit)), p])),
    fc.tuple(id, dir, payload).map(([i, d, p]) => concat([header((s) => streamHeader(s, Kind.Item, i, d)), p])),
    fc.tuple(id, dir).map(([i, d]) => header((s) => streamHeader(s, Kind.End, i, d))),
    fc.tuple(id, dir, fc.integer({ min: 0, max: 0xffffffff })).map(([i, d, n]) => header((s) => creditHeader(s, i, d, n))),
    fc.integer({ min: 0, max: valid.length - 1 }).map((n) => valid.slice(0, n)),
    fc.tuple(fc.integer({ min: 0, max: valid.length - 1 }), fc.integer({ min: 0, max: 255 })).map(([at, byte]) => {
      const changed = valid.slice();
      changed[at] = byte;
      return changed;
    }),
  );
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

    it('any sequence of frames, however malformed their bodies, ends at worst in PROTOCOL for that connection alone (property)', async function () {
      this.timeout(120_000);
      await fc.assert(
        fc.asyncProperty(fc.array(arbitraryBody(), { minLength: 1, maxLength: 12 }), async (bodies) => {
          const r = await rawExchange(port, concat(bodies.map((b) => encodeFrame(b))), true);
          assert.equal(r.closed, true);
          if (r.reason !== undefined) assert.equal(r.reason.code, 'PROTOCOL', `closed with ${r.reason.code}: ${r.reason.message}`);
          // The server lives on, and serves its other client as before.
          assert.deepEqual(await good.client.call({ type: 'Echo', text: 'still' }, { timeoutMs: 3000 }), { type: 'Echo', text: 'still' });
        }),
        { numRuns: 200 },
      );
    });

    /** Sends `before` and then one request frame on a raw socket, and resolves with the first reply: its kind and decoded payload. */
    async function rawReply(requestBody: Uint8Array, before: Uint8Array[] = []): Promise<{ kind: number; value: any }> {
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
          for (const body of before) socket.write(encodeFrame(body));
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

    it('an undecodable event is dropped (the server warns once), the connection stays', async () => {
      const before = [encodeEvent(new Uint8Array([0x81])), encodeEvent(new Uint8Array([0xc1]))];
      const reply = await rawReply(encodeRequest(6, 0, createCodec().encode({ type: 'Ping' })), before);
      assert.equal(reply.kind, Kind.Response);
      assert.deepEqual(reply.value, { type: 'Pong' });
    });
  });
}

describe('a peer that goes away inside a frame', function () {
  this.timeout(20_000);
  let temp: ReturnType<typeof tempDir>;
  const servers: net.Server[] = [];
  before(() => {
    temp = tempDir();
  });
  after(async () => {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    temp.remove();
  });

  /**
   * A raw server that reads the first request, answers it with the first half of a response frame,
   * waits for that to arrive, then `stop`s the socket.
   */
  async function halfAnswering(listen: net.ListenOptions, stop: (socket: net.Socket) => void): Promise<net.Server> {
    const server = net.createServer((socket) => {
      const dec = new FrameDecoder();
      let answered = false;
      socket.on('error', () => {});
      socket.on('data', (chunk) =>
        dec.push(chunk, (body) => {
          const env = decodeEnvelope(body);
          if (answered || env.kind !== Kind.Request) return;
          answered = true;
          const frame = encodeFrame(encodeResponse(env.id, createCodec().encode({ type: 'Echo', text: 'x'.repeat(100) })));
          socket.write(frame.subarray(0, frame.length >> 1), () => void sleep(100).then(() => stop(socket)));
        }),
      );
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(listen, resolve));
    return server;
  }

  it('a reset mid-frame: the call rejects with CLOSED, its cause the socket error ECONNRESET', async () => {
    // resetAndDestroy() sends a TCP RST (on a Unix socket it throws ERR_INVALID_HANDLE_TYPE).
    const server = await halfAnswering({ host: '127.0.0.1', port: 0 }, (socket) => socket.resetAndDestroy());
    const node = await new Node().connect(tcp({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port })).start();
    try {
      const err = await rejectionOf(node.client.call({ type: 'Echo', text: 'x' }, { timeoutMs: 5000 }));
      assert.equal(err.code, 'CLOSED', `${err.code}: ${err.message}`);
      assert.match(err.message, /inside a frame/);
      assert.equal(err.cause?.code, 'ECONNRESET', `cause: ${err.cause}`);
    } finally {
      await node.close();
    }
  });

  it('a clean end mid-frame: the call rejects with CLOSED', async () => {
    const socketPath = path.join(temp.dir, 'half.sock');
    await halfAnswering({ path: socketPath }, (socket) => socket.end());
    const node = await new Node().connect(unix(socketPath)).start();
    try {
      const err = await rejectionOf(node.client.call({ type: 'Echo', text: 'x' }, { timeoutMs: 5000 }));
      assert.equal(err.code, 'CLOSED', `${err.code}: ${err.message}`);
      assert.match(err.message, /inside a frame/);
    } finally {
      await node.close();
    }
  });
});
