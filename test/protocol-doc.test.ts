/**
 * docs/PROTOCOL.md is what a second implementation is written from: its worked example (§8) and
 * its HMAC test vectors must be the bytes this code produces, so the page cannot drift silently.
 * Each ```hex <name> block is parsed (a `#` starts a comment, whitespace is ignored) and compared
 * with what a real Session sends, through the same envelope and codec code a connection uses.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { RpcError } from '../src/errors.js';
import { createCodec } from '../src/codec/index.js';
import { clientProof, serverProof } from '../src/handshake/hmac.js';
import { Kind, encodePing } from '../src/protocol/envelope.js';
import { encodeFrame } from '../src/protocol/framing.js';
import { Session } from '../src/session/session.js';
import type { Handler } from '../src/types.js';

const repo = new URL('../../', import.meta.url);
const doc = fs.readFileSync(new URL('docs/PROTOCOL.md', repo), 'utf8');

/** Every ```hex <name> block of the page, by name, as bytes. */
function hexBlocks(text: string): Map<string, string> {
  const blocks = new Map<string, string>();
  for (const m of text.matchAll(/^[ \t]*```hex[ \t]+(\S+)[ \t]*\n([\s\S]*?)^[ \t]*```/gm)) {
    const hex = m[2]
      .split('\n')
      .map((line) => line.replace(/#.*/, ''))
      .join('')
      .replace(/\s+/g, '');
    assert.match(hex, /^([0-9a-f]{2})+$/, `block ${m[1]} is not hex`);
    assert.ok(!blocks.has(m[1]), `block ${m[1]} appears twice`);
    blocks.set(m[1], hex);
  }
  return blocks;
}

const blocks = hexBlocks(doc);
function block(name: string): string {
  const hex = blocks.get(name);
  assert.ok(hex !== undefined, `docs/PROTOCOL.md has no \`\`\`hex ${name} block`);
  return hex;
}

const hexOf = (b: Uint8Array) => Buffer.from(b).toString('hex');
const tick = () => new Promise(setImmediate);

/** A Session over msgpack whose sent bodies are collected as whole frames (hex). */
function session(handler?: Handler, sendStacks = false) {
  const frames: string[] = [];
  const s = new Session({
    codec: createCodec({ kind: 'msgpack' }),
    peer: { transport: 'unix', auth: 'none', connectionId: 1 },
    // head and payload are views valid only during the call: copied at once.
    send: (head, payload) => void frames.push(hexOf(encodeFrame(new Uint8Array(Buffer.concat([head, payload]))))),
    handler,
    sendStacks,
  });
  return { s, frames };
}

describe('docs/PROTOCOL.md matches the code', () => {
  const server = session({
    onRequest(req: any) {
      if (req?.type === 'Ping') return { type: 'Pong' };
      if (req?.type === 'Busy') throw new RpcError('BUSY', 'x');
      throw new TypeError('x');
    },
  });

  it("the worked example's Request is what call({ type: 'Ping' }) sends", () => {
    const client = session();
    void client.s.call({ type: 'Ping' }).catch(() => {});
    assert.deepEqual(client.frames, [block('request')]);
    client.s.close(new RpcError('CLOSED', 'done'));
  });

  it("the worked example's Response is what a server answers to that Request, and the caller reads it", async () => {
    server.frames.length = 0;
    server.s.receive(Buffer.from(block('request'), 'hex').subarray(4));
    await tick();
    assert.deepEqual(server.frames, [block('response')]);

    const client = session();
    const call = client.s.call({ type: 'Ping' });
    client.s.receive(Buffer.from(block('response'), 'hex').subarray(4));
    assert.deepEqual(await call, { type: 'Pong' });
  });

  it("the worked example's Error frames are what a handler's throws send, and what the caller sees", async () => {
    const codec = createCodec({ kind: 'msgpack' });
    const request = (id: number, type: string) => {
      const payload = codec.encode({ type });
      const body = new Uint8Array(13 + payload.length);
      body[0] = Kind.Request;
      body[1] = id;
      body.set(payload, 13);
      return body;
    };
    server.frames.length = 0;
    server.s.receive(request(2, 'Busy'));
    server.s.receive(request(3, 'Type'));
    await tick();
    assert.deepEqual(server.frames, [block('error-busy'), block('error-type')]);

    const client = session();
    const busy = client.s.call('a');
    const type = client.s.call('b');
    // This client's calls are ids 1 and 2; the page's frames answer ids 2 and 3.
    const renumber = (hex: string, id: number) => {
      const body = Buffer.from(hex, 'hex').subarray(4);
      body[1] = id;
      return body;
    };
    client.s.receive(renumber(block('error-busy'), 1));
    client.s.receive(renumber(block('error-type'), 2));
    await assert.rejects(busy, (e: RpcError) => e.code === 'REMOTE' && e.message === 'x' && e.remote?.code === 'BUSY' && e.remote?.name === 'RpcError');
    await assert.rejects(type, (e: RpcError) => e.code === 'REMOTE' && e.message === 'x' && e.remote?.name === 'TypeError' && e.remote?.code === undefined);
  });

  it('the Ping and Pong are what the code sends and echoes', async () => {
    assert.equal(hexOf(encodeFrame(encodePing(Kind.Ping, 0xfedcba9876543210n))), block('ping'));
    server.frames.length = 0;
    server.s.receive(Buffer.from(block('ping'), 'hex').subarray(4));
    assert.deepEqual(server.frames, [block('pong')]);
  });

  it("msgpack's undefined is the bytes the page gives", () => {
    const codec = createCodec({ kind: 'msgpack' });
    assert.equal(hexOf(codec.encode(undefined)), block('undefined'));
    assert.equal(codec.decode(Buffer.from(block('undefined'), 'hex')), undefined);
  });

  it('the HMAC test vectors are what the handshake computes (secret "s3cret" as UTF-8)', () => {
    const secret = new TextEncoder().encode('s3cret');
    const nonce = Uint8Array.from({ length: 32 }, (_, i) => i);
    const clientNonce = Uint8Array.from({ length: 32 }, (_, i) => 0x20 + i);
    assert.equal(hexOf(clientProof(secret, 1, nonce)), block('hmac-client-proof'));
    assert.equal(hexOf(serverProof(secret, 1, clientNonce, nonce)), block('hmac-server-proof'));
  });

  it('the error payload examples in JSON are what the JSON codec sends', async () => {
    const json = createCodec({ kind: 'json' });
    const sent: string[] = [];
    const s = new Session({
      codec: json,
      peer: { transport: 'tcp', auth: 'none', connectionId: 1 },
      send: (_head, payload) => void sent.push(Buffer.from(payload).toString()),
      handler: {
        onRequest(req: any) {
          throw req === 'busy' ? new RpcError('BUSY', 'x') : new TypeError('x');
        },
      },
    });
    for (const [id, req] of [[1, 'busy'], [2, 'type']] as const) {
      const payload = json.encode(req);
      const body = new Uint8Array(13 + payload.length);
      body[0] = Kind.Request;
      body[1] = id;
      body.set(payload, 13);
      s.receive(body);
    }
    await tick();
    for (const payload of sent) assert.ok(doc.includes('`' + payload + '`'), `docs/PROTOCOL.md does not show the payload ${payload}`);
    assert.equal(sent.length, 2);
  });
});
