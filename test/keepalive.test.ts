/** Keepalive: a peer that stops answering is detected; a quiet but healthy one is not. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { Node, tcp } from '../src/index.js';
import { createCodec } from '../src/codec/index.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { Kind, encodeRequest } from '../src/protocol/envelope.js';
import { rejectionOf, sleep, startServer } from './helpers.js';

/** Tokens past 2^53-1: the whole u64 is the peer's to use. */
const kBigTokens = [2n ** 53n + 1n, 2n ** 64n - 1n, 0x0102030405060708n];

/** A Ping body, laid out by hand as docs/PROTOCOL.md says: kind 6, then the token as a u64 LE. */
function ping(token: bigint): Uint8Array {
  const body = new Uint8Array(9);
  body[0] = Kind.Ping;
  new DataView(body.buffer).setBigUint64(1, token, true);
  return body;
}

/** The token of a Pong body, read by hand. */
function pongToken(body: Uint8Array): bigint | undefined {
  return body[0] === Kind.Pong && body.length === 9 ? new DataView(body.buffer, body.byteOffset).getBigUint64(1, true) : undefined;
}

/** Collects the bodies `socket` receives, framed. */
function bodiesOf(socket: net.Socket): Uint8Array[] {
  const bodies: Uint8Array[] = [];
  const decoder = new FrameDecoder();
  socket.on('data', (chunk) => decoder.push(chunk, (body) => void bodies.push(body.slice())));
  return bodies;
}

/** A process's state letter from /proc/<pid>/stat ('T' once stopped). */
function processState(pid: number): string | undefined {
  try {
    return /\) (\S)/.exec(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))?.[1];
  } catch {
    return undefined;
  }
}

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  for (const t0 = Date.now(); !ok(); await sleep(5)) if (Date.now() - t0 > ms) throw new Error(`${what} within ${ms} ms`);
}

describe('keepalive', function () {
  this.timeout(20_000);

  it('a server process that stops answering (SIGSTOP) is detected within the interval', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    const node = await new Node({ keepAliveMs: 200 }).connect<any, any>(tcp(server.address as any)).start();
    try {
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
      process.kill(server.pid, 'SIGSTOP'); // the kernel keeps the socket open; nobody answers
      // kill() only queues the signal: until the process shows as stopped, it may still answer.
      await until('the server stopped', () => processState(server.pid) === 'T', 2000);
      const t0 = Date.now();
      const err = await rejectionOf(node.client.call({ type: 'Ping' }));
      const took = Date.now() - t0;
      assert.equal(err.code, 'CLOSED');
      assert.match(err.message, /did not answer a keepalive ping within 200 ms/);
      assert.ok(took < 1500, `detected after ${took} ms`);
    } finally {
      process.kill(server.pid, 'SIGCONT');
      await node.close();
      await server.kill();
    }
  });

  it('an idle, healthy connection stays open across many intervals (pings are answered)', async () => {
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    const node = await new Node({ keepAliveMs: 50 }).connect<any, any>(tcp(server.address as any)).start();
    try {
      await sleep(600);
      assert.equal(node.client.closedWith, undefined);
      assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
    } finally {
      await node.close();
      await server.kill();
    }
  });

  it('a server answers a Ping whose token is past 2^53 with a Pong of the same token, and the connection goes on', async () => {
    const server = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (req: unknown) => req }).start();
    const socket = net.connect((server.addresses[0] as { port: number }).port, '127.0.0.1');
    try {
      socket.on('error', () => {});
      const bodies = bodiesOf(socket);
      for (const token of kBigTokens) socket.write(encodeFrame(ping(token)));
      socket.write(encodeFrame(encodeRequest(1, 0, createCodec().encode('still here'))));
      await until('no Pongs and answer', () => bodies.length >= kBigTokens.length + 1 || socket.closed);
      assert.deepEqual(bodies.map(pongToken).filter((t) => t !== undefined), kBigTokens);
      const answer = bodies.find((b) => b[0] === Kind.Response);
      assert.ok(answer !== undefined, `no answer: ${bodies.map((b) => b[0])}`);
      assert.equal(createCodec().decode(answer.subarray(9)), 'still here');
    } finally {
      socket.destroy();
      await server.close();
    }
  });

  it('a client answers a Ping whose token is past 2^53 with a Pong of the same token, and stays open', async () => {
    const pongs: bigint[] = [];
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      const decoder = new FrameDecoder();
      socket.on('data', (chunk) =>
        decoder.push(chunk, (body) => {
          const token = pongToken(body);
          if (token !== undefined) pongs.push(token);
        }),
      );
      for (const token of kBigTokens) socket.write(encodeFrame(ping(token)));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const node = await new Node().connect(tcp({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port })).start();
    try {
      await until('no Pongs', () => pongs.length >= kBigTokens.length || node.client.closedWith !== undefined);
      assert.deepEqual(pongs, kBigTokens);
      await sleep(50);
      assert.equal(node.client.closedWith, undefined);
    } finally {
      await node.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('rejects a bad interval', () => {
    assert.throws(() => new Node({ keepAliveMs: -1 }), (e: any) => e.code === 'INVALID_ARGUMENT');
  });
});
