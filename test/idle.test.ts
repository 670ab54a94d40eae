/** NodeOptions.idle and idleTuning (src/idle.ts): every preset end to end, the windows it sets on the rings, validation. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Node, RpcError, isolate, kIdlePresets, shm, unix, type IdlePreset, type NodeOptions, type TransportDescriptor } from '../src/index.js';
import { idleWindows } from '../src/idle.js';
import { ringPairs } from '../src/bridge/main-hub.js';
import { shmDirectStats } from '../src/main/shm-direct.js';
import { nativeAvailable } from '../src/native/addon.js';
import { sleep, tempDir } from './helpers.js';

const plugin = new URL('./fixtures/plugin.js', import.meta.url);
const presets = Object.keys(kIdlePresets) as IdlePreset[];
const kCalls = 20;
let serial = 0;

/**
 * The main thread's readers of what its peers send: the main ends of the ring pairs in use, and of
 * shm's direct links (this thread reads the peer's ring itself); their windows, and their spins and
 * sleeps summed.
 */
function readers(): { windows: Array<{ spinMicros: number; pollMicros: number }>; direct: Array<{ spinMicros: number; pollMicros: number }>; spins: number; sleeps: number } {
  const live = ringPairs().filter((p) => p.tasks > 0).map((p) => p.reader);
  const direct = shmDirectStats().readers;
  const all = [...live, ...direct];
  return {
    windows: live.map((r) => ({ spinMicros: r.spinMicros, pollMicros: r.pollMicros })),
    direct: direct.map((r) => ({ spinMicros: r.spinMicros, pollMicros: r.pollMicros })),
    spins: all.reduce((n, r) => n + r.spins, 0),
    sleeps: all.reduce((n, r) => n + r.sleeps, 0),
  };
}

/** kCalls calls a few ms apart (longer than any preset's windows, so each reader goes idle between them); asserts every answer. */
async function callSpaced(client: { call(req: unknown): Promise<unknown> }): Promise<void> {
  for (let i = 0; i < kCalls; i++) {
    await sleep(3);
    assert.equal(await client.call(i), i);
  }
}

