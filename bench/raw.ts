/**
 * The raw baseline: a hand-rolled length-prefixed ping-pong over `net`, the naive code people
 * write — a promise per call resolved from a FIFO of resolvers, one `write` per message, no
 * batching. The server runs in a separate process (raw-server.ts).
 */

import net from 'node:net';
import { join } from 'node:path';
import { connectSocket, startServerChild, type ServerAddress } from './lib/children.js';
import { FrameSplitter, frame, frameHeaderBytes } from './lib/frames.js';
import { kPayloadBytes, type SocketKind, type Subject } from './lib/subject.js';

interface Waiter {
  resolve(body: Buffer): void;
  reject(err: Error): void;
}

/** Client side of the raw ping-pong; replies come back in request order, hence the FIFO. */
export class RawPingClient {
  private readonly waiters: Waiter[] = [];
  private readonly splitter = new FrameSplitter();

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      try {
        this.splitter.push(chunk, (reply) => this.waiters.shift()?.resolve(reply.subarray(frameHeaderBytes)));
      } catch (err) {
        socket.destroy(err as Error);
      }
    });
    // Every pending call settles: a closed or failed socket rejects whatever is still waiting.
    socket.on('error', () => {});
    socket.on('close', () => {
      const closed = new Error('raw ping-pong connection closed');
      for (const waiter of this.waiters.splice(0)) waiter.reject(closed);
    });
  }

  static connect(address: ServerAddress): Promise<RawPingClient> {
    if (address.kind === 'shm') return Promise.reject(new Error('the raw ping-pong runs over tcp or unix only'));
    return connectSocket(address).then((socket) => new RawPingClient(socket));
  }

  /** Sends `payload` as one frame; resolves with the echoed body. */
  call(payload: Uint8Array): Promise<Buffer> {
    if (this.socket.destroyed) return Promise.reject(new Error('raw ping-pong connection closed'));
    return new Promise<Buffer>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.socket.write(frame(payload));
    });
  }

  close(): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end();
      // A peer that never answers the FIN must not hold the bench up.
      setTimeout(() => this.socket.destroy(), 500).unref();
    });
  }
}

/**
 * Starts a raw echo server child and connects a client to it. `dir` holds the Unix socket;
 * `serverArgs` go to the server (e.g. `--in-worker --busy-slice-ms 20`), `name` names its socket.
 */
export async function startRawSubject(transport: SocketKind, dir: string, options: { serverArgs?: string[]; name?: string; label?: string } = {}): Promise<Subject> {
  const name = options.name ?? 'raw';
  const args = [...(transport === 'tcp' ? ['--kind', 'tcp'] : ['--kind', 'unix', '--path', join(dir, `${name}.sock`)]), ...(options.serverArgs ?? [])];
  const server = await startServerChild(new URL('./raw-server.js', import.meta.url), args, {
    label: `raw ${transport} server${options.serverArgs === undefined ? '' : ` (${options.serverArgs.join(' ')})`}`,
  });
  let client: RawPingClient;
  try {
    client = await RawPingClient.connect(server.address);
  } catch (err) {
    await server.stop();
    throw err;
  }
  return {
    key: name,
    label: options.label ?? 'raw ping-pong',
    transport,
    call: () => client.call(new Uint8Array(kPayloadBytes)),
    callBytes: (payload) => client.call(payload),
    close: async () => {
      await client.close();
      await server.stop();
    },
  };
}
