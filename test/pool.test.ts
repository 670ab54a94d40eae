/**
 * The shared connection-worker pool outlives its last node by a few seconds, so a process that
 * opens a node per call does not start threads every time, and it never keeps a process alive.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Node, tcp, type Address } from '../src/index.js';
import { poolHolders } from '../src/main/pool.js';
import { greeter } from './fixtures/greeter.js';

const kGreeter = new URL('./fixtures/greeter.js', import.meta.url);

/** Serves the greeter in the pool, asks it which thread it runs on, closes: the pool thread's id. */
async function poolThread(pool?: { threads: number }): Promise<number> {
  await using server = await new Node({ pool }).serve(tcp('127.0.0.1:0'), kGreeter).start();
  await using client = await new Node({ pool }).connect(tcp(server.addresses[0] as Address & { host: string; port: number })).start();
  return (await greeter.proxy(client.client).where()).threadId;
}

describe('connection-worker pool', function () {
  this.timeout(20_000);

  it('a node started after the last one closed runs on the same threads; another pool size gets new ones', async () => {
    const first = await poolThread();
    assert.equal(poolHolders(), 0, 'nobody holds the pool once both nodes closed');
    const threads = new Set([first]);
    for (let i = 0; i < 3; i++) threads.add(await poolThread());
    // A new pool's threads have higher ids than any thread before them; the same pool's stay.
    const again = await poolThread();
    assert.ok(threads.has(again), `thread ${again} is none of ${[...threads]}: the pool was started again`);
    const resized = await poolThread({ threads: 1 });
    assert.ok(resized > Math.max(...threads), `a one-thread pool runs on a new thread, not ${resized}`);
  });

  it('a process whose nodes all closed exits without waiting for the lingering pool', async () => {
    const script = `
      const { Node, tcp } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
      const server = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r) => r }).start();
      const client = await new Node().connect(tcp(server.addresses[0])).start();
      if ((await client.client.call('x')) !== 'x') process.exit(3);
      await client.close();
      await server.close();
      console.log('closed');`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let closedAt = 0;
    let killer: ReturnType<typeof setTimeout> | undefined;
    child.stdout.on('data', (d) => {
      out += d;
      if (closedAt === 0 && out.includes('closed')) {
        closedAt = Date.now();
        // The pool lingers 5 s after the last close: a process still alive 4 s after it is held by it.
        killer = setTimeout(() => process.kill(child.pid!, 'SIGKILL'), 4000);
      }
    });
    const safety = setTimeout(() => process.kill(child.pid!, 'SIGKILL'), 15_000);
    const code = await new Promise((resolve) => child.once('exit', (c, s) => resolve(c ?? s)));
    clearTimeout(killer);
    clearTimeout(safety);
    assert.equal(out.trim(), 'closed');
    assert.equal(code, 0, `the process ended with ${code} (SIGKILL: it was still running 4 s after its nodes closed)`);
  });
});
