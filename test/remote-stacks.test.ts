/**
 * Remote stacks (NodeOptions.remoteStacks): an error's stack, with the server's file paths, goes
 * to a peer over unix (and shm, isolate) by default and over tcp only when the node opts in; its
 * name, message, data and cause go always. The same holds for the reason a Close tells the peer.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { Node, RpcError, tcp, unix, type Address, type Handler, type RunningNode } from '../src/index.js';
import { createCodec } from '../src/codec/index.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { Kind, decodeEnvelope } from '../src/protocol/envelope.js';
import { rejectionOf, tempDir } from './helpers.js';

/** Every stack frame of the server's throw names this function. */
function serverHandlerThrows(): never {
  const err = new TypeError('teapot', { cause: new Error('inner cause') }) as TypeError & { statusCode?: number };
  err.statusCode = 418;
  throw err;
}

const mainHandler: Handler = { onRequest: () => serverHandlerThrows() };
const moduleHandler = new URL('./fixtures/echo-handler.js', import.meta.url);

/** Every stack the caller's error carries: its remote one, and those of its causes. */
function stacksOf(err: RpcError): string[] {
  const stacks: string[] = [];
  if (err.remote?.stack !== undefined) stacks.push(err.remote.stack);
  for (let e = err.cause as (Error & { remote?: { stack?: string } }) | undefined; e !== undefined; e = e.cause as typeof e) {
    if (e.stack !== undefined) stacks.push(e.stack);
    if (e.remote?.stack !== undefined) stacks.push(e.remote.stack);
  }
  return stacks;
}

describe('remote stacks', function () {
  this.timeout(20_000);
  let tmp: ReturnType<typeof tempDir>;
  const nodes: RunningNode<any, any>[] = [];

  before(() => {
    tmp = tempDir();
  });
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });
  after(() => tmp.remove());

  /** Serves `handler` on `transport` with `remoteStacks`, calls it once with a throwing request, and returns the caller's error. */
  async function thrown(transport: 'tcp' | 'unix', handler: Handler | URL, remoteStacks?: 'local' | 'always' | 'never'): Promise<RpcError> {
    const where = transport === 'tcp' ? tcp('127.0.0.1:0') : unix(path.join(tmp.dir, `s-${nodes.length}.sock`));
    const server = await new Node({ remoteStacks }).serve(where, handler).start();
    nodes.push(server);
    const address = server.addresses[0] as Address;
    const client = await new Node().connect(transport === 'tcp' ? tcp(address as { host: string; port: number }) : unix((address as { path: string }).path)).start();
    nodes.push(client);
    const err = await rejectionOf(client.client.call({ type: 'Throw', message: 'teapot' }));
    assert.ok(RpcError.is(err));
    assert.equal(err.code, 'REMOTE');
    // What goes whatever the policy.
    assert.equal(err.message, 'teapot');
    assert.equal(err.remote?.name, 'TypeError');
    assert.equal((err.data as { statusCode?: number } | undefined)?.statusCode, 418);
    assert.equal((err.cause as Error | undefined)?.message, 'inner cause');
    return err;
  }

  for (const [what, handler, frame] of [
    ['main-thread handler', mainHandler, /serverHandlerThrows/],
    ['worker-module handler', moduleHandler, /echo-handler/],
  ] as const) {
    it(`over tcp, a ${what}'s error carries no stack by default, nor its cause`, async () => {
      const err = await thrown('tcp', handler);
      assert.equal(err.remote?.stack, undefined);
      for (const stack of stacksOf(err)) assert.doesNotMatch(stack, frame);
    });

    it(`over tcp with remoteStacks: 'always', a ${what}'s error carries its stack`, async () => {
      const err = await thrown('tcp', handler, 'always');
      assert.match(err.remote?.stack ?? '', frame);
      assert.match((err.cause as Error).stack ?? '', frame);
    });
  }

  it('over unix, the stack goes by default', async () => {
    const err = await thrown('unix', mainHandler);
    assert.match(err.remote?.stack ?? '', /TypeError: teapot[\s\S]*serverHandlerThrows/);
  });

  it("over unix with remoteStacks: 'never', no stack goes", async () => {
    const err = await thrown('unix', mainHandler, 'never');
    assert.equal(err.remote?.stack, undefined);
    for (const stack of stacksOf(err)) assert.doesNotMatch(stack, /serverHandlerThrows/);
  });

  /** The reason a tcp server's Close gives a peer that sent garbage. */
  async function closeReason(remoteStacks?: 'always'): Promise<Record<string, unknown>> {
    const server = await new Node({ remoteStacks }).serve(tcp('127.0.0.1:0'), mainHandler).start();
    nodes.push(server);
    const { port } = server.addresses[0] as { port: number };
    return await new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      const decoder = new FrameDecoder();
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error('no Close within 5 s'));
      }, 5000);
      socket.on('error', () => {});
      socket.on('data', (chunk) =>
        decoder.push(chunk, (body) => {
          const env = decodeEnvelope(body);
          if (env.kind !== Kind.Close) return;
          clearTimeout(timer);
          socket.destroy();
          resolve(createCodec().decode(env.payload) as Record<string, unknown>);
        }),
      );
      // An envelope kind that does not exist: the server closes, saying why.
      socket.write(encodeFrame(new Uint8Array([0x42])));
    });
  }

  it("a Close's reason over tcp carries no stack by default, and one with remoteStacks: 'always'", async () => {
    const plain = await closeReason();
    assert.equal(plain.code, 'PROTOCOL');
    assert.equal(plain.stack, undefined);
    const opted = await closeReason('always');
    assert.equal(opted.code, 'PROTOCOL');
    assert.match(String(opted.stack), /RpcError/);
  });

  it('refuses a remoteStacks that is not local, always or never', () => {
    assert.throws(() => new Node({ remoteStacks: 'sometimes' as 'local' }), (err: RpcError) => err.code === 'INVALID_ARGUMENT' && /remoteStacks/.test(err.message));
  });
});
