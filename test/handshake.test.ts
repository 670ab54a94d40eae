/** Handshakes and authentication: packets, every scheme on every stream transport, and every way a handshake can go wrong. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync, sign } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import fc from 'fast-check';
import { Node, RpcError, shm, tcp, unix, type RunningNode, type TransportDescriptor } from '../src/index.js';
import { toWireError } from '../src/errors.js';
import { HandshakeChannel } from '../src/handshake/channel.js';
import { clientHandshake } from '../src/handshake/client.js';
import { clientProof, serverProof } from '../src/handshake/hmac.js';
import { AckStatus, PacketReader, SchemeCode, Tag, decodePacket, encodePacket, kMaxPacketBytes, type Ack, type ClientAuth, type Hello, type Packet } from '../src/handshake/packets.js';
import { serverHandshake } from '../src/handshake/server.js';
import { nativeAvailable } from '../src/native/addon.js';
import { refusalOf, rejectionOf, signedNodeCopy, sleep, startServer, tempDir, type ChildServer } from './helpers.js';

const kSecret = 'correct horse battery staple';

describe('handshake packets', () => {
  const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });
  const packet: fc.Arbitrary<Packet> = fc.oneof(
    fc.record({ tag: fc.constant(Tag.Hello), version: fc.integer({ min: 0, max: 0xffff }), scheme: fc.integer({ min: 0, max: 255 }), nonce: bytes(0, 64) }) as fc.Arbitrary<Hello>,
    fc.record(
      { tag: fc.constant(Tag.ClientAuth), version: fc.integer({ min: 0, max: 0xffff }), scheme: fc.integer({ min: 0, max: 255 }), proof: bytes(0, 64), clientNonce: bytes(0, 32) },
      { requiredKeys: ['tag', 'version', 'scheme', 'proof'] },
    ) as fc.Arbitrary<ClientAuth>,
    fc.record(
      { tag: fc.constant(Tag.Ack), status: fc.integer({ min: 0, max: 255 }), reason: fc.string({ maxLength: 200 }), serverProof: bytes(0, 32) },
      { requiredKeys: ['tag', 'status', 'reason'] },
    ) as fc.Arbitrary<Ack>,
  );
  const normal = (p: Packet) => Object.fromEntries(Object.entries(p).map(([k, v]) => [k, v instanceof Uint8Array ? [...v] : v]));

  it('decode(encode(p)) is p, for every packet, however the stream cuts it', () => {
    fc.assert(
      fc.property(fc.array(packet, { minLength: 1, maxLength: 5 }), fc.array(fc.nat(), { maxLength: 10 }), (packets, cuts) => {
        const wire = Buffer.concat(packets.map(encodePacket));
        const reader = new PacketReader();
        const got: Packet[] = [];
        let at = 0;
        for (const cut of [...cuts.map((c) => c % (wire.length + 1)).sort((a, b) => a - b), wire.length]) {
          reader.push(wire.subarray(at, Math.max(at, cut)));
          at = Math.max(at, cut);
          for (let body = reader.next(); body !== undefined; body = reader.next()) got.push(decodePacket(body));
        }
        assert.deepEqual(got.map(normal), packets.map(normal));
        assert.equal(reader.takeRest().length, 0);
      }),
    );
  });

  it('any bytes decode to a packet or fail with HANDSHAKE_FAILED, never anything else', () => {
    fc.assert(
      fc.property(fc.oneof(bytes(0, 80), fc.tuple(fc.constantFrom(1, 2, 3), bytes(0, 80)).map(([t, b]) => Uint8Array.of(t, ...b))), (body) => {
        try {
          decodePacket(body);
        } catch (err) {
          assert.ok(RpcError.is(err) && err.code === 'HANDSHAKE_FAILED', String(err));
        }
      }),
    );
  });

  it('a length prefix over 4096 is refused before its body arrives', () => {
    const reader = new PacketReader();
    reader.push(Uint8Array.of(0x01, 0x10, 0, 0)); // 4097
    assert.throws(() => reader.next(), (err: RpcError) => err.code === 'HANDSHAKE_FAILED' && /4097 bytes exceeds the maximum of 4096/.test(err.message));
    assert.throws(() => encodePacket({ tag: Tag.Ack, status: 1, reason: 'x'.repeat(kMaxPacketBytes) }), /exceeds 4096/);
  });

  it('the v1 byte layout: Hello is 38 bytes, a plain ClientAuth carries no extension', () => {
    const hello = encodePacket({ tag: Tag.Hello, version: 1, scheme: SchemeCode.hmac, nonce: new Uint8Array(32).fill(7) });
    assert.deepEqual([...hello.subarray(0, 10)], [38, 0, 0, 0, 1, 1, 0, 1, 32, 0]);
    const auth = encodePacket({ tag: Tag.ClientAuth, version: 1, scheme: 0, proof: new Uint8Array(0) });
    assert.deepEqual([...auth], [6, 0, 0, 0, 2, 1, 0, 0, 0, 0]);
    const ack = encodePacket({ tag: Tag.Ack, status: 1, reason: 'no' });
    assert.deepEqual([...ack], [6, 0, 0, 0, 3, 1, 2, 0, 0x6e, 0x6f]);
  });

  it('the HMAC proof is HMAC-SHA256(secret, label ‖ version LE ‖ nonce); the server proof differs from it', async () => {
    const { createHmac } = await import('node:crypto');
    const nonce = new Uint8Array(32).fill(9);
    const expected = createHmac('sha256', 'k').update(Buffer.concat([Buffer.from('ogurpchik/handshake/v1'), Buffer.from([1, 0]), nonce])).digest();
    assert.deepEqual(Buffer.from(clientProof(Buffer.from('k'), 1, nonce)), expected);
    assert.notDeepEqual(Buffer.from(serverProof(Buffer.from('k'), 1, nonce, nonce)), expected);
  });
});

/** A raw socket that speaks handshake packets, for playing a misbehaving client. */
class RawPeer {
  readonly socket: net.Socket;
  readonly #reader = new PacketReader();
  readonly #packets: Packet[] = [];
  #wake: (() => void) | undefined;
  /** Every byte received, packets included. */
  received = 0;
  readonly closed: Promise<void>;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      this.received += chunk.length;
      this.#reader.push(chunk);
      for (let b = this.#reader.next(); b !== undefined; b = this.#reader.next()) this.#packets.push(decodePacket(b));
      this.#wake?.();
    });
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
  }

  static connect(port: number): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(new RawPeer(socket)));
      socket.once('error', reject);
    });
  }

  async next(timeoutMs = 5000): Promise<Packet> {
    const deadline = Date.now() + timeoutMs;
    while (this.#packets.length === 0) {
      if (Date.now() > deadline) throw new Error('no packet in time');
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 20);
      });
    }
    return this.#packets.shift()!;
  }

  send(packet: Packet | Uint8Array): void {
    this.socket.write(packet instanceof Uint8Array ? packet : encodePacket(packet));
  }
}

