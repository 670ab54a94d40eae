/**
 * One main↔worker ring pair per pool thread: every connection a pool thread hosts for this
 * thread (client connections of all nodes and served ones alike) rides it. A connection that is
 * held, paused or closed never stalls the others on the pair, and a dead thread settles every
 * call of every connection that shared its pair.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { Node, unix, type RunningNode } from '../src/index.js';
import { ringPairs } from '../src/bridge/main-hub.js';
import { tempDir, within } from './helpers.js';
import { waitUntil } from './endpoints-helpers.js';

const kConnections = 64;
/** One pool thread, so every connection of this process lands on the same one. */
const kPool = { threads: 1 };
const kCrashHandler = new URL('./fixtures/crash-handler.js', import.meta.url);

describe('shared ring pair', function () {
  this.timeout(60_000);
  let tmp: ReturnType<typeof tempDir>;
  const nodes: RunningNode<any, any>[] = [];
  const servers: net.Server[] = [];

  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(async () => {
    await Promise.allSettled(nodes.splice(0).map((n) => n.close()));
    for (const s of servers.splice(0)) s.close();
    tmp.remove();
  });

  async function clients(file: string, n: number): Promise<RunningNode<any, any>[]> {
    const started = await Promise.all(Array.from({ length: n }, () => new Node({ pool: kPool }).connect<any, any>(unix(file)).start()));
    nodes.push(...started);
    return started;
  }

  it('64 connections on one pool thread share one ring pair, and every call on each answers', async () => {
    const file = path.join(tmp.dir, 's.sock');
    const server = await new Node({ pool: kPool }).serve(unix(file), { onRequest: (req: unknown) => req }).start();
    nodes.push(server);
    const all = await clients(file, kConnections);
    const pairs = new Set<number | undefined>();
    for (const c of all) pairs.add((await c.stats()).endpoints[0].ringPair);
    assert.equal(pairs.size, 1, `one ring pair for all: ${[...pairs]}`);
    const [id] = pairs;
    assert.equal(typeof id, 'number');
    // The server's side of each connection is announced to this thread by a record on the pair, read a moment after the client's start().
    await waitUntil(() => ringPairs().some((p) => p.connections === 2 * kConnections), 5000, 'every connection announced on the pair');
    const live = ringPairs().filter((p) => p.tasks > 0);
    assert.equal(live.length, 1, `one pair carries every task: ${JSON.stringify(live)}`);
    // The listener and the 64 client tasks; its 64 served connections and the 64 client ones.
    const { reader, ...pair } = live[0];
    assert.deepEqual(pair, { id, tasks: kConnections + 1, connections: 2 * kConnections });
    assert.deepEqual({ spinMicros: reader.spinMicros, pollMicros: reader.pollMicros }, { spinMicros: 0, pollMicros: 0 }, "unix under 'balanced': no main-thread window");
    for (let round = 0; round < 5; round++) {
      const answers = await Promise.all(all.map((c, i) => c.client.call({ i, round })));
      assert.deepEqual(answers, all.map((_, i) => ({ i, round })));
    }
  });

  it('64 connections on one pool thread hold one control channel in all, not a MessagePort each, and each still answers stats() and close()', async () => {
    const file = path.join(tmp.dir, 's.sock');
    const server = await new Node({ pool: kPool }).serve(unix(file), { onRequest: (req: unknown) => req }).start();
    nodes.push(server);
    const ports = () => process.getActiveResourcesInfo().filter((r) => r === 'MessagePort').length;
    const before = ports();
    const all = await clients(file, kConnections);
    // The channels offered with each task's spec and not taken close a moment after start().
    await waitUntil(() => ports() <= before + 1, 5000, `one channel in all: MessagePorts ${before} before the clients, ${ports()} after`);
    for (const [i, c] of all.entries()) assert.deepEqual(await c.client.call({ i }), { i });
    // stats() asks each task's worker over the shared channel.
    for (const c of all) assert.ok((await c.stats()).endpoints[0].framesOut >= 1);
    await Promise.all(all.slice(0, kConnections / 2).map((c) => c.close()));
    for (const c of all.slice(kConnections / 2)) assert.deepEqual(await c.client.call({ still: true }), { still: true });
    assert.equal((await server.stats()).listeners[0].connections, kConnections / 2);
  });

  it('with two pool threads, client connections are packed on one (one pair), the listener goes to the other', async () => {
    const pool = { threads: 2 };
    const file = path.join(tmp.dir, 's.sock');
    const server = await new Node({ pool }).serve(unix(file), { onRequest: (req: unknown) => req }).start();
    nodes.push(server);
    const all = await Promise.all(Array.from({ length: 8 }, () => new Node({ pool }).connect<any, any>(unix(file)).start()));
    nodes.push(...all);
    const pairs = new Set<number | undefined>();
    for (const c of all) pairs.add((await c.stats()).endpoints[0].ringPair);
    assert.equal(pairs.size, 1, `the client connections share one pair: ${[...pairs]}`);
    const [id] = pairs;
    // After a call on each: the server has heard of every connection by then.
    const answers = await Promise.all(all.map((c, i) => c.client.call(i)));
    assert.deepEqual(answers, all.map((_, i) => i));
    const live = ringPairs().filter((p) => p.tasks > 0);
    const shape = live.map((p) => ({ clients: p.id === id, tasks: p.tasks, connections: p.connections })).sort((a, b) => Number(b.clients) - Number(a.clients));
    assert.deepEqual(shape, [
      { clients: true, tasks: 8, connections: 8 },
      { clients: false, tasks: 1, connections: 8 },
    ], `the listener's thread has a pair of its own: ${JSON.stringify(live)}`);
  });

  it('client connections spill to the next pool thread once theirs holds tasksPerThread tasks', async () => {
    const pool = { threads: 2, tasksPerThread: 4 };
    const file = path.join(tmp.dir, 's.sock');
    const server = await new Node({ pool }).serve(unix(file), { onRequest: (req: unknown) => req }).start();
    nodes.push(server);
    // One at a time, so the order they are placed in is known: 4 fill the clients' thread, 2 join the listener's.
    const all: RunningNode<any, any>[] = [];
    for (let i = 0; i < 6; i++) {
      all.push(await new Node({ pool }).connect<any, any>(unix(file)).start());
      nodes.push(all[i]);
    }
    const pairs = await Promise.all(all.map(async (c) => (await c.stats()).endpoints[0].ringPair));
    assert.equal(new Set(pairs.slice(0, 4)).size, 1, `the first four share a pair: ${pairs}`);
    assert.equal(new Set(pairs.slice(4)).size, 1, `the last two share a pair: ${pairs}`);
    assert.notEqual(pairs[4], pairs[0], `the last two went to the other thread: ${pairs}`);
    const answers = await Promise.all(all.map((c, i) => c.client.call(i)));
    assert.deepEqual(answers, all.map((_, i) => i));
  });

  it('a held call, a paused connection and a closed one never stall the others on the pair', async () => {
    const file = path.join(tmp.dir, 's.sock');
    let releaseHeld!: () => void;
    const held = new Promise<void>((resolve) => (releaseHeld = resolve));
    const server = await new Node({ pool: kPool }).serve(unix(file), {
      onRequest: async (req: any) => {
        if (req === 'hold') await held;
        return req;
      },
    }).start();
    nodes.push(server);
    // A peer that accepts and never reads: its client's socket backs up (ConnPaused).
    const deaf = path.join(tmp.dir, 'deaf.sock');
    const sockets: net.Socket[] = [];
    const deafServer = net.createServer((s) => {
      s.pause();
      sockets.push(s);
    });
    servers.push(deafServer);
    await new Promise<void>((resolve) => deafServer.listen(deaf, resolve));
    const stuck = await new Node({ pool: kPool }).connect<any, any>(unix(deaf)).start();
    nodes.push(stuck);
    const all = await clients(file, 16);
    const pairOf = async (n: RunningNode<any, any>) => (await n.stats()).endpoints[0].ringPair;
    const pair = await pairOf(all[0]);
    assert.equal(typeof pair, 'number');
    assert.equal(await pairOf(stuck), pair, 'the paused connection shares the pair');

    // 16 MiB toward a peer that reads nothing: far over any socket buffer.
    const blob = new Uint8Array(256 * 1024);
    const unanswered = Array.from({ length: 64 }, () => stuck.client.call(blob, { timeoutMs: 3000 }).then(() => 'answered', (err) => err.code));
    const holding = all[0].client.call('hold');
    // One connection closes in the middle of the others' bursts.
    const closing = all[1];
    const rest = all.slice(2);
    const bursts = rest.map(async (c, i) => {
      for (let round = 0; round < 20; round++) {
        assert.equal(await c.client.call(i * 100 + round), i * 100 + round);
        if (i === 0 && round === 5) await closing.close();
      }
    });
    await within(10_000, 'the other connections answered', Promise.all(bursts));
    assert.equal(await rejectionCode(closing.client.call(1)), 'CLOSED');
    releaseHeld();
    assert.equal(await holding, 'hold');
    const codes = await Promise.all(unanswered);
    assert.ok(codes.every((c) => c === 'TIMEOUT'), `the deaf peer's calls end with a code: ${[...new Set(codes)]}`);
    // What the deaf peer got is stuck in its socket, not lost elsewhere: the pair still carries calls.
    assert.equal(await rest[0].client.call('after'), 'after');
  });

  it('a pool thread that dies settles every call of every connection that shared its pair', async () => {
    const file = path.join(tmp.dir, 's.sock');
    // The handler runs in the pool thread, beside every client connection of this process.
    const server = await new Node({ pool: kPool }).serve(unix(file), kCrashHandler).start();
    nodes.push(server);
    const all = await clients(file, 32);
    const pair = (await all[0].stats()).endpoints[0].ringPair;
    assert.equal(typeof pair, 'number');
    for (const c of all) assert.equal((await c.stats()).endpoints[0].ringPair, pair);
    // Streams in flight on every connection (an item every 10 ms, for 10 s).
    const streams = all.slice(1).map(async (c) => {
      let items = 0;
      try {
        for await (const _ of c.client.stream({ type: 'Count', n: 1000 }, { timeoutMs: Infinity })) items++;
        return 'finished';
      } catch (err: any) {
        assert.ok(items < 1000);
        return err.code as string;
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    void all[0].client.call({ type: 'Exit' }).catch(() => {});
    const codes = await within(10_000, 'every stream settled', Promise.all(streams));
    assert.ok(codes.every((c) => c === 'CLOSED'), `every stream ends with CLOSED: ${[...new Set(codes)]}`);
    const after = await within(5_000, 'calls after the death settled', Promise.all(all.map((c) => rejectionCode(c.client.call('x', { timeoutMs: 4000 })))));
    assert.ok(after.every((c) => c === 'CLOSED'), `calls on the dead connections reject with CLOSED: ${[...new Set(after)]}`);
    // The dead thread's pair is gone; the restarted listener (a new thread) serves new clients.
    await waitUntil(() => !ringPairs().some((p) => p.id === pair), 5000, 'the dead pair is dropped');
    let answer: unknown;
    await waitUntil(async () => {
      try {
        const [fresh] = await clients(file, 1);
        answer = await fresh.client.call('again');
        return true;
      } catch {
        return false; // its listener is still being started again
      }
    }, 10_000, 'a new client is served');
    assert.equal(answer, 'again');
  });
});

async function rejectionCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err: any) {
    return err?.code ?? String(err);
  }
}
