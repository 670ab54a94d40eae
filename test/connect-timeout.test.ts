/** A connection attempt to an address that never answers gives up after connectTimeoutMs. */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { Node, RpcError, tcp } from '../src/index.js';

/**
 * A loopback listener that never accepts (a python child: Node accepts by itself). Once its
 * backlog is full, the kernel drops further SYNs: a connect there waits as for a silent host.
 */
async function blackHole(): Promise<{ port: number; child: ChildProcess; fillers: net.Socket[] }> {
  const code = 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)\n';
  const child = spawn('python3', ['-c', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = Number(await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('error', reject);
  }));
  // Fill the accept queue (backlog 0 holds one; a second one too on some kernels).
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('error', () => {});
    fillers.push(s);
  }
  await new Promise((r) => setTimeout(r, 200));
  return { port, child, fillers };
}

describe('connectTimeoutMs', function () {
  this.timeout(20_000);

  it('fails a connect to an address that never answers with UNAVAILABLE after the timeout', async () => {
    const hole = await blackHole();
    try {
      const t0 = performance.now();
      const err = await new Node({ connectTimeoutMs: 400 })
        .connect(tcp({ host: '127.0.0.1', port: hole.port }))
        .start()
        .then(
          () => assert.fail('connected to a listener that never accepts'),
          (e: RpcError) => e,
        );
      const ms = performance.now() - t0;
      assert.ok(RpcError.is(err));
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /no connection within 400 ms/);
      assert.ok(ms < 5000, `gave up after ${ms.toFixed(0)} ms`);
    } finally {
      for (const s of hole.fillers) s.destroy();
      process.kill(hole.child.pid!, 'SIGKILL');
    }
  });

  it('refuses a bad value', () => {
    for (const connectTimeoutMs of [-1, 1.5, Number.NaN]) {
      assert.throws(() => new Node({ connectTimeoutMs }), (e: RpcError) => e.code === 'INVALID_ARGUMENT');
    }
  });
});