describe('idle policy (NodeOptions.idle)', function () {
  this.timeout(20_000);
  let dir: ReturnType<typeof tempDir>;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => dir.remove());

  it("the presets: 'balanced' keeps the long-standing defaults; 'sleep' has no window; 'latency' adds the peer window and a main <-> worker window everywhere; 'spin' adds a busy-poll", () => {
    assert.deepEqual(presets, ['sleep', 'balanced', 'latency', 'spin']);
    assert.deepEqual(kIdlePresets.sleep, { spinMicros: 0, isolatePollMicros: 0, pollMicros: 0, peerPollMicros: 0, clientPollMicros: 0 });
    assert.deepEqual(kIdlePresets.balanced, { spinMicros: 0, isolatePollMicros: 50, pollMicros: 0, peerPollMicros: 0, clientPollMicros: 100 });
    assert.deepEqual(kIdlePresets.latency, { ...kIdlePresets.balanced, pollMicros: 50, peerPollMicros: 200 });
    assert.deepEqual(kIdlePresets.spin, { ...kIdlePresets.latency, spinMicros: 50 });
    // An isolate has no peer side and no client worker; idleTuning replaces single fields.
    assert.deepEqual(idleWindows('isolate', 'spin'), { spinMicros: 50, pollMicros: 50, peerPollMicros: 0, clientPollMicros: 0 });
    assert.deepEqual(idleWindows('unix', 'latency'), { spinMicros: 0, pollMicros: 50, peerPollMicros: 200, clientPollMicros: 100 });
    assert.deepEqual(idleWindows('unix', 'sleep', { clientPollMicros: 7 }), { spinMicros: 0, pollMicros: 0, peerPollMicros: 0, clientPollMicros: 7 });
  });

  it('an unknown preset, or idleTuning with an unknown field or a value outside 0..1e6, is refused with INVALID_ARGUMENT', () => {
    const bad: NodeOptions[] = [
      { idle: 'fast' as never },
      { idle: '' as never },
      { idle: 5 as never },
      { idle: null as never },
      { idle: 'toString' as never },
      { idleTuning: 'x' as never },
      { idleTuning: null as never },
      { idleTuning: { spinMicro: 5 } as never },
      { idleTuning: { spinMicros: -1 } },
      { idleTuning: { pollMicros: 1e6 + 1 } },
      { idleTuning: { peerPollMicros: Number.NaN } },
      { idleTuning: { clientPollMicros: '5' as never } },
    ];
    for (const options of bad) assert.throws(() => new Node(options), (e: RpcError) => e instanceof RpcError && e.code === 'INVALID_ARGUMENT', JSON.stringify(options));
    for (const idle of [undefined, ...presets]) new Node({ idle, idleTuning: { spinMicros: 0, pollMicros: 1e6, peerPollMicros: undefined } });
  });

  for (const idle of presets) {
    const p = kIdlePresets[idle];
    it(`'${idle}': a node serves and calls over unix and shm and gets answers; the main thread's rings wait as the preset says`, async function () {
      const transports: TransportDescriptor[] = [unix(path.join(dir.dir, 'idle.sock'))];
      if (nativeAvailable()) transports.push(shm(`t${process.pid}-idle-${++serial}`, { capacity: 1 << 16 }));
      for (const transport of transports) {
        // A main-thread handler: the server's requests, like the client's answers, arrive on this thread's rings.
        const server = await new Node({ idle }).serve(transport, { onRequest: (r: unknown) => r }).start();
        const client = await new Node({ idle }).connect<number, number>(transport).start();
        try {
          const before = readers();
          await callSpaced(client.client);
          assert.deepEqual(await Promise.all(Array.from({ length: 64 }, (_, i) => client.client.call(i))), Array.from({ length: 64 }, (_, i) => i));
          const after = readers();
          assert.ok(after.windows.length + after.direct.length > 0);
          for (const w of after.windows) assert.deepEqual(w, { spinMicros: p.spinMicros, pollMicros: p.pollMicros }, `${transport.kind}: the rings' windows`);
          // shm's direct path: this thread reads the peer's ring, with the peer window.
          if (transport.kind === 'shm') assert.equal(after.direct.length, 2, 'the client and the served connection each read their peer ring here');
          for (const w of after.direct) assert.deepEqual(w, { spinMicros: p.spinMicros, pollMicros: p.peerPollMicros }, `${transport.kind}: the direct rings' windows`);
          const spins = after.spins - before.spins;
          const sleeps = after.sleeps - before.sleeps;
          // Each spaced call: the server's reader waits for the request and the client's for the answer.
          if (idle === 'sleep' || idle === 'balanced') assert.ok(sleeps >= kCalls, `${transport.kind}: ${sleeps} sleeps in ${kCalls} spaced calls`);
          if (idle === 'spin') assert.ok(spins >= kCalls, `${transport.kind}: ${spins} spins in ${kCalls} spaced calls`);
          else assert.equal(spins, 0, `${transport.kind}: a preset without spinMicros never spins`);
        } finally {
          await client.close();
          await server.close();
        }
      }
    });

    it(`'${idle}': a node calls an isolate plugin and gets answers; its rings poll ${p.isolatePollMicros} µs${p.spinMicros > 0 ? ' and spin' : ''}`, async () => {
      const node = await new Node({ idle }).connect<any, any>(isolate(plugin)).start();
      try {
        const before = readers();
        await callSpaced(node.client);
        assert.deepEqual(await node.client.call({ type: 'Echo', text: idle }), { type: 'Echo', text: idle });
        const after = readers();
        assert.deepEqual(after.windows, [{ spinMicros: p.spinMicros, pollMicros: p.isolatePollMicros }]);
        const sleeps = after.sleeps - before.sleeps;
        // 'sleep' sleeps at once after every answer; the others first look for the next message.
        if (idle === 'sleep') assert.ok(sleeps >= kCalls, `${sleeps} sleeps in ${kCalls} spaced calls`);
        if (idle === 'spin') assert.ok(after.spins - before.spins >= kCalls, `${after.spins - before.spins} spins in ${kCalls} spaced calls`);
        else assert.equal(after.spins, before.spins);
      } finally {
        await node.close();
      }
    });
  }

  it("idleTuning reaches the rings: 'sleep' sleeps after every answer, while a poll window wider than the gaps never sleeps between calls", async () => {
    const sleepsOf = async (options: NodeOptions) => {
      const node = await new Node(options).connect<any, any>(isolate(plugin)).start();
      try {
        const before = readers().sleeps;
        await callSpaced(node.client);
        return readers().sleeps - before;
      } finally {
        await node.close();
      }
    };
    const atOnce = await sleepsOf({ idle: 'sleep' });
    const looking = await sleepsOf({ idle: 'balanced', idleTuning: { pollMicros: 1_000_000 } });
    assert.ok(atOnce >= kCalls, `'sleep' slept ${atOnce} times in ${kCalls} calls`);
    assert.ok(looking <= 2, `a 1 s poll window slept ${looking} times in ${kCalls} calls`);
  });
});

// Nothing of this file's shm services may remain.
after(() => {
  const left = fs.existsSync('/dev/shm') ? fs.readdirSync('/dev/shm').filter((n) => n.startsWith(`ogurpchik-t${process.pid}-idle-`)) : [];
  assert.deepEqual(left, []);
});
