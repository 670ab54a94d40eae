/** TLS on TCP over loopback: certificates made at test time, mutual TLS, handshakes inside TLS, bad certificates. */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import net from 'node:net';
import path from 'node:path';
import { FileDiscovery, Node, RpcError, tcp, type CallContext, type PeerInfo, type RunningNode } from '../src/index.js';
import { refusalOf, rejectionOf, signedNodeCopy, sleep, tempDir } from './helpers.js';
import { makeCa, makeLeaf, opensslInstalled, type Pem } from './tls-certs.js';

const echoPeer = { onRequest: (req: unknown, ctx: CallContext) => ({ req, peer: ctx.peer }) };
type Reply = { req: unknown; peer: PeerInfo };

describe('tls', function () {
  this.timeout(30_000);
  let dirs: ReturnType<typeof tempDir>;
  let ca: Pem;
  let otherCa: Pem;
  let serverCert: Pem;
  let clientCert: Pem;
  let strangerCert: Pem;
  const nodes: RunningNode[] = [];
  const started = async <T extends RunningNode>(p: Promise<T>): Promise<T> => {
    const n = await p;
    nodes.push(n);
    return n;
  };
  const portOf = (n: RunningNode) => (n.addresses[0] as { port: number }).port;

  before(function () {
    if (!opensslInstalled()) {
      if (process.env.CI) throw new Error('/usr/bin/openssl is missing (.ci/run installs it)');
      this.skip();
    }
    dirs = tempDir();
    ca = makeCa(dirs.dir, 'ca');
    otherCa = makeCa(dirs.dir, 'other-ca');
    serverCert = makeLeaf(dirs.dir, ca, 'server', { ips: ['127.0.0.1'], dns: ['server.test'] });
    clientCert = makeLeaf(dirs.dir, ca, 'client', { cn: 'client-1' });
    strangerCert = makeLeaf(dirs.dir, otherCa, 'stranger');
  });
  afterEach(async () => {
    for (const n of nodes.splice(0)) await n.close().catch(() => {});
  });
  after(() => dirs?.remove());

  const tlsServer = (extra: object = {}, node = new Node()) =>
    started(node.serve(tcp('127.0.0.1:0', { tls: { cert: serverCert.cert, key: serverCert.key, ...extra } }), echoPeer).start());

  it('serves over TLS; both ends see the TLS peer; addresses say tls', async () => {
    const server = await tlsServer();
    assert.deepEqual(server.addresses[0], { kind: 'tcp', host: '127.0.0.1', port: portOf(server), tls: true });
    const client = await started(new Node().connect<unknown, Reply>(tcp({ port: portOf(server) }, { tls: { ca: ca.cert } })).start());
    const reply = await client.client.call('hi');
    assert.equal(reply.req, 'hi');
    assert.equal(reply.peer.transport, 'tcp');
    // No client certificate was asked for: the server knows the session, not who the client is.
    assert.deepEqual(reply.peer.tls, { authorized: false, protocol: 'TLSv1.3' });
    const big = new Uint8Array(1 << 20).map((_, i) => i * 7);
    const echoed = (await client.client.call(big)).req as Uint8Array;
    assert.equal(Buffer.compare(echoed, big), 0, '1 MiB crosses TLS intact');
  });

  it('mutual TLS: a client certificate from the CA is accepted and named; none, or one from another CA, gives HANDSHAKE_FAILED with the TLS reason; other connections go on', async () => {
    const server = await tlsServer({ ca: ca.cert, requestCert: true });
    const port = portOf(server);
    const good = await started(new Node().connect<unknown, Reply>(tcp({ port }, { tls: { ca: ca.cert, cert: clientCert.cert, key: clientCert.key } })).start());
    const { peer } = await good.client.call(1);
    assert.equal(peer.tls?.authorized, true);
    assert.equal(peer.tls?.subject, 'O=ogurpchik tests, CN=client-1');
    assert.equal(peer.tls?.issuer, 'O=ogurpchik tests, CN=ogurpchik test CA ca');
    assert.match(peer.tls?.fingerprint256 ?? '', /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);

    const none = await rejectionOf(new Node().connect(tcp({ port }, { tls: { ca: ca.cert } })).start());
    assert.equal(none.code, 'HANDSHAKE_FAILED');
    assert.match(none.message, /TLS handshake with 127\.0\.0\.1:\d+ failed: .*certificate required/);
    assert.equal(none.data?.tlsCode, 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');

    const stranger = await rejectionOf(new Node().connect(tcp({ port }, { tls: { ca: ca.cert, cert: strangerCert.cert, key: strangerCert.key } })).start());
    assert.equal(stranger.code, 'HANDSHAKE_FAILED');
    // node:tls drops such a client after the handshake without an alert, so the client can only say what it knows.
    assert.match(stranger.message, /refused this client certificate/);

    assert.equal((await good.client.call(2)).req, 2, 'the accepted client was not disturbed');
  });

  it('a client that trusts another CA, or expects another name, is refused with HANDSHAKE_FAILED and the reason', async () => {
    const port = portOf(await tlsServer());
    const wrongCa = await rejectionOf(new Node().connect(tcp({ port }, { tls: { ca: otherCa.cert } })).start());
    assert.equal(wrongCa.code, 'HANDSHAKE_FAILED');
    assert.match(wrongCa.message, /unable to verify the first certificate \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/);
    assert.equal(wrongCa.data?.tlsCode, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    const systemRoots = await rejectionOf(new Node().connect(tcp({ port }, { tls: true })).start());
    assert.equal(systemRoots.code, 'HANDSHAKE_FAILED');
    const wrongName = await rejectionOf(new Node().connect(tcp({ port }, { tls: { ca: ca.cert, servername: 'elsewhere.test' } })).start());
    assert.equal(wrongName.code, 'HANDSHAKE_FAILED');
    assert.match(wrongName.message, /elsewhere\.test.*ERR_TLS_CERT_ALTNAME_INVALID/);
    // The name it does carry works, and so does the dangerous switch.
    const named = await started(new Node().connect(tcp({ port }, { tls: { ca: ca.cert, servername: 'server.test' } })).start());
    assert.equal(((await named.client.call('n')) as Reply).req, 'n');
    const blind = await started(new Node().connect(tcp({ port }, { tls: { rejectUnauthorized: false } })).start());
    assert.equal(((await blind.client.call('b')) as Reply).req, 'b');
  });

  it('TLS against a plain server fails the handshake; a plain client of a TLS server gets CLOSED saying why it may be, and the server goes on', async () => {
    const plain = await started(new Node().serve(tcp('127.0.0.1:0'), echoPeer).start());
    const tlsToPlain = await rejectionOf(new Node({ handshakeTimeoutMs: 500 }).connect(tcp({ port: portOf(plain) }, { tls: { ca: ca.cert } })).start());
    assert.equal(tlsToPlain.code, 'HANDSHAKE_FAILED');
    assert.match(tlsToPlain.message, /TLS handshake with 127\.0\.0\.1:\d+/);

    const server = await tlsServer();
    const plainClient = await started(new Node().connect(tcp({ port: portOf(server) })).start());
    const err = await rejectionOf(plainClient.client.call('x', { timeoutMs: 10_000 }));
    assert.equal(err.code, 'CLOSED');
    assert.match(err.message, /before sending anything \(if it serves TLS, connect with tcp\(address, \{ tls \}\)\)/);
    const ok = await started(new Node().connect(tcp({ port: portOf(server) }, { tls: { ca: ca.cert } })).start());
    assert.equal(((await ok.client.call('still')) as Reply).req, 'still');
  });

  it('one-to-one over TLS: a second client gets BUSY, with and without a handshake', async () => {
    const plain = await tlsServer({}, new Node().oneToOne());
    const first = await started(new Node().connect(tcp({ port: portOf(plain) }, { tls: { ca: ca.cert } })).start());
    await first.client.call(1);
    // Without a handshake the refusal comes after the connection: it reaches the client before
    // start() resolves (start() rejects) or after (its first call does), whichever it meets.
    const second = await refusalOf(new Node().connect(tcp({ port: portOf(plain) }, { tls: { ca: ca.cert } })).start(), (node) => node.client.call(2));
    assert.equal(second.err.code, 'BUSY');
    const versioned = await tlsServer({}, new Node().oneToOne().handshakeVersionOnly());
    await started(new Node().handshakeVersionOnly().connect(tcp({ port: portOf(versioned) }, { tls: { ca: ca.cert } })).start());
    const refused = await rejectionOf(new Node().handshakeVersionOnly().connect(tcp({ port: portOf(versioned) }, { tls: { ca: ca.cert } })).start());
    assert.equal(refused.code, 'BUSY');
  });

  it('a server that never answers the TLS handshake fails it within handshakeTimeoutMs', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s)).listen(0, '127.0.0.1');
    await new Promise((r) => silent.once('listening', r));
    try {
      const t0 = Date.now();
      const err = await rejectionOf(new Node({ handshakeTimeoutMs: 300 }).connect(tcp({ port: (silent.address() as net.AddressInfo).port }, { tls: { ca: ca.cert } })).start());
      assert.equal(err.code, 'HANDSHAKE_FAILED');
      assert.match(err.message, /did not complete within 300 ms/);
      assert.ok(Date.now() - t0 < 3000);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it('the server drops a client that never starts its TLS handshake after handshakeTimeoutMs, and keeps serving', async () => {
    const server = await tlsServer({}, new Node({ handshakeTimeoutMs: 300 }));
    const idle = net.connect(portOf(server), '127.0.0.1');
    const t0 = Date.now();
    await new Promise((resolve) => idle.once('close', resolve).once('error', () => {}));
    const waited = Date.now() - t0;
    assert.ok(waited >= 250 && waited < 3000, `dropped after ${waited} ms`);
    const ok = await started(new Node().connect(tcp({ port: portOf(server) }, { tls: { ca: ca.cert } })).start());
    assert.equal(((await ok.client.call('after')) as Reply).req, 'after');
  });

  it('close() does not wait for a client stuck in its TLS handshake', async () => {
    const server = await new Node().serve(tcp('127.0.0.1:0', { tls: { cert: serverCert.cert, key: serverCert.key } }), echoPeer).start();
    const idle = net.connect(portOf(server), '127.0.0.1');
    const idleClosed = new Promise((resolve) => idle.once('close', resolve).once('error', () => {}));
    await new Promise((resolve) => idle.once('connect', resolve));
    await sleep(100);
    const t0 = Date.now();
    await server.close();
    await idleClosed;
    assert.ok(Date.now() - t0 < 2000, `close() took ${Date.now() - t0} ms (the handshake limit is 5000)`);
  });

  it('a refused address is UNAVAILABLE, not a TLS failure', async () => {
    const probe = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => probe.once('listening', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const err = await rejectionOf(new Node().connect(tcp({ port }, { tls: { ca: ca.cert } })).start());
    assert.equal(err.code, 'UNAVAILABLE');
  });

  it('HMAC and version handshakes run inside the TLS session', async () => {
    const secret = 'tls-and-hmac-secret';
    const server = await tlsServer({}, new Node().authHmac(secret));
    const port = portOf(server);
    const client = await started(new Node().authHmac(secret, { mutual: true }).connect<unknown, Reply>(tcp({ port }, { tls: { ca: ca.cert } })).start());
    const { peer } = await client.client.call(null);
    assert.equal(peer.auth, 'hmac');
    assert.equal(peer.tls?.protocol, 'TLSv1.3');
    const wrong = await rejectionOf(new Node().authHmac('not-the-secret').connect(tcp({ port }, { tls: { ca: ca.cert } })).start());
    assert.equal(wrong.code, 'AUTH_FAILED');
    const versionServer = await tlsServer({}, new Node().handshakeVersionOnly());
    const v = await started(new Node().handshakeVersionOnly().connect<unknown, Reply>(tcp({ port: portOf(versionServer) }, { tls: { ca: ca.cert } })).start());
    assert.equal((await v.client.call(null)).peer.auth, 'version');
  });

  it('signed process over TLS on loopback: the pid still comes from the socket table', async function () {
    this.timeout(60_000);
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
    const server = await tlsServer({}, new Node().authSignedProcess(raw));
    const port = portOf(server);
    // This process runs an unsigned binary: refused, and the refusal names this process's pid, so the lookup worked.
    const unsigned = await rejectionOf(new Node().authSignedProcess(raw).connect(tcp({ port }, { tls: { ca: ca.cert } })).start());
    assert.equal(unsigned.code, 'AUTH_FAILED');
    assert.match(unsigned.message, new RegExp(`check of pid ${process.pid} failed: its image .* has no signature file`));
    // A signed copy of this node binary is served, and the handler sees its pid.
    const signedNode = signedNodeCopy(dirs.dir, privateKey);
    const script = new URL('./fixtures/signed-client.js', import.meta.url).pathname;
    const child = spawn(signedNode, [script, JSON.stringify({ port, key: raw.toString('base64'), ca: ca.cert })], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (c) => (out += c));
    await new Promise((resolve) => child.once('exit', resolve));
    const result = JSON.parse(out);
    assert.equal(result.error, undefined, JSON.stringify(result.error));
    const seen: PeerInfo = result.peer.peer; // the fixture prints what the handler returned: { req, peer }
    assert.equal(seen.auth, 'signed-process');
    assert.equal(seen.pid, result.pid);
    assert.equal(seen.tls?.protocol, 'TLSv1.3');
  });

  it('certFile, keyFile and caFile are read when tcp() is called', async () => {
    const server = await started(
      new Node().serve(tcp('127.0.0.1:0', { tls: { certFile: serverCert.certFile, keyFile: serverCert.keyFile, caFile: ca.certFile, requestCert: true } }), echoPeer).start(),
    );
    const client = await started(
      new Node().connect<unknown, Reply>(tcp({ port: portOf(server) }, { tls: { caFile: [ca.certFile], certFile: clientCert.certFile, keyFile: clientCert.keyFile } })).start(),
    );
    assert.equal((await client.client.call(null)).peer.tls?.subject, 'O=ogurpchik tests, CN=client-1');
  });

  it('bad TLS options are INVALID_ARGUMENT at tcp(), serve() or waitFor(), and never show key material', () => {
    const bad = (f: () => unknown, pattern: RegExp) => {
      try {
        f();
      } catch (err) {
        assert.ok(RpcError.is(err));
        assert.equal(err.code, 'INVALID_ARGUMENT');
        assert.match(err.message, pattern);
        assert.ok(!err.message.includes('PRIVATE KEY'), 'no key material in the message');
        return;
      }
      assert.fail(`expected INVALID_ARGUMENT matching ${pattern}`);
    };
    bad(() => tcp('127.0.0.1:1', { tls: { cert: serverCert.cert } }), /cert and tls.key go together/);
    bad(() => tcp('127.0.0.1:1', { tls: { cert: 'not a pem', key: serverCert.key } }), /tls.cert holds no PEM certificate/);
    bad(() => tcp('127.0.0.1:1', { tls: { cert: serverCert.cert, key: 'garbage' } }), /tls.key is not a usable PEM private key/);
    bad(() => tcp('127.0.0.1:1', { tls: { cert: serverCert.cert, key: clientCert.key } }), /tls.key does not belong to tls.cert \(O=ogurpchik tests, CN=server\)/);
    bad(() => tcp('127.0.0.1:1', { tls: { ca: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' } }), /tls.ca\[0\]: certificate 1 does not parse/);
    bad(() => tcp('127.0.0.1:1', { tls: { ca: [] } }), /tls.ca is empty/);
    bad(() => tcp('127.0.0.1:1', { tls: { caFile: path.join(dirs.dir, 'missing.pem') } }), /cannot read .*missing.pem \(ENOENT\)/);
    bad(() => tcp('127.0.0.1:1', { tls: { ca: ca.cert, caFile: ca.certFile } }), /not both/);
    bad(() => tcp('127.0.0.1:1', { tls: { cafile: 'x' } as object }), /unknown tls option\(s\) cafile/);
    bad(() => tcp('127.0.0.1:1', { tls: { requestCert: 'yes' } as object }), /requestCert must be a boolean/);
    bad(() => tcp('127.0.0.1:1', { tls: 'on' as unknown as true }), /tls takes an options object/);
    bad(() => new Node().serve(tcp('127.0.0.1:0', { tls: { ca: ca.cert } }), echoPeer), /a TLS server needs its certificate/);
    bad(() => new Node().waitFor('svc', { transport: 'tcp', tls: { ca: ca.cert } }), /reaches services published as tls, not tcp/);
    bad(() => new Node().waitFor('svc', { tls: { ca: 'nope' } }), /tls.ca\[0\] holds no PEM certificate/);
  });

  it('the CLI calls a service published as tls with --ca (and --cert/--key for mutual TLS)', async () => {
    const dir = path.join(dirs.dir, 'cli-discovery');
    const name = `tls-cli-${process.pid}`;
    await tlsServer({ ca: ca.cert, requestCert: true }, new Node({ discovery: new FileDiscovery({ dir }) }).publish(name));
    const cli = new URL('../src/cli.js', import.meta.url).pathname;
    const run = promisify(execFile);
    const { stdout } = await run(process.execPath, [cli, 'call', name, '"via cli"', '--dir', dir, '--ca', ca.certFile, '--cert', clientCert.certFile, '--key', clientCert.keyFile]);
    assert.equal(JSON.parse(stdout).req, 'via cli');
    const refused: any = await run(process.execPath, [cli, 'call', name, '1', '--dir', dir, '--ca', otherCa.certFile]).catch((e) => e);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /HANDSHAKE_FAILED: TLS handshake with 127\.0\.0\.1:\d+ failed/);
  });

  it('discovery: a TLS server publishes kind "tls"; a plain client refuses it, a TLS client reaches it', async () => {
    const discovery = new FileDiscovery({ dir: path.join(dirs.dir, 'discovery') });
    const name = `tls-svc-${process.pid}`;
    const server = await tlsServer({}, new Node({ discovery }).publish(name));
    const record = await discovery.lookup(name);
    assert.equal(record?.transport_kind, 'tls');
    assert.deepEqual(record?.map, { '0': `127.0.0.1:${portOf(server)}` });
    const plain = await rejectionOf(new Node({ discovery }).waitFor(name, { timeoutMs: 2000 }).start());
    assert.equal(plain.code, 'INVALID_ARGUMENT');
    assert.match(plain.message, /published as tls\/msgpack, but this client speaks tcp\/msgpack/);
    const client = await started(new Node({ discovery }).waitFor<unknown, Reply>(name, { timeoutMs: 2000, tls: { ca: ca.cert } }).start());
    assert.equal((await client.client.call('found')).req, 'found');
    const distrust = await rejectionOf(new Node({ discovery }).waitFor(name, { timeoutMs: 2000, tls: { ca: otherCa.cert } }).start());
    assert.equal(distrust.code, 'HANDSHAKE_FAILED');
  });
});
