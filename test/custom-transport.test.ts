/** A user's own transport, loaded by URL inside the connection worker, carries calls end to end. */
import assert from 'node:assert/strict';
import { Node, custom, tcp } from '../src/index.js';
import { rejectionOf, startServer } from './helpers.js';

it('a custom transport module serves and connects across two processes', async function () {
  this.timeout(20_000);
  const server = await startServer({ transport: 'custom', handler: 'module' });
  const address = server.address as { kind: 'custom'; name: string; address: { host: string; port: number } };
  assert.equal(address.kind, 'custom');
  assert.equal(address.name, 'xor');
  const node = await new Node().connect<any, any>(custom(new URL('./fixtures/xor-transport.js', import.meta.url), address.address, 'xor')).start();
  try {
    assert.deepEqual(await node.client.call({ type: 'Echo', text: 'through xor' }), { type: 'Echo', text: 'through xor' });
    const peer = (await node.client.call({ type: 'Pid' })).peer;
    assert.equal(peer.transport, 'xor', 'the server saw the custom transport');
    assert.match(peer.address, /^xor:/, 'the address came from the custom adapter');
    // The bytes really are scrambled: a plain tcp() client on the same port cannot talk to it.
    const plain = await new Node().connect(tcp(address.address)).start();
    const err = await rejectionOf(plain.client.call({ type: 'Ping' }, { timeoutMs: 3000 }));
    assert.ok(['CLOSED', 'PROTOCOL', 'FRAME_TOO_LARGE', 'TIMEOUT'].includes(err.code), err.code);
    await plain.close();
  } finally {
    await node.close();
    await server.kill();
  }
});

it('a custom transport module that does not exist fails start() with INVALID_ARGUMENT', async function () {
  this.timeout(10_000);
  const err = await rejectionOf(new Node().connect(custom('file:///nonexistent/transport.js', {})).start());
  assert.equal(err.code, 'INVALID_ARGUMENT');
  assert.match(err.message, /failed to load/);
});

it('a custom adapter that breaks its contract: start() says what it got wrong, with a fitting code (not REMOTE)', async function () {
  this.timeout(20_000);
  const faulty = (fault: string) => custom(new URL('./fixtures/faulty-transport.js', import.meta.url), { fault }, 'faulty');
  const cases: Array<[string, 'connect' | 'serve', string, RegExp]> = [
    ['throw-string', 'connect', 'UNAVAILABLE', /cannot connect to .*: the adapter threw a string/],
    ['not-a-stream', 'connect', 'INVALID_ARGUMENT', /connect\(\) must resolve with a ByteStream/],
    ['start-throws', 'connect', 'UNAVAILABLE', /could not be set up: start\(\) exploded/],
    ['listen-null', 'serve', 'INVALID_ARGUMENT', /listen\(\) must resolve with \{ address, close\(\) \}/],
  ];
  for (const [fault, how, code, message] of cases) {
    const node = how === 'connect' ? new Node().connect(faulty(fault)) : new Node().serve(faulty(fault), { onRequest: (x: unknown) => x });
    const err = await rejectionOf(node.start());
    assert.equal(err.code, code, `${fault}: ${err.message}`);
    assert.match(err.message, message, fault);
  }
  // An accepted stream that cannot start is dropped: the server lives on and closes promptly (it
  // waited seconds for a close event from that stream before).
  const server = await new Node().serve(faulty('accept-broken'), { onRequest: (x: unknown) => x }).start();
  await new Promise((resolve) => setTimeout(resolve, 100));
  const t0 = Date.now();
  await server.close();
  assert.ok(Date.now() - t0 < 1500, `close took ${Date.now() - t0} ms`);
});

it('a connection worker that dies mid-call rejects the call with CLOSED, and the process lives on', async function () {
  this.timeout(20_000);
  const server = await startServer({ transport: 'tcp', handler: 'module' });
  const node = await new Node().connect(custom(new URL('./fixtures/exit-transport.js', import.meta.url), server.address, 'exit')).start();
  try {
    const err = await rejectionOf(node.client.call({ type: 'Ping' }));
    assert.equal(err.code, 'CLOSED');
    assert.match(err.message, /worker exited|closed/);
    assert.equal((await rejectionOf(node.client.call({ type: 'Ping' }))).code, 'CLOSED');
  } finally {
    await node.close();
    await server.kill();
  }
  // The pool replaced the dead worker: new connections work.
  const server2 = await startServer({ transport: 'tcp', handler: 'module' });
  const again = await new Node().connect(tcp(server2.address as any)).start();
  assert.deepEqual(await again.client.call({ type: 'Ping' }), { type: 'Pong' });
  await again.close();
  await server2.kill();
});
