#!/usr/bin/env node
/**
 * The `ogurpchik` command: list published services, call one (like grpcurl), run the benchmark.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { json, msgpack } from './codec/index.js';
import { FileDiscovery } from './discovery/files.js';
import { transportFromRecord } from './discovery/topology.js';
import { RpcError } from './errors.js';
import { Node } from './main/node.js';

const kUsage = `usage: ogurpchik <command> [options]

commands:
  ls [--dir <dir>]                       list published services and whether their owners live
  call <service> <json> [--timeout <ms>] [--dir <dir>]
                                         call a published service once and print the response as JSON
  bench [--quick]                        run the transport benchmark (from a source checkout)
  help [<command>]                       this text

Discovery records are read from $XDG_RUNTIME_DIR/ogurpchik (else <tmp>/ogurpchik-<uid>) unless --dir is given.`;

const kCommandHelp: Record<string, string> = {
  ls: 'usage: ogurpchik ls [--dir <dir>]\n  Lists every published service: name, liveness of its owner, transport/codec and addresses.',
  call: 'usage: ogurpchik call <service> <json> [--timeout <ms>] [--dir <dir>]\n  Waits up to --timeout (default 5000) for <service>, sends <json> as one request with the codec the service publishes, prints the response as JSON. Exits 1 with the error code on failure.',
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
      const { values } = parseArgs({ args: rest, options: { dir: { type: 'string' } } });
      const entries = await new FileDiscovery({ dir: values.dir }).list();
      if (entries.length === 0) {
        process.stdout.write('no services published\n');
        return;
      }
      const rows = entries.map((e) => [e.name, e.alive ? 'alive' : 'dead', `${e.record.transport_kind}/${e.record.codec_kind}`, Object.values(e.record.map).join(' '), String(e.record.owner?.pid ?? '')]);
      const header = ['NAME', 'OWNER', 'KIND', 'ADDRESS', 'PID'];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
      for (const r of [header, ...rows]) process.stdout.write(r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd() + '\n');
      return;
    }
    case 'call': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { dir: { type: 'string' }, timeout: { type: 'string', default: '5000' } } });
      const [service, body] = positionals;
      if (service === undefined || body === undefined) fail(kCommandHelp.call);
      let request: unknown;
      try {
        request = JSON.parse(body);
      } catch (err) {
        fail(`<json> is not JSON: ${(err as Error).message}`);
      }
      const timeoutMs = Number(values.timeout);
      const record = await new FileDiscovery({ dir: values.dir }).waitFor(service, { timeoutMs });
      const codec = record.codec_kind === 'json' ? json() : msgpack();
      const transport = transportFromRecord(service, record, { transport: record.transport_kind, codec });
      const node = await new Node().connect(transport, { codec }).start();
      try {
        const response = await node.client.call(request, { timeoutMs });
        process.stdout.write(JSON.stringify(response, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
      } finally {
        await node.close();
      }
      return;
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
