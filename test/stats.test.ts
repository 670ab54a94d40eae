/** RunningNode.stats(): what each listener and each client endpoint carries, read from their workers. */
import assert from 'node:assert/strict';
import { Node, isolate, tcp, type RunningNode } from '../src/index.js';
import { refusalOf, rejectionOf } from './helpers.js';
import { waitUntil } from './endpoints-helpers.js';

const echoModule = new URL('./fixtures/echo-handler.js', import.meta.url);
const plugin = new URL('./fixtures/plugin.js', import.meta.url);
/** No keepalive pings: the frame counts are exactly the calls'. */
const quiet = { keepAliveMs: 0 };

function tcpAddress(node: RunningNode<any, any>): { host: string; port: number } {
  return node.addresses[0] as { host: string; port: number };
}

describe('RunningNode.stats()', function () {
  this.timeout(20_000);

  for (const handler of ['module', 'main'] as const) {
    it(`counts a listener's connections and frames, closed connections included (${handler} handler)`, async () => {
      const serving = handler === 'module' ? echoModule : { onRequest: (req: unknown) => req, onEvent: () => {} };
      await using server = await new Node(quiet).serve(tcp('127.0.0.1:0'), serving).start();
      await using a = await new Node(quiet).connect<any, any>(tcp(tcpAddress(server))).start();
      const b = await new Node(quiet).connect<any, any>(tcp(tcpAddress(server))).start();
      for (let i = 0; i < 3; i++) assert.deepEqual(await a.client.call({ type: 'Echo', text: `a${i}` }), { type: 'Echo', text: `a${i}` });
      for (let i = 0; i < 2; i++) assert.deepEqual(await b.client.call({ type: 'Echo', text: `b${i}` }), { type: 'Echo', text: `b${i}` });
      await a.client.notify({ type: 'Note' });

      // Three calls and an event from a, two calls from b; five answers.
      await waitUntil(async () => (await server.stats()).listeners[0].framesIn === 6, 5000, 'the server has counted the event');
      assert.deepEqual((await server.stats()).listeners, [{ address: server.addresses[0], connections: 2, accepted: 2, framesIn: 6, framesOut: 5, restarts: 0, threads: 1 }]);
      assert.deepEqual((await server.stats()).endpoints, []);
      const [{ ringPair, ...counts }] = (await a.stats()).endpoints;
      assert.deepEqual(counts, { endpoint: `127.0.0.1:${tcpAddress(server).port}`, state: 'ready', pending: 0, framesIn: 3, framesOut: 4 });
      assert.equal(typeof ringPair, 'number', 'a connected endpoint names its ring pair');
      assert.deepEqual((await a.stats()).listeners, []);

      await b.close();
      await waitUntil(async () => (await server.stats()).listeners[0].connections === 1, 5000, 'the server has seen b close');
      const after = (await server.stats()).listeners[0];
      assert.equal(after.accepted, 2);
      // b's frames stay counted (and the Close it sent on its way out, if any).
      assert.ok(after.framesIn >= 6 && after.framesOut === 5, JSON.stringify(after));
    });
  }

  it('a client a one-to-one server refuses is not counted as taken in', async () => {
    await using server = await new Node(quiet).oneToOne().serve(tcp('127.0.0.1:0'), echoModule).start();
    await using first = await new Node(quiet).connect<any, any>(tcp(tcpAddress(server))).start();
    await first.client.call({ type: 'Ping' });
    // The refusal may reach the second client before its start() resolved, or after.
    const { err } = await refusalOf(new Node(quiet).connect<any, any>(tcp(tcpAddress(server))).start(), (n) => n.client.call({ type: 'Ping' }));
    assert.equal(err.code, 'BUSY');
    const { listeners } = await server.stats();
    assert.equal(listeners[0].connections, 1);
    assert.equal(listeners[0].accepted, 1);
  });

  it('a listener whose worker died counts its restart, and its counts start again', async () => {
    await using server = await new Node(quiet).serve(tcp('127.0.0.1:0'), echoModule).start();
    {
      await using client = await new Node(quiet).connect<any, any>(tcp(tcpAddress(server))).start();
      await client.client.call({ type: 'Ping' });
      assert.equal((await rejectionOf(client.client.call({ type: 'Exit' }, { timeoutMs: 5000 }))).code, 'CLOSED');
    }
    await waitUntil(async () => (await server.stats()).listeners[0].restarts === 1, 10_000, 'the listener is listening again');
    await using again = await new Node(quiet).connect<any, any>(tcp(tcpAddress(server))).start();
    await again.client.call({ type: 'Ping' });
    const { listeners } = await server.stats();
    assert.deepEqual(listeners[0], { address: server.addresses[0], connections: 1, accepted: 1, framesIn: 1, framesOut: 1, restarts: 1, threads: 1 });
  });

  it("an isolate plugin's endpoint counts the host's side of its messages", async () => {
    await using node = await new Node().connect<any, any>(isolate(plugin), { handler: { onEvent: () => {} } }).start();
    assert.deepEqual(await node.client.call({ type: 'Echo', text: 'x' }), { type: 'Echo', text: 'x' });
    await node.client.call({ type: 'Echo', text: 'y' });
    // Two calls out, two answers and the plugin's greeting (an event from its onConnect) in.
    await waitUntil(async () => (await node.stats()).endpoints[0].framesIn === 3, 5000, 'the greeting is counted');
    const [endpoint] = (await node.stats()).endpoints;
    assert.equal(endpoint.state, 'ready');
    assert.equal(endpoint.framesOut, 2);
  });

  it('rejects with CLOSED once the node is closing', async () => {
    const server = await new Node(quiet).serve(tcp('127.0.0.1:0'), echoModule).start();
    const closing = server.close();
    assert.equal((await rejectionOf(server.stats())).code, 'CLOSED');
    await closing;
  });
});
