/** The file discovery backend against a hostile directory: whatever sits there, nothing blocks, nothing outside it is read, and an unsafe directory is refused. */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { FileDiscovery } from '../src/discovery/files.js';
import { kMaxRecordBytes } from '../src/discovery/safe-files.js';
import { Node, RpcError } from '../src/index.js';
import { rejectionOf } from './helpers.js';

const run = promisify(execFile);
const cli = new URL('../src/cli.js', import.meta.url).pathname;
const topology = { transport_kind: 'tcp' as const, codec_kind: 'json' as const, map: { '0': '127.0.0.1:1' } };

// Tests run as root here: planting a device or another user's file needs it.
const kRoot = process.getuid?.() === 0;
const kinds = [
  'fifo',
  'socket',
  'symlink-passwd',
  'symlink-zero',
  'symlink-outside-record',
  'symlink-dangling',
  'symlink-loop',
  'symlink-dir',
  'hardlink-outside-record',
  'chardev',
  'huge',
  'garbage',
  'directory',
  'foreign-owner',
] as const;
type Kind = (typeof kinds)[number];
const plantable = kinds.filter((k) => kRoot || (k !== 'chardev' && k !== 'foreign-owner'));

/** Listens on 127.0.0.1 and counts who connects: the address an outside record names, which no client may reach. */
async function countingServer() {
  let connections = 0;
  const server = net.createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return { port, connections: () => connections, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** A fresh 0700 directory for records, and one beside it for what lives outside. */
function dirs() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ogurpchik-hostile-'));
  const dir = path.join(root, 'records');
  const outside = path.join(root, 'outside');
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.mkdirSync(outside, { mode: 0o700 });
  return { root, dir, outside, remove: () => fs.rmSync(root, { recursive: true, force: true }) };
}

/** A valid record of a live owner (this process), for `addr`, of the kind a default client connects to. */
const recordText = (addr: string) => JSON.stringify({ transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': addr }, owner: { pid: process.pid, host: os.hostname() } });

/** Puts a `kind` object at `file`; returns what to close afterwards. */
async function plant(file: string, kind: Kind, ctx: { outside: string; outsideAddr: string; size: number; bytes: Uint8Array }): Promise<() => Promise<void>> {
  const nothing = async () => {};
  switch (kind) {
    case 'fifo':
      execFileSync('mkfifo', ['-m', '600', file]);
      return nothing;
    case 'socket': {
      const server = net.createServer();
      await new Promise<void>((r) => server.listen(file, r));
      return () => new Promise<void>((r) => server.close(() => r()));
    }
    case 'symlink-passwd':
      fs.symlinkSync('/etc/passwd', file);
      return nothing;
    case 'symlink-zero':
      fs.symlinkSync('/dev/zero', file);
      return nothing;
    case 'symlink-outside-record': {
      const target = path.join(ctx.outside, `${path.basename(file)}.real`);
      fs.writeFileSync(target, recordText(ctx.outsideAddr), { mode: 0o600 });
      fs.symlinkSync(target, file);
      return nothing;
    }
    case 'hardlink-outside-record': {
      const target = path.join(ctx.outside, `${path.basename(file)}.linked`);
      fs.writeFileSync(target, recordText(ctx.outsideAddr), { mode: 0o600 });
      fs.linkSync(target, file);
      return nothing;
    }
    case 'symlink-dangling':
      fs.symlinkSync(path.join(ctx.outside, 'nothing-here.json'), file);
      return nothing;
    case 'symlink-loop':
      fs.symlinkSync(path.basename(file), file);
      return nothing;
    case 'symlink-dir':
      fs.symlinkSync(ctx.outside, file);
      return nothing;
    case 'chardev':
      execFileSync('mknod', ['-m', '600', file, 'c', '1', '5']); // /dev/zero's numbers
      return nothing;
    case 'huge': {
      // Sparse: a valid record at its start, then holes up to `size`.
      fs.writeFileSync(file, recordText(ctx.outsideAddr), { mode: 0o600 });
      fs.truncateSync(file, ctx.size);
      return nothing;
    }
    case 'garbage':
      fs.writeFileSync(file, ctx.bytes, { mode: 0o600 });
      return nothing;
    case 'directory':
      fs.mkdirSync(file, { mode: 0o700 });
      fs.writeFileSync(path.join(file, 'inner.json'), recordText(ctx.outsideAddr));
      return nothing;
    case 'foreign-owner':
      fs.writeFileSync(file, recordText(ctx.outsideAddr), { mode: 0o644 });
      fs.chownSync(file, 65534, 65534);
      return nothing;
  }
}

/** Counts event-loop turns and the longest gap between them, to show nothing blocked the main thread. */
// A FIFO opened for a blocking read stops the thread for good, so the bounds below can be generous
// (the machine may be loaded) and still tell a turning loop from a stuck one.
function loopWatch() {
  let last = performance.now();
  let maxGap = 0;
  let turns = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    turns++;
  }, 5);
  return {
    stop: () => {
      clearInterval(timer);
      return { turns, maxGap };
    },
  };
}

/** Settles `p` or fails the test once `ms` have passed: a hang is a failure, not a stuck run. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([p, new Promise<T>((_r, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

describe('file discovery in a hostile directory', function () {
  this.timeout(60_000);
  let warnings: string[];
  const emitWarning = process.emitWarning;
  beforeEach(() => {
    warnings = [];
    // Collected, not printed: the skipped objects are the point here.
    process.emitWarning = ((w: string | Error) => void warnings.push(String(w))) as typeof process.emitWarning;
  });
  afterEach(() => {
    process.emitWarning = emitWarning;
  });

  it('a FIFO at a record\'s path: waitFor, list, lookup and publish settle, the event loop keeps turning, and it is warned about once', async () => {
    const d = dirs();
    try {
      execFileSync('mkfifo', ['-m', '600', path.join(d.dir, 'svc.json')]);
      const loop = loopWatch();
      const discovery = new FileDiscovery({ dir: d.dir });
      const started = performance.now();
      const err = await within(rejectionOf(discovery.waitFor('svc', { timeoutMs: 600 })), 3000, 'waitFor');
      assert.equal(err.code, 'UNAVAILABLE');
      assert.ok(performance.now() - started < 2600, 'waitFor settled by its timeout');
      assert.deepEqual(await within(discovery.list(), 2000, 'list'), []);
      assert.equal(await within(discovery.lookup('svc'), 2000, 'lookup'), undefined);
      await within(discovery.publish('svc', topology), 2000, 'publish');
      assert.ok(fs.lstatSync(path.join(d.dir, 'svc.json')).isFile(), 'the record replaced the FIFO');
      assert.equal((await discovery.lookup('svc'))?.owner?.pid, process.pid);
      const { turns, maxGap } = loop.stop();
      assert.ok(turns > 20, `the event loop turned (${turns} times)`);
      assert.ok(maxGap < 2000, `no turn was held up for long (longest gap ${maxGap.toFixed(0)} ms)`);
      // waitFor polled it several times (every 100 ms for 600 ms): still one warning.
      assert.equal(warnings.filter((w) => w.includes('svc.json')).length, 1, warnings.join('\n'));
    } finally {
      d.remove();
    }
  });

  it('a valid record outside the directory, symlinked in, is never used: no client connects to it', async () => {
    const d = dirs();
    const target = await countingServer();
    try {
      const real = path.join(d.outside, 'svc.json');
      fs.writeFileSync(real, recordText(`127.0.0.1:${target.port}`), { mode: 0o600 });
      fs.symlinkSync(real, path.join(d.dir, 'svc.json'));
      const discovery = new FileDiscovery({ dir: d.dir });
      assert.equal(await discovery.lookup('svc'), undefined);
      assert.deepEqual(await discovery.list(), []);
      const err = await rejectionOf(new Node({ discovery }).waitFor('svc', { timeoutMs: 400 }).start());
      assert.equal(err.code, 'UNAVAILABLE');
      assert.equal(target.connections(), 0, 'nobody connected to the address of the record outside');
      // Publishing the name replaces the link, and never writes through it.
      await discovery.publish('svc', topology);
      assert.equal(fs.readFileSync(real, 'utf8'), recordText(`127.0.0.1:${target.port}`), 'the file outside is untouched');
      assert.ok(!fs.lstatSync(path.join(d.dir, 'svc.json')).isSymbolicLink());
    } finally {
      await target.close();
      d.remove();
    }
  });

  it('publish does not follow a symlink planted at the temp file\'s path or the record\'s', async () => {
    const d = dirs();
    try {
      const victim = path.join(d.outside, 'victim');
      fs.writeFileSync(victim, 'untouched');
      fs.symlinkSync(victim, path.join(d.dir, 'svc.json'));
      // Every temp name a publisher could guess: its pid and a timestamp, as the old code used.
      const now = Date.now();
      for (let t = now - 50; t < now + 2000; t++) fs.symlinkSync(victim, path.join(d.dir, `svc.json.${process.pid}.${t}.tmp`));
      await new FileDiscovery({ dir: d.dir }).publish('svc', topology);
      assert.equal(fs.readFileSync(victim, 'utf8'), 'untouched');
      const st = fs.lstatSync(path.join(d.dir, 'svc.json'));
      assert.ok(st.isFile());
      assert.equal(st.mode & 0o777, 0o600);
    } finally {
      d.remove();
    }
  });

  it('host entries: a symlinked entry counts as absent, and a symlinked hosts directory is refused', async () => {
    const d = dirs();
    try {
      const discovery = new FileDiscovery({ dir: d.dir });
      await discovery.registerHost('vm1', 7);
      assert.equal(await discovery.lookupHost('vm1'), 7);
      fs.writeFileSync(path.join(d.outside, 'vm2.json'), '{"cid":9}');
      fs.symlinkSync(path.join(d.outside, 'vm2.json'), path.join(d.dir, 'hosts', 'vm2.json'));
      assert.equal(await discovery.lookupHost('vm2'), undefined);
      fs.rmSync(path.join(d.dir, 'hosts'), { recursive: true });
      fs.symlinkSync(d.outside, path.join(d.dir, 'hosts'));
      const err = await rejectionOf(discovery.lookupHost('vm2'));
      assert.equal(err.code, 'INVALID_ARGUMENT');
      assert.match(err.message, /is not a directory/);
      assert.equal((await rejectionOf(discovery.registerHost('vm3', 3))).code, 'INVALID_ARGUMENT');
      assert.deepEqual(fs.readdirSync(d.outside), ['vm2.json'], 'nothing was written outside');
    } finally {
      d.remove();
    }
  });

  it('property: whatever objects sit in the directory, waitFor/list/lookup/publish settle by their timeouts, the loop keeps turning, and nothing outside is used', async () => {
    const target = await countingServer();
    const outsideAddr = `127.0.0.1:${target.port}`;
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({
              kind: fc.constantFrom(...plantable),
              instance: fc.option(fc.constantFrom('a', 'b', 'c'), { nil: undefined }),
              size: fc.integer({ min: kMaxRecordBytes + 1, max: 2 ** 30 }),
              bytes: fc.uint8Array({ maxLength: 300 }),
            }),
            { minLength: 1, maxLength: 4 },
          ),
          async (objects) => {
            const d = dirs();
            const closers: Array<() => Promise<void>> = [];
            const loop = loopWatch();
            try {
              // A valid record of another name, which must still be listed.
              fs.writeFileSync(path.join(d.dir, 'good.json'), recordText('127.0.0.1:2'), { mode: 0o600 });
              const planted = new Map<string, Kind>();
              for (const o of objects) {
                const file = path.join(d.dir, o.instance === undefined ? 'svc.json' : `svc@${o.instance}.json`);
                if (planted.has(file)) continue;
                planted.set(file, o.kind);
                closers.push(await plant(file, o.kind, { outside: d.outside, outsideAddr, size: o.size, bytes: o.bytes }));
              }
              const discovery = new FileDiscovery({ dir: d.dir });
              const listed = await within(discovery.list(), 3000, 'list');
              assert.deepEqual(listed.map((e) => [e.name, e.instance, e.record.map['0']]), [['good', undefined, '127.0.0.1:2']]);
              assert.deepEqual(await within(discovery.lookupAll('svc'), 3000, 'lookupAll'), []);
              const started = performance.now();
              const err = await within(rejectionOf(discovery.waitFor('svc', { timeoutMs: 150 })), 3000, 'waitFor');
              assert.equal(err.code, 'UNAVAILABLE');
              assert.ok(performance.now() - started < 2150, 'waitFor settled by its timeout');
              const dirAtRecord = planted.get(path.join(d.dir, 'svc.json')) === 'directory';
              const published = await within(
                discovery.publish('svc', topology).then(() => undefined, (e: unknown) => e),
                3000,
                'publish',
              );
              if (dirAtRecord) {
                assert.ok(RpcError.is(published) && published.code === 'UNAVAILABLE', `publish over a directory: ${published}`);
                assert.match((published as RpcError).message, /a directory is in the way/);
              } else {
                assert.equal(published, undefined);
                assert.deepEqual((await discovery.lookup('svc'))?.map, topology.map);
              }
              const { maxGap } = loop.stop();
              assert.ok(maxGap < 2000, `the event loop was held up for ${maxGap.toFixed(0)} ms`);
              assert.equal(target.connections(), 0);
            } finally {
              loop.stop();
              for (const close of closers) await close();
              d.remove();
            }
          },
        ),
        { numRuns: 40 },
      );
    } finally {
      await target.close();
    }
  });

  it('`ogurpchik ls --dir` over a FIFO and a symlink settles and lists only the real record', async () => {
    const d = dirs();
    try {
      execFileSync('mkfifo', ['-m', '600', path.join(d.dir, 'fifo.json')]);
      fs.writeFileSync(path.join(d.outside, 'x.json'), recordText('127.0.0.1:3'));
      fs.symlinkSync(path.join(d.outside, 'x.json'), path.join(d.dir, 'linked.json'));
      fs.writeFileSync(path.join(d.dir, 'real.json'), recordText('127.0.0.1:4'), { mode: 0o600 });
      const { stdout } = await run(process.execPath, ['--no-warnings', cli, 'ls', '--dir', d.dir], { timeout: 15_000 });
      assert.match(stdout, /^real\s/m);
      assert.doesNotMatch(stdout, /fifo|linked|127\.0\.0\.1:3/);
    } finally {
      d.remove();
    }
  });
});

describe('file discovery: an unsafe directory is refused', function () {
  this.timeout(20_000);
  let d: ReturnType<typeof dirs>;
  beforeEach(() => {
    d = dirs();
  });
  afterEach(() => d.remove());

  async function assertRefused(discovery: FileDiscovery, found: RegExp) {
    for (const [what, p] of [
      ['publish', () => discovery.publish('svc', topology)],
      ['waitFor', () => discovery.waitFor('svc', { timeoutMs: 2000 })],
      ['list', () => discovery.list()],
      ['lookup', () => discovery.lookup('svc')],
    ] as const) {
      const err = await rejectionOf(p());
      assert.equal(err.code, 'INVALID_ARGUMENT', what);
      assert.ok(err.message.includes(discovery.dir), `${what} names the directory: ${err.message}`);
      assert.match(err.message, found, what);
      assert.match(err.message, /must be owned by uid \d+.* and not writable by group or others/, what);
    }
  }

  it('group- or world-writable (0777, 0770): refused, not silently chmodded, with the mode found and what is required', async () => {
    fs.writeFileSync(path.join(d.dir, 'svc.json'), recordText('127.0.0.1:5'), { mode: 0o600 });
    for (const mode of [0o777, 0o770, 0o702]) {
      fs.chmodSync(d.dir, mode);
      await assertRefused(new FileDiscovery({ dir: d.dir }), new RegExp(`mode 0${mode.toString(8)}`));
      assert.equal(fs.statSync(d.dir).mode & 0o777, mode, 'the mode was left as it was');
    }
    // Readable by others but writable only by the owner is accepted.
    fs.chmodSync(d.dir, 0o755);
    assert.equal((await new FileDiscovery({ dir: d.dir }).lookup('svc'))?.map['0'], '127.0.0.1:5');
  });

  it('owned by another uid (65534): refused, naming the owner found', async function () {
    if (!kRoot) this.skip();
    fs.chownSync(d.dir, 65534, 65534);
    await assertRefused(new FileDiscovery({ dir: d.dir }), /owner uid 65534/);
  });

  it('the CLI reports the refusal (exit 1) instead of listing', async () => {
    fs.chmodSync(d.dir, 0o777);
    const err: any = await run(process.execPath, [cli, 'ls', '--dir', d.dir]).catch((e) => e);
    assert.equal(err.code, 1);
    assert.match(err.stderr, /INVALID_ARGUMENT: discovery directory .* is not safe \(owner uid \d+, mode 0777\)/);
  });
});