async function expectRejectedAck(peer: RawPeer, reason: RegExp): Promise<Ack> {
  const ack = (await peer.next()) as Ack;
  assert.equal(ack.tag, Tag.Ack);
  assert.equal(ack.status, AckStatus.Rejected);
  assert.match(ack.reason, reason);
  await peer.closed;
  return ack;
}

const auths = (res: any) => res.peer.auth;

describe('handshake schemes between processes', function () {
  this.timeout(60_000);
  let dirs: ReturnType<typeof tempDir>;
  before(() => (dirs = tempDir()));
  after(() => dirs.remove());
  afterEach(async () => {
    await sleep(50); // a killed server's segments go with its process
    assert.deepEqual(fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`ogurpchik-hs${process.pid}-`)), [], 'shared-memory segments left behind');
  });
  let serial = 0;
  const transports: { kind: string; server: (auth: string) => Record<string, unknown>; client: (s: ChildServer) => TransportDescriptor }[] = [
    { kind: 'tcp', server: () => ({ transport: 'tcp' }), client: (s) => tcp(s.address as any) },
    {
      kind: 'unix',
      server: (auth) => ({ transport: 'unix', path: path.join(dirs.dir, `${auth}-${++serial}.sock`) }),
      client: (s) => unix((s.address as any).path),
    },
    {
      kind: 'shm',
      server: (auth) => ({ transport: 'shm', name: `hs${process.pid}-${auth}-${++serial}` }),
      client: (s) => shm((s.address as any).name),
    },
  ];

  for (const t of transports) {
    describe(`over ${t.kind}`, () => {
      before(function () {
        if (t.kind === 'shm' && !nativeAvailable()) this.skip();
      });

      it('version-only: the handler sees auth "version"; an HMAC client is refused with both schemes named', async () => {
        const server = await startServer({ ...t.server('version'), handler: 'module', auth: 'version' });
        try {
          const node = await new Node().handshakeVersionOnly().connect(t.client(server)).start();
          const res = await node.client.call({ type: 'Pid' });
          assert.equal(auths(res), 'version');
          const err = await rejectionOf(new Node().authHmac(kSecret).connect(t.client(server)).start());
          assert.equal(err.code, 'HANDSHAKE_FAILED');
          assert.match(err.message, /this client uses hmac, the server requires version/);
          // The refused client did not disturb the first connection.
          assert.deepEqual(await node.client.call({ type: 'Echo', text: 'still' }), { type: 'Echo', text: 'still' });
          await node.close();
        } finally {
          await server.kill('SIGTERM');
        }
      });

      it('HMAC: the right secret (plain and mutual) is served with auth "hmac"; a wrong one gets AUTH_FAILED with the server\'s reason', async () => {
        const server = await startServer({ ...t.server('hmac'), handler: 'main', auth: 'hmac', secret: kSecret });
        try {
          const plain = await new Node().authHmac(kSecret).connect(t.client(server)).start();
          assert.equal(auths(await plain.client.call({ type: 'Pid' })), 'hmac');
          const mutual = await new Node().authHmac(new TextEncoder().encode(kSecret), { mutual: true }).connect(t.client(server)).start();
          assert.equal(auths(await mutual.client.call({ type: 'Pid' })), 'hmac');
          const err = await rejectionOf(new Node().authHmac('wrong secret').connect(t.client(server)).start());
          assert.equal(err.code, 'AUTH_FAILED');
          assert.match(err.message, /the server rejected the handshake: HMAC proof rejected/);
          assert.doesNotMatch(JSON.stringify(toWireError(err)), /wrong secret|correct horse/);
          const versionOnly = await rejectionOf(new Node().handshakeVersionOnly().connect(t.client(server)).start());
          assert.equal(versionOnly.code, 'HANDSHAKE_FAILED');
          assert.match(versionOnly.message, /this client uses version, the server requires hmac/);
          assert.deepEqual(await plain.client.call({ type: 'Echo', text: 'a' }), { type: 'Echo', text: 'a' });
          assert.deepEqual(await mutual.client.call({ type: 'Echo', text: 'b' }), { type: 'Echo', text: 'b' });
          await plain.close();
          await mutual.close();
        } finally {
          await server.kill('SIGTERM');
        }
      });
    });
  }

  it('a client with a handshake against a server without one fails on time with HANDSHAKE_FAILED', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    try {
      const started = Date.now();
      const err = await rejectionOf(new Node({ handshakeTimeoutMs: 300 }).authHmac(kSecret).connect(tcp(server.address as any)).start());
      assert.equal(err.code, 'HANDSHAKE_FAILED');
      assert.match(err.message, /no Hello from the server .* within 300 ms/);
      assert.ok(Date.now() - started < 3000);
    } finally {
      await server.kill('SIGTERM');
    }
  });

  it('a client without a handshake against a server with one: start() or its calls fail with HANDSHAKE_FAILED naming the scheme', async () => {
    const server = await new Node().authHmac(kSecret).serve(tcp('127.0.0.1:0'), { onRequest: () => 'pong' }).start();
    try {
      // The server's Hello can reach the client before start() resolves or after its first call
      // left, and the connection's task can end before the main thread has read why: 300 rounds
      // so that each order is met (the reason was lost to "the connection was closed" in 3-13% of rounds).
      for (let round = 0; round < 300; round++) {
        const { err, started, closedWith } = await refusalOf(new Node().connect(tcp(server.addresses[0] as any)).start(), (node) =>
          node.client.call({ type: 'Ping' }, { timeoutMs: 5000 }),
        );
        if (started) assert.equal(closedWith?.code, 'HANDSHAKE_FAILED');
        assert.equal(err.code, 'HANDSHAKE_FAILED', `round ${round}: ${err.message}`);
        assert.match(err.message, /the server runs a hmac handshake, but this client has none/);
      }
    } finally {
      await server.close();
    }
  });

  it('one-to-one: a second client that passes the handshake is refused with BUSY from start()', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module', oneToOne: true, auth: 'hmac', secret: kSecret });
    try {
      const first = await new Node().authHmac(kSecret).connect(tcp(server.address as any)).start();
      const err = await rejectionOf(new Node().authHmac(kSecret).connect(tcp(server.address as any)).start());
      assert.equal(err.code, 'BUSY');
      assert.match(err.message, /busy: this server is one-to-one/);
      assert.deepEqual(await first.client.call({ type: 'Ping' }), { type: 'Pong' });
      await first.close();
      await sleep(50);
      const third = await new Node().authHmac(kSecret).connect(tcp(server.address as any)).start();
      assert.deepEqual(await third.client.call({ type: 'Ping' }), { type: 'Pong' });
      await third.close();
    } finally {
      await server.kill('SIGTERM');
    }
  });
});

