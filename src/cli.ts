#!/usr/bin/env node
/**
 * The `ogurpchik` command: list published services, call one (like grpcurl), run the benchmark.
 */
import { spawnSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { json, msgpack } from './codec/index.js';
import { FileDiscovery } from './discovery/files.js';
import { EtcdDiscovery } from './discovery/etcd.js';
import type { DiscoveryBackend } from './discovery/types.js';
import { transportFromRecord } from './discovery/topology.js';
import { resolveTls } from './transport/tls-options.js';
import { RpcError } from './errors.js';
import { isTimerMs } from './limits.js';
import { Node } from './main/node.js';
import { parsePublicKey, parseSignature, verifyEd25519 } from './handshake/signed-process.js';

const kUsage = `usage: ogurpchik <command> [options]

commands:
  ls [--dir <dir> | --etcd <url>]        list published services (<name>@<instance> for shared ones) and whether their owners live
  call <service> <json> [--timeout <ms>] [--dir <dir> | --etcd <url>] [--ca <pem> --cert <pem> --key <pem>]
                                         call a published service once and print the response as JSON
  keygen [--out <prefix>]                write an Ed25519 key pair: <prefix>.key (private, 0600) and <prefix>.pub (base64)
  sign <file> --key <prefix.key>         write <file>.sig, the detached signature authSignedProcess() checks
  verify <file> <pubkey>                 check <file>.sig against a public key (a .pub file or its base64)
  bench [--quick]                        run the transport benchmark (from a source checkout)
  help [<command>]                       this text

Discovery records are read from $XDG_RUNTIME_DIR/ogurpchik (else <tmp>/ogurpchik-<uid>) unless --dir
or --etcd (an etcd endpoint, records under ogurpchik/services/) is given.`;

/** The discovery backend the options name: --etcd <url>, else the file backend (--dir or the default). */
function backendFrom(values: { dir?: string; etcd?: string }): DiscoveryBackend & { close?(): Promise<void> } {
  return values.etcd ? new EtcdDiscovery({ hosts: values.etcd }) : new FileDiscovery({ dir: values.dir });
}

const kCommandHelp: Record<string, string> = {
  ls: 'usage: ogurpchik ls [--dir <dir> | --etcd <url>]\n  Lists every published service (an instance of a shared name as <name>@<instance>): name, liveness of its owner, transport/codec and addresses.',
  call: 'usage: ogurpchik call <service> <json> [--timeout <ms>] [--dir <dir> | --etcd <url>] [--ca <pem> --cert <pem> --key <pem>]\n  Waits up to --timeout (default 5000) for <service>, sends <json> as one request with the codec the service publishes, prints the response as JSON. Exits 1 with the error code on failure.\n  A service published as tls is reached with --ca (the CA file to trust; default the bundled root CAs) and, for mutual TLS, --cert and --key.',
  keygen: 'usage: ogurpchik keygen [--out <prefix>]\n  Writes an Ed25519 key pair: <prefix>.key (PKCS#8 PEM, mode 0600) and <prefix>.pub (the raw 32-byte public key in base64, what authSignedProcess() takes). Default prefix: ogurpchik.',
  sign: 'usage: ogurpchik sign <file> --key <prefix.key>\n  Signs <file> (e.g. a copy of the node binary your plugin host runs) and writes the 64-byte detached signature to <file>.sig.',
  verify: 'usage: ogurpchik verify <file> <pubkey>\n  Checks <file>.sig against <pubkey> (a .pub file, or the base64 text). Exits 0 when it matches, 1 when not.',
  bench: 'usage: ogurpchik bench [--quick]\n  Runs dist/bench/run.js of this checkout: ours beside raw sockets, comlink and piscina, printed as a table.',
};

function fail(message: string, code = 2): never {
  process.stderr.write(`ogurpchik: ${message}\n`);
  process.exit(code);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    const topic = rest[0];
    process.stdout.write(`${topic && kCommandHelp[topic] ? kCommandHelp[topic] : kUsage}\n`);
    return;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${kCommandHelp[command] ?? kUsage}\n`);
    return;
  }
  switch (command) {
    case 'ls': {
      const { values } = parseArgs({ args: rest, options: { dir: { type: 'string' }, etcd: { type: 'string' } } });
      const backend = backendFrom(values);
      const entries = await backend.list().finally(() => backend.close?.());
      if (entries.length === 0) {
        process.stdout.write('no services published\n');
        return;
      }
      const rows = entries.map((e) => [e.instance === undefined ? e.name : `${e.name}@${e.instance}`, e.alive ? 'alive' : 'dead', `${e.record.transport_kind}/${e.record.codec_kind}`, Object.values(e.record.map).join(' '), String(e.record.owner?.pid ?? '')]);
      const header = ['NAME', 'OWNER', 'KIND', 'ADDRESS', 'PID'];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
      for (const r of [header, ...rows]) process.stdout.write(r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd() + '\n');
      return;
    }
    case 'call': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { dir: { type: 'string' }, etcd: { type: 'string' }, timeout: { type: 'string', default: '5000' }, ca: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' } } });
      const [service, body] = positionals;
      const tls = resolveTls({
        ...(values.ca !== undefined ? { caFile: values.ca } : {}),
        ...(values.cert !== undefined ? { certFile: values.cert } : {}),
        ...(values.key !== undefined ? { keyFile: values.key } : {}),
      });
      if (service === undefined || body === undefined) fail(kCommandHelp.call);
      let request: unknown;
      try {
        request = JSON.parse(body);
      } catch (err) {
        fail(`<json> is not JSON: ${(err as Error).message}`);
      }
      const timeoutMs = values.timeout === 'Infinity' ? Infinity : Number(values.timeout);
      if (timeoutMs !== Infinity && !isTimerMs(timeoutMs)) fail(`--timeout takes a number of ms from 0 to 2147483647 (or Infinity), got ${JSON.stringify(values.timeout)}`);
      const backend = backendFrom(values);
      const record = await backend.waitFor(service, { timeoutMs }).finally(() => backend.close?.());
      const codec = record.codec_kind === 'json' ? json() : msgpack();
      const transport = transportFromRecord(service, record, { transport: record.transport_kind, codec, tls });
      const node = await new Node().connect(transport, { codec }).start();
      try {
        const response = await node.client.call(request, { timeoutMs });
        process.stdout.write(JSON.stringify(response, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
      } finally {
        await node.close();
      }
      return;
    }
    case 'keygen': {
      const { values } = parseArgs({ args: rest, options: { out: { type: 'string', default: 'ogurpchik' } } });
      const { publicKey, privateKey } = generateKeyPairSync('ed25519');
      const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
      fs.writeFileSync(`${values.out}.key`, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
      fs.writeFileSync(`${values.out}.pub`, raw.toString('base64') + '\n', { flag: 'wx' });
      process.stdout.write(`wrote ${values.out}.key (private, keep it secret) and ${values.out}.pub (${raw.toString('base64')})\n`);
      return;
    }
    case 'sign': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { key: { type: 'string' } } });
      const [file] = positionals;
      if (file === undefined || values.key === undefined) fail(kCommandHelp.sign);
      const key = createPrivateKey(fs.readFileSync(values.key));
      const signature = sign(null, fs.readFileSync(file), key);
      fs.writeFileSync(`${file}.sig`, signature);
      process.stdout.write(`wrote ${file}.sig\n`);
      return;
    }
    case 'verify': {
      const [file, pub] = rest;
      if (file === undefined || pub === undefined) fail(kCommandHelp.verify);
      const publicKey = parsePublicKey(fs.existsSync(pub) ? fs.readFileSync(pub, 'utf8') : pub);
      const signature = parseSignature(fs.readFileSync(`${file}.sig`));
      if (signature !== undefined && verifyEd25519(signature, fs.readFileSync(file), publicKey)) {
        process.stdout.write(`ok: ${file} is signed by that key\n`);
        return;
      }
      process.stdout.write(`bad signature: ${file}.sig does not match ${file} and that key\n`);
      process.exit(1);
    }
    case 'bench': {
      const script = new URL('../bench/run.js', import.meta.url);
      if (!fs.existsSync(script)) fail('the benchmark ships with a source checkout: clone the repository and run `npm run bench`');
      const r = spawnSync(process.execPath, [script.pathname, ...rest], { stdio: 'inherit' });
      process.exit(r.status ?? 1);
    }
    default:
      fail(`unknown command ${JSON.stringify(command)}\n${kUsage}`);
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const code = RpcError.is(err) ? err.code : 'ERROR';
  process.stderr.write(`ogurpchik: ${code}: ${(err as Error)?.message ?? err}\n`);
  process.exit(1);
});
