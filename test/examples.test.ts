/**
 * The examples in examples/ run as a user runs them: `node examples/<name>/main.mjs` from the repo
 * root, importing the package by its name. Each must exit 0 and print its key lines.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const kRunTimeoutMs = 30_000;

interface Run {
  code: number | string | null;
  stdout: string;
  stderr: string;
  pid: number;
}

/**
 * Runs an example in a process group of its own, so that on timeout the whole group (the example
 * and whatever it forked) is killed by its pid.
 */
function runExample(name: string, args: string[] = []): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join('examples', name, 'main.mjs'), ...args], { cwd: repo, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      process.kill(-child.pid!, 'SIGKILL');
      reject(new Error(`${name} did not finish within ${kRunTimeoutMs} ms\n${stdout}\n${stderr}`));
    }, kRunTimeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal, stdout, stderr, pid: child.pid! });
    });
  });
}

function number(text: string, re: RegExp): number {
  const m = re.exec(text);
  assert.ok(m, `no ${re} in:\n${text}`);
  return Number(m[1]);
}

describe('examples', function () {
  this.timeout(kRunTimeoutMs + 5_000);

  it('busy-host: helpers are answered over shm while the main thread computes, and nothing is left', async () => {
    const run = await runExample('busy-host');
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const helperCalls = [...run.stdout.matchAll(/^helper \d+: (\d+) calls$/gm)].map((m) => Number(m[1]));
    assert.equal(helperCalls.length, 3, run.stdout);
    assert.ok(helperCalls.every((n) => n > 0), run.stdout);
    assert.equal(number(run.stdout, /^host: (\d+) calls answered/m), helperCalls.reduce((a, b) => a + b));
    assert.ok(number(run.stdout, /while the main thread computed (\d+) slices/) > 0, run.stdout);
    assert.match(run.stdout, /^helpers saw p50 [\d.]+ ms, p99 [\d.]+ ms/m);
    assert.match(run.stdout, /^host kept serving; nothing left in \/dev\/shm$/m);
    // The host's service is named after its pid: none of its segments or its control socket remain.
    const service = `busy-host-${run.pid}`;
    assert.deepEqual(fs.readdirSync('/dev/shm').filter((f) => f.startsWith(`ogurpchik-${service}-`)), []);
    const socketDir = process.env.XDG_RUNTIME_DIR || path.join(os.tmpdir(), `ogurpchik-${os.userInfo().uid}`);
    assert.equal(fs.existsSync(path.join(socketDir, `ogurpchik-shm-${service}.sock`)), false);
  });

  it('plugin-host: a throwing plugin gives REMOTE, a stuck one TIMEOUT and a restart, and the good one keeps answering', async () => {
    const run = await runExample('plugin-host');
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.match(run.stdout, /^flaky\(3\) failed: REMOTE RangeError: cannot handle 3$/m);
    assert.match(run.stdout, /^flaky\(4\) = 16$/m);
    assert.match(run.stdout, /^stuck: hang failed: TIMEOUT/m);
    assert.match(run.stdout, /^stuck: restarted: after restart: done$/m);
    assert.ok(number(run.stdout, /^host kept serving: the good plugin answered (\d+) calls/m) > 0, run.stdout);
    assert.ok(number(run.stdout, /, (\d+) of them while the stuck plugin hung/) > 0, run.stdout);
  });

  it('find-by-name: the client waits for the name, the server publishes it, both exit cleanly', async () => {
    const run = await runExample('find-by-name');
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const order = ['client: waiting for "greeter"', 'server: listening on 127.0.0.1:', 'client: it says: hello client, from process', 'server: closed'];
    const at = order.map((line) => run.stdout.indexOf(line));
    assert.ok(at.every((i, k) => i >= 0 && (k === 0 || i > at[k - 1])), `lines out of order or missing:\n${run.stdout}`);
    assert.match(run.stdout, /^both processes exited cleanly; the "greeter" record is gone$/m);
  });
});
