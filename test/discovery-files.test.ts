/** The file discovery backend: atomic private records, owner liveness, waiting for a name. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { FileDiscovery } from '../src/discovery/files.js';
import { Node, tcp } from '../src/index.js';
import { processStartTime } from '../src/proc.js';
import { rejectionOf, sleep, tempDir } from './helpers.js';

const topology = { transport_kind: 'tcp' as const, codec_kind: 'msgpack' as const, map: { '0': '127.0.0.1:41237' } };

async function publishFromChild(dir: string, name: string) {
  const child = spawn(process.execPath, [new URL('./fixtures/publish-child.js', import.meta.url).pathname, JSON.stringify({ dir, name })], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', () => resolve());
    child.once('exit', (code) => reject(new Error(`publisher exited with ${code}`)));
  });
  return child;
}

describe('file discovery backend', function () {
  this.timeout(20_000);
  let tmp: ReturnType<typeof tempDir>;
  let dir: string;
  beforeEach(() => {
    tmp = tempDir();
    dir = path.join(tmp.dir, 'registry');
  });
  afterEach(() => tmp.remove());

  it("writes the original's JSON shape, privately (dir 0700, file 0600), and reads it back", async () => {
    const d = new FileDiscovery({ dir });
    await d.publish('svc', topology);
    const raw = JSON.parse(fs.readFileSync(path.join(dir, 'svc.json'), 'utf8'));
    assert.deepEqual({ transport_kind: raw.transport_kind, codec_kind: raw.codec_kind, map: raw.map }, topology);
    assert.equal(raw.owner.pid, process.pid);
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(dir, 'svc.json')).mode & 0o777, 0o600);
    assert.deepEqual((await d.lookup('svc'))?.map, topology.map);
    assert.deepEqual(fs.readdirSync(dir), ['svc.json'], 'no temp file is left behind');
    await d.unpublish('svc');
    assert.equal(await d.lookup('svc'), undefined);
  });

  it('a record whose owner was killed counts as absent, and a new owner can take the name', async () => {
    const child = await publishFromChild(dir, 'svc');
    const d = new FileDiscovery({ dir });
    assert.ok(await d.lookup('svc'), 'live while its owner runs');
    await assert.rejects(d.publish('svc', topology), (e: any) => e.code === 'BUSY');
    const exited = new Promise((r) => child.once('exit', r));
    process.kill(child.pid!, 'SIGKILL');
    await exited;
    assert.equal(await d.lookup('svc'), undefined);
    assert.deepEqual((await d.list()).map((e) => [e.name, e.alive]), [['svc', false]]);
    await d.publish('svc', topology);
    assert.equal((await d.lookup('svc'))?.owner?.pid, process.pid);
  });

  it('a record naming a live pid with another start time (the pid since reused) counts as a dead owner', async () => {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      const pid = child.pid!;
      const started = processStartTime(pid);
      assert.ok(started !== undefined, 'the child runs');
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      const write = (name: string, start_time: number) =>
        fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify({ ...topology, owner: { pid, start_time, host: os.hostname() } }), { mode: 0o600 });
      write('same', started);
      write('reused', started + 1);
      const d = new FileDiscovery({ dir });
      assert.ok(await d.lookup('same'), 'the same pid and start time: alive');
      assert.equal(await d.lookup('reused'), undefined, 'the same pid, another start time: dead');
      assert.deepEqual((await d.list()).map((e) => [e.name, e.alive]), [['reused', false], ['same', true]]);
      assert.equal((await rejectionOf(d.publish('same', topology))).code, 'BUSY');
      await d.publish('reused', topology);
      assert.equal((await d.lookup('reused'))?.owner?.pid, process.pid);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('waitFor started before publish resolves when the record appears', async () => {
    const d = new FileDiscovery({ dir });
    const waiting = d.waitFor('later', { timeoutMs: 5000 });
    setTimeout(() => void new FileDiscovery({ dir }).publish('later', topology), 150);
    assert.deepEqual((await waiting).map, topology.map);
  });

  it('two nodes of one process and one exclusive name: the second is refused (BUSY), the first keeps its record', async () => {
    // Both nodes are this process: the owner pid alone cannot tell them apart.
    const first = await new Node({ discovery: new FileDiscovery({ dir }) }).serve(tcp('127.0.0.1:0'), { onRequest: () => 'first' }).publish('twice').start();
    const err = await rejectionOf(new Node({ discovery: new FileDiscovery({ dir }) }).serve(tcp('127.0.0.1:0'), { onRequest: () => 'second' }).publish('twice').start());
    assert.equal(err.code, 'BUSY');
    assert.match(err.message, /another node of this process/);
    await using client = await new Node({ discovery: new FileDiscovery({ dir }) }).waitFor('twice', { timeoutMs: 2000 }).start();
    assert.equal(await client.client.call(null), 'first', 'the refused node neither replaced nor removed the record');
    await first.close();
    assert.equal(await new FileDiscovery({ dir }).lookup('twice'), undefined, 'the first node removes its own record on close');
  });

  it('waitFor with timeoutMs Infinity waits; a limit no timer can hold is refused', async () => {
    const d = new FileDiscovery({ dir });
    // A timer fires a delay over 2^31-1 ms after 1 ms: Infinity used to give UNAVAILABLE at once.
    const waiting = d.waitFor('patient', { timeoutMs: Infinity });
    setTimeout(() => void new FileDiscovery({ dir }).publish('patient', topology), 100);
    assert.deepEqual((await waiting).map, topology.map);
    for (const timeoutMs of [2 ** 31, -1, NaN]) {
      assert.equal((await rejectionOf(d.waitFor('never', { timeoutMs }))).code, 'INVALID_ARGUMENT', `timeoutMs ${timeoutMs}`);
    }
  });

  it('waitFor times out with UNAVAILABLE and can be cancelled with CANCELLED', async () => {
    const d = new FileDiscovery({ dir });
    assert.equal((await rejectionOf(d.waitFor('never', { timeoutMs: 150 }))).code, 'UNAVAILABLE');
    const ac = new AbortController();
    const p = rejectionOf(d.waitFor('never', { signal: ac.signal }));
    ac.abort();
    assert.equal((await p).code, 'CANCELLED');
  });

  it('a cancelled or timed-out waitFor settles only once its watch has stopped: no directory appears after it settled', async () => {
    // The watch's mkdir is slowed, so one not awaited on stop would land well after the settle.
    const realMkdir = fs.promises.mkdir;
    fs.promises.mkdir = (async (...args: Parameters<typeof realMkdir>) => {
      await sleep(100);
      return realMkdir(...args);
    }) as typeof realMkdir;
    try {
      for (const end of ['abort', 'timeout'] as const) {
        const target = path.join(dir, end);
        const ac = new AbortController();
        const waiting = new FileDiscovery({ dir: target }).waitFor('never', end === 'abort' ? { signal: ac.signal } : { timeoutMs: 1 });
        if (end === 'abort') ac.abort();
        const existedWhenSettled = await waiting.then(
          () => assert.fail('resolved'),
          (err) => {
            assert.equal(err.code, end === 'abort' ? 'CANCELLED' : 'UNAVAILABLE');
            return fs.existsSync(target);
          },
        );
        await sleep(250);
        assert.equal(fs.existsSync(target), existedWhenSettled, `${end}: the directory appeared after waitFor settled`);
      }
    } finally {
      fs.promises.mkdir = realMkdir;
    }
  });

  it('a discovery directory path that is a file: INVALID_ARGUMENT saying so, not a raw EEXIST', async () => {
    const file = path.join(tmp.dir, 'not-a-dir');
    fs.writeFileSync(file, 'x');
    const err = await rejectionOf(new FileDiscovery({ dir: file }).publish('svc', topology));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, /is not a directory/);
    const under = await rejectionOf(new FileDiscovery({ dir: path.join(file, 'sub') }).publish('svc', topology));
    assert.equal(under.code, 'INVALID_ARGUMENT');
  });

  it('malformed records and bad names are refused', async () => {
    const d = new FileDiscovery({ dir });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'junk.json'), '{"transport_kind":"carrier-pigeon","map":{}}');
    assert.equal(await d.lookup('junk'), undefined);
    for (const bad of ['', '../x', '.hidden', 'a/b']) await assert.rejects(d.lookup(bad), (e: any) => e.code === 'INVALID_ARGUMENT');
  });
});
