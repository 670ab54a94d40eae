/**
 * Unix sockets are owner-only from the first instant (unix(), the shm control socket, and
 * serve(..., { threads })), the shm control socket's per-user directory is checked, and a client
 * refuses a server running as another uid (AUTH_FAILED) unless told to accept it (peerUid).
 * Other users are real: a user made with useradd for the run (so the tests need root; under CI
 * they must run).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Node, RpcError, shm, unix } from '../src/index.js';
import { securePrivateDir } from '../src/private-dir.js';
import { nativeAvailable } from '../src/native/addon.js';
import { shmTransport } from '../src/transport/shm.js';
import { killAll, rejectionOf } from './helpers.js';
import { LineQueue } from './lines.js';

interface User {
  name: string;
  uid: number;
  gid: number;
}

interface Child {
  process: ChildProcess;
  /** The next stdout line, parsed when it is JSON; rejects after `timeoutMs` or when the process ends first. */
  next(timeoutMs?: number): Promise<any>;
  /** Closes its stdin (how these fixtures are told to finish). */
  finish(): void;
  /** Resolves with its exit code once it has exited. */
  exited: Promise<number | null>;
}

const children = new Set<ChildProcess>();
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

/** Runs fixture `name` with `options` as argv[2], as `user` when given, with `env` added to ours. */
function run(name: string, options: unknown, as?: User, env: NodeJS.ProcessEnv = {}): Child {
  const child = spawn(process.execPath, [fixture(name), JSON.stringify(options)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
    ...(as ? { uid: as.uid, gid: as.gid } : {}),
  });
  children.add(child);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  exited.then(() => children.delete(child));
  const ended = new Promise((resolve) => child.once('close', (code, signal) => resolve(code ?? signal)));
  const lines = new LineQueue(child.stdout!, ended);
  return {
    process: child,
    exited,
    finish: () => child.stdin!.end(),
    next: async (timeoutMs = 15_000) => {
      const line = await lines.next(
        timeoutMs,
        () => new Error(`${name}: no line within ${timeoutMs} ms`),
        (code) => new Error(`${name} exited with ${String(code)} before printing a line`),
      );
      try {
        return JSON.parse(line);
      } catch {
        return line;
      }
    },
  };
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
let serial = 0;
const uniqueName = () => `sm${process.pid}-${++serial}`;

describe('peerUid', () => {
  it('is a uid or "any"; anything else is INVALID_ARGUMENT', () => {
    assert.equal(unix('/tmp/x.sock', { peerUid: 1000 }).peerUid, 1000);
    assert.equal(shm('x', { peerUid: 'any' }).peerUid, 'any');
    assert.equal('peerUid' in unix('/tmp/x.sock'), false, 'the default is decided where it connects');
    for (const peerUid of [-1, 1.5, 2 ** 32 - 1, '0', 'all', null, NaN]) {
      assert.throws(() => unix('/tmp/x.sock', { peerUid } as never), (e: RpcError) => e.code === 'INVALID_ARGUMENT' && /peerUid/.test(e.message));
      assert.throws(() => shm('x', { peerUid } as never), (e: RpcError) => e.code === 'INVALID_ARGUMENT' && /peerUid/.test(e.message));
    }
  });
});

describe('socket modes and the peer uid', function () {
  this.timeout(60_000);
  let user: User | undefined;
  const dirs: string[] = [];
  const tempDir = (mode = 0o700) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ogurpchik-sm-'));
    fs.chmodSync(dir, mode);
    dirs.push(dir);
    return dir;
  };

  before(function () {
    if (!isRoot && !process.env.CI) this.skip(); // another user is needed, and only root makes one
    if (!nativeAvailable()) throw new Error('the native addon is not built: npm run build:native');
    const name = `ogt${randomBytes(4).toString('hex')}`;
    execFileSync('useradd', ['--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', name], { stdio: 'inherit' });
    user = { name, uid: Number(execFileSync('id', ['-u', name], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', name], { encoding: 'utf8' })) };
  });

  after(async () => {
    await killAll(children);
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
    if (user) execFileSync('userdel', ['--remove', user.name], { stdio: 'ignore' });
  });

  it('no socket is wider than 0600 while servers start with umask 000, and another user never connects to one', async function () {
    this.timeout(120_000);
    // Others may list this directory (as they may /tmp): what they find there is what counts.
    const dir = tempDir(0o755);
    const name = uniqueName();
    const watcher = run('socket-watcher.js', { dir, names: ['u.sock', 't.sock', `ogurpchik-shm-${name}.sock`] }, user);
    assert.equal(await watcher.next(), 'ready');
    // A socket file was 0777 for a few microseconds, seen in about one start-up in ten.
    const rounds = 20;
    const servers = run('umask-servers.js', { dir, name, rounds }, undefined, { XDG_RUNTIME_DIR: dir });
    assert.deepEqual(await servers.next(90_000), { rounds });
    assert.equal(await servers.exited, 0);
    watcher.finish();
    const seen = await watcher.next();
    // It watched closely enough to see the sockets come and go (3 a round).
    assert.ok(seen.sockets >= rounds, `the watcher saw only ${seen.sockets} sockets`);
    assert.deepEqual(seen.wide, [], 'group or others could use these');
    assert.deepEqual(seen.connected, [], 'another user connected to these');
    assert.deepEqual(fs.readdirSync(dir), [], 'the servers left files behind');
  });

  describe('a server running as another user', () => {
    let dir: string;
    let server: Child | undefined;
    beforeEach(() => {
      // A directory that user may create sockets in (as $XDG_RUNTIME_DIR for shm).
      dir = tempDir();
      fs.chownSync(dir, user!.uid, user!.gid);
    });
    afterEach(async () => {
      server?.finish();
      await server?.exited;
      server = undefined;
    });

    it('over unix is refused with AUTH_FAILED naming both uids, and accepted with its peerUid or "any"', async () => {
      const file = path.join(dir, 'other.sock');
      server = run('socket-node.js', { role: 'serve', transport: 'unix', path: file }, user);
      assert.deepEqual(await server.next(), { address: { kind: 'unix', path: file } });
      const err = await rejectionOf(new Node().connect(unix(file)).start());
      assert.equal(err.code, 'AUTH_FAILED');
      assert.match(err.message, new RegExp(`uid ${user!.uid}\\b.*uid ${process.getuid!()}\\b|uid ${process.getuid!()}\\b.*uid ${user!.uid}\\b`));
      for (const peerUid of [user!.uid, 'any'] as const) {
        const node = await new Node().connect(unix(file, { peerUid })).start();
        try {
          assert.deepEqual(await node.client.call({ type: 'Ping' }), { type: 'Pong' });
        } finally {
          await node.close();
        }
      }
    });

    it('on the shm control path is refused with AUTH_FAILED, and accepted with its peerUid', async () => {
      const name = uniqueName();
      server = run('socket-node.js', { role: 'serve', transport: 'shm', name }, user, { XDG_RUNTIME_DIR: dir });
      assert.deepEqual(await server.next(), { address: { kind: 'shm', name } });
      // The client's connection worker reads $XDG_RUNTIME_DIR: it runs in a process of its own.
      const refused = run('socket-node.js', { role: 'connect', transport: 'shm', name }, undefined, { XDG_RUNTIME_DIR: dir });
      const outcome = await refused.next();
      assert.equal(outcome.code, 'AUTH_FAILED', JSON.stringify(outcome));
      assert.match(outcome.message, new RegExp(`uid ${user!.uid}\\b`));
      const accepted = run('socket-node.js', { role: 'connect', transport: 'shm', name, peerUid: user!.uid }, undefined, { XDG_RUNTIME_DIR: dir });
      assert.deepEqual(await accepted.next(), { reply: { type: 'Pong' } });
    });
  });

  describe("the shm control socket's directory without $XDG_RUNTIME_DIR", () => {
    // <TMPDIR>/ogurpchik-<uid>: TMPDIR is the test's, so the directory is too.
    const privateDirIn = (tmp: string) => path.join(tmp, `ogurpchik-${process.getuid!()}`);
    const noXdg = (tmp: string) => ({ TMPDIR: tmp, XDG_RUNTIME_DIR: '' });

    it('is made 0700 (whatever the umask) and holds the control socket', async () => {
      const tmp = tempDir();
      const name = uniqueName();
      const server = run('socket-node.js', { role: 'serve', transport: 'shm', name, umask: 0 }, undefined, noXdg(tmp));
      try {
        assert.deepEqual(await server.next(), { address: { kind: 'shm', name } });
        const st = fs.lstatSync(privateDirIn(tmp));
        assert.ok(st.isDirectory());
        assert.equal(st.mode & 0o777, 0o700);
        assert.equal(fs.lstatSync(path.join(privateDirIn(tmp), `ogurpchik-shm-${name}.sock`)).mode & 0o777, 0o600);
        const client = run('socket-node.js', { role: 'connect', transport: 'shm', name }, undefined, noXdg(tmp));
        assert.deepEqual(await client.next(), { reply: { type: 'Pong' } });
      } finally {
        server.finish();
        await server.exited;
      }
    });

    it('is refused when owned by another user, by server and client', async () => {
      const tmp = tempDir(0o755);
      fs.mkdirSync(privateDirIn(tmp), { mode: 0o700 });
      fs.chownSync(privateDirIn(tmp), user!.uid, user!.gid);
      const name = uniqueName();
      for (const role of ['serve', 'connect']) {
        const node = run('socket-node.js', { role, transport: 'shm', name }, undefined, noXdg(tmp));
        const outcome = await node.next();
        assert.equal(outcome.code, 'INVALID_ARGUMENT', `${role}: ${JSON.stringify(outcome)}`);
        assert.ok(outcome.message.includes(`${privateDirIn(tmp)} belongs to uid ${user!.uid}`), outcome.message);
        node.finish();
        await node.exited;
      }
      assert.deepEqual(fs.readdirSync(privateDirIn(tmp)), [], 'nothing was created in it');
    });

    it('is refused when group or others may write to it, by server and client', async () => {
      const saved = { TMPDIR: process.env.TMPDIR, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR };
      const tmp = tempDir(0o755);
      // The adapter itself, in this thread: it reads the environment of the thread it runs in.
      Object.assign(process.env, noXdg(tmp));
      try {
        fs.mkdirSync(privateDirIn(tmp), { mode: 0o700 });
        const d = shm(uniqueName());
        for (const mode of [0o777, 0o770, 0o702]) {
          fs.chmodSync(privateDirIn(tmp), mode);
          for (const attempt of [() => shmTransport.listen(d, () => {}), () => shmTransport.connect(d)]) {
            const err = await rejectionOf(attempt());
            assert.equal(err.code, 'INVALID_ARGUMENT');
            assert.match(err.message, new RegExp(`${privateDirIn(tmp)} is writable by group or others \\(mode ${mode.toString(8)}\\)`));
          }
        }
        assert.deepEqual(fs.readdirSync(privateDirIn(tmp)), [], 'nothing was created in it');
      } finally {
        for (const [key, value] of Object.entries(saved)) {
          if (value === undefined) delete process.env[key];
          else process.env[key] = value;
        }
      }
    });

    it('securePrivateDir() refuses a symlink, another owner and a group/other-writable mode; makes a missing one 0700', () => {
      const tmp = tempDir();
      const refused = (dir: string, pattern: RegExp) =>
        assert.throws(
          () => securePrivateDir(dir, { create: true }),
          (e: RpcError) => e.code === 'INVALID_ARGUMENT' && pattern.test(e.message),
        );
      const real = path.join(tmp, 'real');
      fs.mkdirSync(real, { mode: 0o700 });
      fs.symlinkSync(real, path.join(tmp, 'link'));
      refused(path.join(tmp, 'link'), /not a directory/);
      fs.chownSync(real, user!.uid, user!.gid);
      refused(real, new RegExp(`belongs to uid ${user!.uid}`));
      fs.chownSync(real, process.getuid!(), process.getgid!());
      fs.chmodSync(real, 0o777);
      refused(real, /writable by group or others/);
      fs.chmodSync(real, 0o755);
      securePrivateDir(real, { create: true }); // only writing by others matters
      const fresh = path.join(tmp, 'fresh');
      securePrivateDir(fresh, { create: false });
      assert.equal(fs.existsSync(fresh), false, 'create: false makes nothing');
      securePrivateDir(fresh, { create: true });
      assert.equal(fs.lstatSync(fresh).mode & 0o777, 0o700);
    });
  });
});
