/**
 * A load generator that speaks ours' wire format over raw sockets: `connections` sockets to one
 * server, `perConnection` calls kept in flight on each. Each request is a Request envelope with a
 * 16-byte msgpack bin (docs/PROTOCOL.md); every read that completes answers is followed by as many
 * new requests in one write on that socket. A client this cheap per call leaves the server as the
 * thing measured. A raw echo server returns every frame unchanged, so the same load measures it.
 */
import net from 'node:net';
import { createCodec, msgpack } from '../../src/codec/index.js';
import { encodeRequest } from '../../src/protocol/envelope.js';
import { frame } from './frames.js';
import { kPayloadBytes } from './subject.js';

export type WireAddress = { path: string } | { host: string; port: number };

/** A connected socket; a full listen backlog (EAGAIN on a Unix socket) is tried again shortly, up to `tries` times. */
async function connectOne(address: WireAddress, tries = 50): Promise<net.Socket> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const socket = net.connect(address, () => {
          socket.off('error', reject);
          resolve(socket);
        });
        socket.once('error', reject);
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || attempt >= tries) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/** Open sockets that nobody has sent anything on yet. */
export async function openSockets(address: WireAddress, count: number): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  try {
    // A few at a time: a listen backlog of hundreds is not a given.
    for (let i = 0; i < count; i += 64) {
      const batch = Array.from({ length: Math.min(64, count - i) }, () => connectOne(address));
      sockets.push(...(await Promise.all(batch)));
    }
    for (const socket of sockets) {
      socket.setNoDelay?.(true);
      socket.on('error', () => {});
    }
    return sockets;
  } catch (err) {
    for (const socket of sockets) socket.destroy();
    throw err;
  }
}

const payload = createCodec(msgpack()).encode(new Uint8Array(kPayloadBytes));
let nextId = 1;

function requests(n: number): Buffer {
  const frames: Buffer[] = [];
  for (let i = 0; i < n; i++) frames.push(frame(encodeRequest(nextId++, 0, payload)));
  return Buffer.concat(frames);
}

/**
 * Calls/s the server answers over `connections` sockets with `perConnection` calls in flight on
 * each, counted for `durationMs` after `warmupMs`. The sockets are closed afterwards.
 */
export async function wireLoad(address: WireAddress, connections: number, perConnection: number, config: { warmupMs: number; durationMs: number }): Promise<number> {
  const sockets = await openSockets(address, connections);
  let answered = 0;
  let failure: Error | undefined;
  try {
    for (const socket of sockets) {
      let pending: Buffer = Buffer.alloc(0);
      socket.on('data', (chunk: Buffer) => {
        let buf = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
        let frames = 0;
        while (buf.length >= 4) {
          const end = 4 + buf.readUInt32LE(0);
          if (buf.length < end) break;
          buf = buf.subarray(end);
          frames++;
        }
        pending = buf;
        answered += frames;
        if (frames > 0) socket.write(requests(frames));
      });
      socket.on('close', () => (failure ??= new Error('the server closed a connection under load')));
      socket.write(requests(perConnection));
    }
    await new Promise((resolve) => setTimeout(resolve, config.warmupMs));
    const from = answered;
    const start = performance.now();
    await new Promise((resolve) => setTimeout(resolve, config.durationMs));
    const rate = (answered - from) / ((performance.now() - start) / 1000);
    if (failure !== undefined) throw failure;
    return rate;
  } finally {
    for (const socket of sockets) {
      socket.removeAllListeners('close');
      socket.destroy();
    }
  }
}
