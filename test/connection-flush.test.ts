/**
 * When a served connection (a handler running in the connection worker) writes its answers: those
 * to the calls of one read go out in the microtasks after that read, in one write, before the loop
 * turn ends; answers that come later go out at the host's end-of-turn flush.
 */
import assert from 'node:assert/strict';
import { createCodec } from '../src/codec/index.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { Session } from '../src/session/session.js';
import type { StreamEvents } from '../src/transport/types.js';
import { Connection, type ConnectionHost } from '../src/worker/connection.js';
import type { Handler } from '../src/types.js';

const codec = createCodec();

/** A served connection over a fake stream; `log` records writes and the host's flushes in order. */
function served(handler: Handler) {
  const log: string[] = [];
  const written: Uint8Array[] = [];
  let events!: StreamEvents;
  const dirty: Connection[] = [];
  const host: ConnectionHost = {
    codec,
    maxFrameBytes: 1 << 20,
    sendStacks: false,
    readsWaitForWrites: true,
    // What the worker hub does: one flush per dirty connection at the end of the turn.
    markDirty(c) {
      if (c.flushQueued) return;
      c.flushQueued = true;
      dirty.push(c);
      setImmediate(() => {
        log.push('host flush');
        for (const d of dirty.splice(0)) {
          d.flushQueued = false;
          d.flush();
        }
      });
    },
    closed() {},
  };
  const stream = {
    start(e: StreamEvents) {
      events = e;
    },
    write(chunk: Uint8Array) {
      log.push('write');
      written.push(chunk.slice());
      return true;
    },
    pause() {},
    resume() {},
    end() {},
    destroy() {},
  };
  const peer = { transport: 'unix', auth: 'none' as const, connectionId: 1 };
  const conn = new Connection(1, stream, peer, host);
  conn.attach(
    new Session({
      codec,
      peer,
      handler,
      send: (head, payload) => {
        conn.send2(head, payload);
        return undefined;
      },
    }),
  );
  conn.start();
  return { log, written, data: (chunk: Uint8Array) => events.data(chunk) };
}

/** `n` Request frames (ids 1..n) of the values in `values`, as one chunk, and a decoder of the answers. */
function requests(values: unknown[]): Uint8Array {
  const frames: Uint8Array[] = [];
  const caller = new Session({
    codec,
    peer: { transport: 'unix', auth: 'none', connectionId: 0 },
    send: (head, payload) => {
      const body = new Uint8Array(head.length + payload.length);
      body.set(head);
      body.set(payload, head.length);
      frames.push(encodeFrame(body));
    },
  });
  for (const v of values) caller.call(v).catch(() => {});
  return Buffer.concat(frames);
}

function frameCount(chunks: Uint8Array[]): number {
  let n = 0;
  const decoder = new FrameDecoder();
  for (const c of chunks) decoder.push(c, () => n++);
  return n;
}

describe('served connection flush', function () {
  this.timeout(5000);

  it('writes the answers to one read\'s calls in one write before the loop turn ends', async () => {
    const c = served({ async onRequest(req) { return req; } });
    // Queued before the read: runs at the end of this turn, before the host's flush.
    const turnEnd = new Promise<void>((resolve) => setImmediate(() => {
      c.log.push('turn end');
      resolve();
    }));
    c.data(requests(['a', 'b', 'c']));
    await turnEnd;
    assert.deepEqual(c.log, ['write', 'turn end']);
    assert.equal(frameCount(c.written), 3);
  });

  it('answers that come after the read\'s microtasks go out at the host\'s flush', async () => {
    const c = served({ onRequest: (req) => new Promise((resolve) => setTimeout(() => resolve(req), 5)) });
    c.data(requests(['late']));
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.deepEqual(c.log, ['host flush', 'write']);
    assert.equal(frameCount(c.written), 1);
  });
});
