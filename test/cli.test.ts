/** The `ogurpchik` command: ls and call against a published service, help texts. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { FileDiscovery } from '../src/discovery/files.js';
import { startServer, tempDir } from './helpers.js';

const run = promisify(execFile);
const cli = new URL('../src/cli.js', import.meta.url).pathname;

describe('ogurpchik CLI', function () {
  this.timeout(30_000);

  it('`call` reaches a published service and prints its answer; `ls` lists it', async () => {
    const tmp = tempDir();
    const dir = path.join(tmp.dir, 'reg');
    const server = await startServer({ transport: 'tcp', handler: 'module' });
    try {
      const a = server.address as { host: string; port: number };
      await new FileDiscovery({ dir }).publish('echo', { transport_kind: 'tcp', codec_kind: 'msgpack', map: { '0': `${a.host}:${a.port}` } });
      const { stdout } = await run(process.execPath, [cli, 'call', 'echo', '{"type":"Echo","text":"via cli"}', '--dir', dir]);
      assert.deepEqual(JSON.parse(stdout), { type: 'Echo', text: 'via cli' });
      const ls = await run(process.execPath, [cli, 'ls', '--dir', dir]);
      assert.match(ls.stdout, /^NAME\s+OWNER\s+KIND\s+ADDRESS\s+PID/m);
      assert.match(ls.stdout, new RegExp(`^echo\\s+alive\\s+tcp/msgpack\\s+${a.host}:${a.port}\\s+${process.pid}$`, 'm'));
    } finally {
      await server.kill();
      tmp.remove();
    }
  });

  it('`call` to a service that never appears fails with UNAVAILABLE and exit code 1', async () => {
    const tmp = tempDir();
    try {
      const err: any = await run(process.execPath, [cli, 'call', 'ghost', '{}', '--timeout', '200', '--dir', tmp.dir]).catch((e) => e);
      assert.equal(err.code, 1);
      assert.match(err.stderr, /UNAVAILABLE: service ghost did not appear within 200 ms/);
    } finally {
      tmp.remove();
    }
  });

  it('`call --timeout` that is not a number of ms is a usage error (exit 2) naming --timeout', async () => {
    const tmp = tempDir();
    try {
      for (const timeout of ['abc', '-5', '1e12']) {
        const err: any = await run(process.execPath, [cli, 'call', 'ghost', '{}', `--timeout=${timeout}`, '--dir', tmp.dir]).catch((e) => e);
        assert.equal(err.code, 2, `--timeout ${timeout}`);
        assert.match(err.stderr, /--timeout takes a number of ms/);
      }
    } finally {
      tmp.remove();
    }
  });

  it('keygen, sign and verify: a signed file verifies; a modified one and another key do not', async () => {
    const tmp = tempDir();
    try {
      const prefix = path.join(tmp.dir, 'k');
      await run(process.execPath, [cli, 'keygen', '--out', prefix]);
      assert.equal(fs.statSync(`${prefix}.key`).mode & 0o777, 0o600);
      assert.equal(Buffer.from(fs.readFileSync(`${prefix}.pub`, 'utf8').trim(), 'base64').length, 32);
      const file = path.join(tmp.dir, 'image.bin');
      fs.writeFileSync(file, 'the plugin host binary');
      await run(process.execPath, [cli, 'sign', file, '--key', `${prefix}.key`]);
      assert.equal(fs.readFileSync(`${file}.sig`).length, 64);
      assert.match((await run(process.execPath, [cli, 'verify', file, `${prefix}.pub`])).stdout, /^ok/);
      const other = path.join(tmp.dir, 'other');
      await run(process.execPath, [cli, 'keygen', '--out', other]);
      const wrongKey: any = await run(process.execPath, [cli, 'verify', file, fs.readFileSync(`${other}.pub`, 'utf8').trim()]).catch((e) => e);
      assert.equal(wrongKey.code, 1);
      fs.appendFileSync(file, '!');
      const modified: any = await run(process.execPath, [cli, 'verify', file, `${prefix}.pub`]).catch((e) => e);
      assert.equal(modified.code, 1);
      assert.match(modified.stdout, /^bad signature/);
    } finally {
      tmp.remove();
    }
  });

  it('--help on each command', async () => {
    for (const cmd of ['ls', 'call', 'keygen', 'sign', 'verify', 'bench']) {
      const { stdout } = await run(process.execPath, [cli, cmd, '--help']);
      assert.match(stdout, new RegExp(`^usage: ogurpchik ${cmd}`));
    }
    assert.match((await run(process.execPath, [cli, '--help'])).stdout, /commands:/);
  });
});
