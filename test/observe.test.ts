/** diagnostics_channel events for calls and connections, and DEBUG=ogurpchik:* logging. */
import assert from 'node:assert/strict';
import diagnostics from 'node:diagnostics_channel';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import v8 from 'node:v8';
import { Node, tcp } from '../src/index.js';
import { rejectionOf } from './helpers.js';
import { bytesCopied, countCopied } from '../src/observe.js';

describe('observability', function () {
  this.timeout(20_000);

  it('counting copied bytes allocates nothing, also once a thread has counted more than 2^30', () => {
    countCopied(2 ** 31);
    const before = bytesCopied();
    const profiler = new v8.GCProfiler();
    profiler.start();
    for (let i = 0; i < 10_000_000; i++) countCopied(16);
    const { statistics } = profiler.stop();
    // As a plain number past 2^30 every add made a heap number: 20-150 scavenges over this loop
    // (with the heap's sizes in this process or a fresh one). A GC that something else had
    // already set going may still finish during it.
    const scavenges = statistics.filter((s) => s.gcType === 'Scavenge').length;
    assert.ok(scavenges <= 2, `${scavenges} scavenges while counting`);
    assert.equal(bytesCopied() - before, 160_000_000);
  });

  it('publishes call start/end/error and connection open/close on diagnostics channels', async () => {
    const seen: [string, any][] = [];
    const names = ['ogurpchik:call:start', 'ogurpchik:call:end', 'ogurpchik:call:error', 'ogurpchik:connection:open', 'ogurpchik:connection:close'];
    const subs = names.map((n) => {
      const fn = (msg: unknown) => seen.push([n, msg]);
      diagnostics.subscribe(n, fn);
      return () => diagnostics.unsubscribe(n, fn);
    });
    try {
      const handler = { onRequest: (r: any) => (r.slow ? new Promise((res) => setTimeout(res, 1000)) : r) };
      const server = await new Node().serve(tcp('127.0.0.1:0'), handler).start();
      const node = await new Node().connect<any, any>(tcp(server.addresses[0] as { host: string; port: number })).start();
      await node.client.call({ n: 1 });
      assert.equal((await rejectionOf(node.client.call({ slow: true }, { timeoutMs: 50 }))).code, 'TIMEOUT');
      await node.close();
      await server.close();
      const kinds = seen.map(([n]) => n);
      assert.equal(kinds.filter((k) => k === 'ogurpchik:call:start').length, 2);
      const end = seen.find(([n]) => n === 'ogurpchik:call:end')![1];
      assert.equal(typeof end.durationMs, 'number');
      assert.equal(end.peer.transport, 'tcp');
      const error = seen.find(([n]) => n === 'ogurpchik:call:error')![1];
      assert.equal(error.error.code, 'TIMEOUT');
      assert.ok(kinds.includes('ogurpchik:connection:open'), 'the server saw a connection open');
      assert.ok(kinds.includes('ogurpchik:connection:close'), 'and close');
      assert.ok(!JSON.stringify(seen.map(([, m]) => ({ ...m, peer: undefined, error: undefined }))).includes('"n"'), 'no payloads in events');
    } finally {
      for (const unsubscribe of subs) unsubscribe();
    }
  });

  it('logs connection events to stderr under DEBUG=ogurpchik:*', async () => {
    const script = `
      const { Node, tcp } = await import(${JSON.stringify(new URL('../src/index.js', import.meta.url).href)});
      const s = await new Node().serve(tcp('127.0.0.1:0'), { onRequest: (r) => r }).start();
      const c = await new Node().connect(tcp(s.addresses[0])).start();
      await c.client.call(1); await c.close(); await s.close();`;
    const run = promisify(execFile);
    const on = await run(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, DEBUG: 'ogurpchik:*' } });
    assert.match(on.stderr, /ogurpchik:connection open #1 tcp 127\.0\.0\.1:\d+/);
    assert.match(on.stderr, /ogurpchik:connection closed #1 tcp: CLOSED/);
    const off = await run(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, DEBUG: '' } });
    assert.equal(off.stderr, '');
  });
});