describe('handshake attacks and bad input', function () {
  this.timeout(30_000);
  let server: ChildServer;
  let port: number;
  let good: RunningNode<any, any>;

  before(async () => {
    server = await startServer({ transport: 'tcp', handler: 'module', auth: 'hmac', secret: kSecret, handshakeTimeoutMs: 400 });
    port = (server.address as any).port;
    good = await new Node().authHmac(kSecret).connect(tcp(server.address as any)).start();
  });
  after(async () => {
    await good?.close();
    await server?.kill('SIGTERM');
  });
  afterEach(async () => {
    // The established connection is never affected.
    assert.deepEqual(await good.client.call({ type: 'Echo', text: 'ok' }), { type: 'Echo', text: 'ok' });
    assert.equal(good.client.closedWith, undefined);
  });

  it('a ClientAuth recorded from a real client and replayed on a new connection is rejected', async () => {
    // A recording proxy between a real client and the server captures the client's bytes.
    const recorded: Buffer[] = [];
    const proxy = net.createServer((inbound) => {
      const outbound = net.connect(port, '127.0.0.1');
      inbound.on('data', (c) => {
        recorded.push(c);
        outbound.write(c);
      });
      outbound.on('data', (c) => inbound.write(c));
      inbound.on('error', () => outbound.destroy());
      outbound.on('error', () => inbound.destroy());
      inbound.on('close', () => outbound.destroy());
      outbound.on('close', () => inbound.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const proxied = await new Node().authHmac(kSecret).connect(tcp({ host: '127.0.0.1', port: (proxy.address() as net.AddressInfo).port })).start();
      assert.deepEqual(await proxied.client.call({ type: 'Ping' }), { type: 'Pong' });
      await proxied.close();
      const reader = new PacketReader();
      reader.push(Buffer.concat(recorded));
      const captured = reader.next()!;
      assert.equal(decodePacket(captured).tag, Tag.ClientAuth);
      const replayer = await RawPeer.connect(port);
      const hello = (await replayer.next()) as Hello;
      assert.equal(hello.tag, Tag.Hello);
      replayer.send(Buffer.concat([Buffer.from(Uint32Array.of(captured.length).buffer), captured]));
      await expectRejectedAck(replayer, /HMAC proof rejected/);
    } finally {
      proxy.close();
    }
  });

  it('an oversized handshake packet (> 4096 bytes) is refused at once', async () => {
    const peer = await RawPeer.connect(port);
    await peer.next();
    const started = Date.now();
    peer.send(Uint8Array.of(0x88, 0x13, 0, 0, 2, 1, 0)); // claims 5000 bytes
    await expectRejectedAck(peer, /5000 bytes exceeds the maximum of 4096/);
    assert.ok(Date.now() - started < 350, 'refused before the step timeout');
  });

  it('a client that stalls mid-handshake is dropped on time while another client connects', async () => {
    const peer = await RawPeer.connect(port);
    const started = Date.now();
    assert.equal((await peer.next()).tag, Tag.Hello);
    peer.send(encodePacket({ tag: Tag.ClientAuth, version: 1, scheme: 1, proof: new Uint8Array(32) }).subarray(0, 9)); // half a packet, then silence
    const other = await new Node().authHmac(kSecret).connect(tcp(server.address as any)).start();
    assert.deepEqual(await other.client.call({ type: 'Ping' }), { type: 'Pong' });
    await expectRejectedAck(peer, /handshake timed out: no ClientAuth from the client within 400 ms/);
    const took = Date.now() - started;
    assert.ok(took >= 350 && took < 2500, `dropped after ${took} ms`);
    assert.deepEqual(await other.client.call({ type: 'Ping' }), { type: 'Pong' });
    await other.close();
  });

  it('a scheme mismatch is refused by the server with both schemes named', async () => {
    const peer = await RawPeer.connect(port);
    await peer.next();
    peer.send({ tag: Tag.ClientAuth, version: 1, scheme: SchemeCode.version, proof: new Uint8Array(0) });
    await expectRejectedAck(peer, /scheme mismatch: this server requires hmac, the client offered version/);
  });

  it('frames from a client without a handshake are refused, not served', async () => {
    const peer = await RawPeer.connect(port);
    await peer.next();
    peer.send(Uint8Array.of(14, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0));
    const ack = await expectRejectedAck(peer, /expected ClientAuth from the client \(tag 2\), got tag 1/);
    assert.equal(peer.received, 4 + 38 + encodePacket(ack).length, 'nothing but Hello and Ack was sent: the request was not answered');
  });
});

it('closing a server does not wait for clients stalled in their handshake', async function () {
  this.timeout(20_000);
  const server = await new Node({ handshakeTimeoutMs: 15_000 }).authHmac(kSecret).serve(tcp('127.0.0.1:0'), { onRequest: () => 'x' }).start();
  const peer = await RawPeer.connect((server.addresses[0] as any).port);
  assert.equal((await peer.next()).tag, Tag.Hello);
  const started = Date.now();
  await server.close();
  await peer.closed;
  const took = Date.now() - started;
  assert.ok(took < 3000, `close took ${took} ms`);
});

describe('mutual HMAC against an impostor', function () {
  this.timeout(20_000);

  /** A server that does not know the secret: sends Hello, records ClientAuth and whatever follows, answers `ack`. */
  async function impostor(ack: (auth: ClientAuth) => Ack) {
    const seen = { auth: undefined as ClientAuth | undefined, authBytes: 0, after: 0 };
    const srv = net.createServer((socket) => {
      socket.on('error', () => {});
      const reader = new PacketReader();
      socket.write(encodePacket({ tag: Tag.Hello, version: 1, scheme: SchemeCode.hmac, nonce: new Uint8Array(32).fill(1) }));
      socket.on('data', (chunk) => {
        if (seen.auth) return void (seen.after += chunk.length);
        reader.push(chunk);
        const body = reader.next();
        if (body === undefined) return;
        seen.authBytes = body.length;
        seen.auth = decodePacket(body) as ClientAuth;
        seen.after += reader.takeRest().length;
        socket.write(encodePacket(ack(seen.auth)));
      });
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    return { port: (srv.address() as net.AddressInfo).port, seen, close: () => srv.close() };
  }

  it('a mutual client refuses a server that sends no proof, or a wrong one, and sends it no call', async () => {
    for (const serverProof of [undefined, new Uint8Array(32).fill(0xaa)]) {
      const fake = await impostor(() => ({ tag: Tag.Ack, status: 0, reason: '', ...(serverProof ? { serverProof } : {}) }));
      try {
        const err = await rejectionOf(new Node().authHmac(kSecret, { mutual: true }).connect(tcp({ host: '127.0.0.1', port: fake.port })).start());
        assert.equal(err.code, 'AUTH_FAILED');
        assert.match(err.message, serverProof ? /server's proof is wrong/ : /sent no proof/);
        assert.equal(fake.seen.auth?.clientNonce?.length, 32);
        await sleep(50);
        assert.equal(fake.seen.after, 0, 'the client sent nothing after its ClientAuth');
      } finally {
        fake.close();
      }
    }
  });

  it('a client not requiring mutual interoperates with a v1-only server and sends it a plain v1 ClientAuth', async () => {
    const fake = await impostor(() => ({ tag: Tag.Ack, status: 0, reason: '' }));
    try {
      const node = await new Node().authHmac(kSecret).connect(tcp({ host: '127.0.0.1', port: fake.port })).start();
      assert.equal(fake.seen.authBytes, 1 + 2 + 1 + 2 + 32, 'no mutual extension');
      assert.equal(fake.seen.auth?.clientNonce, undefined);
      void node.client.call({ type: 'Ping' }, { timeoutMs: 200 }).catch(() => {});
      for (let i = 0; i < 50 && fake.seen.after === 0; i++) await sleep(10);
      assert.ok(fake.seen.after > 0, 'calls flow after the handshake');
      await node.close();
    } finally {
      fake.close();
    }
  });
});

describe('handshake cost', function () {
  this.timeout(20_000);

  it('measures one HMAC handshake on loopback (target < 2 ms; printed, not asserted)', async () => {
    const spec = { scheme: 'hmac' as const, timeoutMs: 5000, secret: new TextEncoder().encode(kSecret), mutual: true };
    const srv = net.createServer({ noDelay: true }, (socket) => {
      const ch = new HandshakeChannel((b) => socket.write(b));
      socket.on('data', (c) => ch.push(c));
      socket.on('error', () => {});
      void serverHandshake(ch, { spec }).then(() => socket.end(), () => socket.destroy());
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const port = (srv.address() as net.AddressInfo).port;
    const times: number[] = [];
    try {
      for (let i = 0; i < 200; i++) {
        const socket = await new Promise<net.Socket>((resolve) => {
          const s = net.connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(s));
        });
        const started = performance.now();
        const ch = new HandshakeChannel((b) => socket.write(b));
        socket.on('data', (c) => ch.push(c));
        const result = await clientHandshake(ch, spec);
        times.push(performance.now() - started);
        assert.equal(result.auth, 'hmac');
        socket.destroy();
      }
    } finally {
      srv.close();
    }
    times.sort((a, b) => a - b);
    const at = (q: number) => times[Math.floor(q * (times.length - 1))].toFixed(3);
    console.log(`      handshake (mutual HMAC, loopback TCP, in-process peers): median ${at(0.5)} ms, p90 ${at(0.9)} ms, p99 ${at(0.99)} ms over ${times.length}`);
  });
});

describe('signed process', function () {
  this.timeout(30_000);
  let dirs: ReturnType<typeof tempDir>;
  let signedNode: string;
  const keyPair = () => {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    return { raw: Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url'), privateKey };
  };
  const trusted = keyPair();
  let server: RunningNode;
  let port: number;
  let unixServer: RunningNode;
  let shmServer: RunningNode;
  let unixPath: string;
  const shmName = `signed-${process.pid}`;

  before(async () => {
    dirs = tempDir();
    signedNode = signedNodeCopy(dirs.dir, trusted.privateKey);
    server = await new Node()
      .authSignedProcess(trusted.raw.toString('base64'))
      .serve(tcp('127.0.0.1:0'), { onRequest: (_req: unknown, ctx) => ctx.peer })
      .start();
    port = (server.addresses[0] as any).port;
    unixPath = path.join(dirs.dir, 'signed.sock');
    const peer = { onRequest: (_req: unknown, ctx: any) => ctx.peer };
    unixServer = await new Node().authSignedProcess(trusted.raw).serve(unix(unixPath), peer).start();
    shmServer = await new Node().authSignedProcess(trusted.raw).serve(shm(shmName), peer).start();
  });
  after(async () => {
    await server?.close();
    await unixServer?.close();
    await shmServer?.close();
    dirs?.remove();
  });

  /** Runs the client fixture with `binary` (its node given `key`, or none when null) and returns what it printed. */
  async function runClient(binary: string, key: Uint8Array | null = trusted.raw, target: Record<string, unknown> = { port }): Promise<any> {
    const script = new URL('./fixtures/signed-client.js', import.meta.url).pathname;
    const child = spawn(binary, [script, JSON.stringify({ ...target, ...(key ? { key: Buffer.from(key).toString('base64') } : {}) })], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    await new Promise((resolve) => child.once('exit', resolve));
    return JSON.parse(out);
  }

  it('serves a client process whose image is signed with the key; the handler sees its OS pid', async () => {
    const result = await runClient(signedNode);
    assert.equal(result.error, undefined, JSON.stringify(result.error));
    assert.equal(result.peer.auth, 'signed-process');
    assert.equal(result.peer.pid, result.pid);
  });

  it('a client needs no key: authSignedProcess() with none connects to a signed-process server', async () => {
    const result = await runClient(signedNode, null);
    assert.equal(result.error, undefined, JSON.stringify(result.error));
    assert.equal(result.peer.auth, 'signed-process');
    assert.equal(result.peer.pid, result.pid);
  });

  it('a server needs its key: serving with authSignedProcess() and none is refused at start() with INVALID_ARGUMENT', async () => {
    const err = await rejectionOf(new Node().authSignedProcess().serve(unix(path.join(dirs.dir, 'keyless.sock')), { onRequest: () => 'no' }).start());
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /authSignedProcess\(publicKey\)/);
    assert.equal(fs.existsSync(path.join(dirs.dir, 'keyless.sock')), false, 'nothing was bound');
  });

  it('also over a Unix socket and over shm, where the pid comes from SO_PEERCRED', async () => {
    for (const target of [{ path: unixPath }, { shmName }]) {
      const result = await runClient(signedNode, trusted.raw, target);
      assert.equal(result.error, undefined, JSON.stringify(result.error));
      assert.equal(result.peer.auth, 'signed-process');
      assert.equal(result.peer.pid, result.pid, `pid over ${JSON.stringify(target)}`);
    }
  });

  it('refuses a copy of a signed binary that was modified after signing', async () => {
    const modified = path.join(dirs.dir, 'node-modified');
    fs.copyFileSync(fs.realpathSync(process.execPath), modified);
    fs.chmodSync(modified, 0o755);
    fs.writeFileSync(`${modified}.sig`, sign(null, fs.readFileSync(modified), trusted.privateKey));
    fs.appendFileSync(modified, Buffer.from([0])); // trailing bytes: it still runs, but is not what was signed
    const result = await runClient(modified);
    assert.equal(result.error?.code, 'AUTH_FAILED');
    assert.match(result.error.message, /does not match its image and the configured key/);
  });

  it('refuses a process whose image has no signature, and one signed with another key, with AUTH_FAILED', async () => {
    // This test process runs the unsigned binary.
    const err = await rejectionOf(new Node().authSignedProcess(trusted.raw).connect(tcp({ host: '127.0.0.1', port })).start());
    assert.equal(err.code, 'AUTH_FAILED');
    assert.match(err.message, new RegExp(`check of pid ${process.pid} failed: its image .* has no signature file`));
    const other = keyPair();
    const otherServer = await new Node().authSignedProcess(other.raw).serve(tcp('127.0.0.1:0'), { onRequest: () => 'no' }).start();
    try {
      const savedPort = port;
      port = (otherServer.addresses[0] as any).port;
      const result = await runClient(signedNode, other.raw);
      port = savedPort;
      assert.equal(result.error?.code, 'AUTH_FAILED');
      assert.match(result.error.message, /does not match its image and the configured key/);
    } finally {
      await otherServer.close();
    }
  });
});
