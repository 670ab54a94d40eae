/** The registry discovery backend, driven through a fake reg.exe fed with recorded outputs. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import os from 'node:os';
import { escapeForWslInterop, parseRegQuery, RegistryDiscovery, registryHostId, type RegRunResult } from '../src/discovery/registry.js';
import { Node, tcp, type RunningNode } from '../src/index.js';
import { processStartTime } from '../src/proc.js';
import { rejectionOf } from './helpers.js';

const KEY = 'HKCU\\Software\\Ogurpchik\\Services';
const FULL = 'HKEY_CURRENT_USER\\Software\\Ogurpchik\\Services';
const HOSTS = 'HKCU\\Software\\Ogurpchik\\Hosts';
const crlf = (...lines: string[]) => lines.join('\r\n');

/** reg.exe's answer to a missing key or value (exit code 1, message on stderr). */
const kMissing: RegRunResult = { stdout: '', stderr: 'ERROR: The system was unable to find the specified registry key or value.\r\n', code: 1 };
const kOk: RegRunResult = { stdout: 'The operation completed successfully.\r\n\r\n', stderr: '', code: 0 };

/** Recorded `reg query <key> /v Topology` output: header, one value line, blank lines, CRLF. */
function queryOutput(name: string, json: string): RegRunResult {
  return { stdout: crlf('', `${FULL}\\${name}`, `    Topology    REG_SZ    ${json}`, '', ''), stderr: '', code: 0 };
}

const foreignHost = 'OTHER-PC';
const tcpJson = `{"transport_kind":"tcp","codec_kind":"msgpack","map":{"0":"127.0.0.1:1337"},"owner":{"pid":4242,"host":"${foreignHost}"}}`;
// A unix-socket address with spaces, quotes and backslashes, as JSON stores it.
const spacedAddress = 'C:\\Users\\John Doe\\AppData\\Local\\Temp\\ogur "dev".sock';
const spacedJson = JSON.stringify({ transport_kind: 'unix', codec_kind: 'json', map: { '0': spacedAddress }, owner: { pid: 77, host: foreignHost } });

/** Recorded `reg query HKCU\Software\Ogurpchik\Services /s`: several services, one malformed, one without a record, one nested key. */
function listOutput(deadLocalJson: string): RegRunResult {
  return {
    stdout: crlf(
      '',
      `${FULL}\\alpha`,
      `    Topology    REG_SZ    ${tcpJson}`,
      '',
      `${FULL}\\beta`,
      `    (Default)    REG_SZ    (value not set)`,
      `    Topology    REG_SZ    ${spacedJson}`,
      '',
      `${FULL}\\beta\\extra`,
      `    Topology    REG_SZ    ${tcpJson}`,
      '',
      `${FULL}\\broken`,
      '    Topology    REG_SZ    {"transport_kind":"carrier-pigeon","map":{}}',
      '',
      `${FULL}\\dead`,
      `    Topology    REG_SZ    ${deadLocalJson}`,
      '',
      `${FULL}\\empty`,
      '',
      '',
    ),
    stderr: '',
    code: 0,
  };
}

/** A fake reg.exe: records every argv, answers through `respond`. */
function fakeReg(respond: (args: string[], call: number) => RegRunResult) {
  const calls: string[][] = [];
  const run = async (args: string[]) => {
    calls.push([...args]);
    return respond(args, calls.length - 1);
  };
  return { calls, run };
}

const topology = { transport_kind: 'tcp' as const, codec_kind: 'msgpack' as const, map: { '0': '127.0.0.1:41237' } };
const kDeadPid = 0x3fffff00; // above pid_max: no such process here

describe('registry discovery backend (fake reg.exe)', function () {
  this.timeout(20_000);

  it('parses reg query output: headers, value lines, data with spaces and quotes, CRLF', () => {
    const keys = parseRegQuery(queryOutput('svc', spacedJson).stdout);
    assert.equal(keys.length, 1);
    assert.equal(keys[0]!.path, `${FULL}\\svc`);
    assert.deepEqual(keys[0]!.values, [{ name: 'Topology', type: 'REG_SZ', data: spacedJson }]);
    assert.equal(JSON.parse(keys[0]!.values[0]!.data).map['0'], spacedAddress);
  });

  it('publish runs `reg add <key> /v Topology /t REG_SZ /d <json> /f` with the raw JSON as one argument', async () => {
    const reg = fakeReg((args) => (args[0] === 'query' ? kMissing : kOk));
    const d = new RegistryDiscovery({ run: reg.run });
    await d.publish('svc', { transport_kind: 'unix', codec_kind: 'json', map: { '0': spacedAddress } });
    assert.deepEqual(reg.calls[0], ['query', `${KEY}\\svc`]);
    const add = reg.calls[1]!;
    assert.deepEqual(add.slice(0, 7), ['add', `${KEY}\\svc`, '/v', 'Topology', '/t', 'REG_SZ', '/d']);
    assert.equal(add[8], '/f');
    assert.equal(add.length, 9);
    const written = JSON.parse(add[7]!);
    assert.deepEqual(written, { transport_kind: 'unix', codec_kind: 'json', map: { '0': spacedAddress }, owner: { ...written.owner, pid: process.pid, host: registryHostId() } });
    assert.ok(add[7]!.includes('\\"dev\\"'), 'quotes inside JSON strings stay JSON-escaped, nothing more');
    assert.ok(registryHostId().startsWith(os.hostname()));
  });

  it('writes ASCII-only JSON so the console code page cannot mangle it', async () => {
    const reg = fakeReg((args) => (args[0] === 'query' ? kMissing : kOk));
    await new RegistryDiscovery({ run: reg.run }).publish('svc', { transport_kind: 'unix', codec_kind: 'msgpack', map: { '0': '/tmp/сокет.sock' } });
    const json = reg.calls[1]![7]!;
    assert.match(json, /^[\x20-\x7e]+$/);
    assert.equal(JSON.parse(json).map['0'], '/tmp/сокет.sock');
  });

  it('escapes embedded quotes for WSL interop the MSVCRT way (off Windows the default runner does this)', () => {
    assert.equal(escapeForWslInterop('{"a":"b"}'), '{\\"a\\":\\"b\\"}');
    assert.equal(escapeForWslInterop('x\\"y'), 'x\\\\\\"y', 'backslashes before a quote are doubled, then the quote escaped');
    assert.equal(escapeForWslInterop('a b\\'), 'a b\\\\', 'a trailing backslash before the closing quote WSL adds is doubled');
    assert.equal(escapeForWslInterop('HKCU\\Software\\Ogurpchik'), 'HKCU\\Software\\Ogurpchik', 'other backslashes are literal');
  });

  it('publish refuses a name held by a live foreign owner (BUSY) and replaces a dead local one', async () => {
    const busy = fakeReg(() => queryOutput('svc', tcpJson));
    const err = await rejectionOf(new RegistryDiscovery({ run: busy.run }).publish('svc', topology));
    assert.equal(err.code, 'BUSY');
    assert.equal(busy.calls.length, 1, 'nothing was written');

    const deadJson = JSON.stringify({ ...topology, owner: { pid: kDeadPid, host: registryHostId() } });
    const stale = fakeReg((args) => (args[0] === 'query' ? queryOutput('svc', deadJson) : kOk));
    await new RegistryDiscovery({ run: stale.run }).publish('svc', topology);
    assert.equal(stale.calls[1]![0], 'add');
  });

  it('a failing reg add surfaces as UNAVAILABLE with reg.exe’s message', async () => {
    const reg = fakeReg((args) => (args[0] === 'query' ? kMissing : { stdout: '', stderr: 'ERROR: Access is denied.\r\n', code: 1 }));
    const err = await rejectionOf(new RegistryDiscovery({ run: reg.run }).publish('svc', topology));
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /Access is denied/);
  });

  it('lookup runs `reg query <key>` and parses the record; a missing key is undefined', async () => {
    const reg = fakeReg((args) => (args[1]!.endsWith('\\svc') ? queryOutput('svc', spacedJson) : kMissing));
    const d = new RegistryDiscovery({ run: reg.run });
    const record = await d.lookup('svc');
    assert.deepEqual(reg.calls[0], ['query', `${KEY}\\svc`]);
    assert.deepEqual(record, { transport_kind: 'unix', codec_kind: 'json', map: { '0': spacedAddress }, owner: { pid: 77, host: foreignHost } });
    assert.equal(await d.lookup('nope'), undefined);
    assert.deepEqual(reg.calls[1], ['query', `${KEY}\\nope`]);
  });

  it('treats a malformed record as absent (bad JSON, wrong shape, wrong type, truncated line)', async () => {
    const bad: RegRunResult[] = [
      queryOutput('svc', '{"transport_kind":"tcp","codec_kind":"msgpack","map":{"0":'),
      queryOutput('svc', '{"transport_kind":"tcp","codec_kind":"msgpack","map":{}}'),
      queryOutput('svc', 'not json at all'),
      { stdout: crlf('', `${FULL}\\svc`, '    Topology    REG_DWORD    0x1', ''), stderr: '', code: 0 },
      { stdout: crlf('', `${FULL}\\svc`, '    Topology    REG_SZ', ''), stderr: '', code: 0 },
    ];
    for (const answer of bad) {
      const d = new RegistryDiscovery({ run: fakeReg(() => answer).run });
      assert.equal(await d.lookup('svc'), undefined, answer.stdout);
    }
  });

  it('a record whose owner is on this host and gone is absent; a foreign host’s is trusted', async () => {
    const deadJson = JSON.stringify({ ...topology, owner: { pid: kDeadPid, host: registryHostId() } });
    const liveJson = JSON.stringify({ ...topology, owner: { pid: process.pid, host: registryHostId() } });
    const sameNameOtherNs = JSON.stringify({ ...topology, owner: { pid: kDeadPid, host: os.hostname() === registryHostId() ? 'x' : os.hostname() } });
    assert.equal(await new RegistryDiscovery({ run: fakeReg(() => queryOutput('s', deadJson)).run }).lookup('s'), undefined);
    assert.ok(await new RegistryDiscovery({ run: fakeReg(() => queryOutput('s', liveJson)).run }).lookup('s'));
    assert.ok(await new RegistryDiscovery({ run: fakeReg(() => queryOutput('s', sameNameOtherNs)).run }).lookup('s'), 'the Windows side of a WSL machine is not judged by Linux pids');
  });

  it('list runs `reg query <Services> /s` and returns every well-formed service, live or not', async () => {
    const deadJson = JSON.stringify({ ...topology, owner: { pid: kDeadPid, host: registryHostId() } });
    const reg = fakeReg(() => listOutput(deadJson));
    const entries = await new RegistryDiscovery({ run: reg.run }).list();
    assert.deepEqual(reg.calls, [['query', KEY, '/s']]);
    assert.deepEqual(
      entries.map((e) => [e.name, e.alive, e.record.map['0']]),
      [
        ['alpha', true, '127.0.0.1:1337'],
        ['beta', true, spacedAddress],
        ['dead', false, '127.0.0.1:41237'],
      ],
    );
    assert.deepEqual(await new RegistryDiscovery({ run: fakeReg(() => kMissing).run }).list(), [], 'no Services key yet: nothing');
  });

  it('unpublish deletes with `reg delete <key> /v Topology /f` only a record this process owns', async () => {
    const ours = JSON.stringify({ ...topology, owner: { pid: process.pid, host: registryHostId() } });
    const mine = fakeReg((args) => (args[0] === 'query' ? queryOutput('svc', ours) : kOk));
    await new RegistryDiscovery({ run: mine.run }).unpublish('svc');
    assert.deepEqual(mine.calls, [
      ['query', `${KEY}\\svc`, '/v', 'Topology'],
      ['delete', `${KEY}\\svc`, '/v', 'Topology', '/f'],
    ]);

    const theirs = fakeReg(() => queryOutput('svc', tcpJson));
    await new RegistryDiscovery({ run: theirs.run }).unpublish('svc');
    const samePidOtherHost = fakeReg(() => queryOutput('svc', JSON.stringify({ ...topology, owner: { pid: process.pid, host: foreignHost } })));
    await new RegistryDiscovery({ run: samePidOtherHost.run }).unpublish('svc');
    const missing = fakeReg(() => kMissing);
    await new RegistryDiscovery({ run: missing.run }).unpublish('svc');
    for (const r of [theirs, samePidOtherHost, missing]) assert.ok(r.calls.every((c) => c[0] === 'query'), 'nothing deleted');
  });

  it('a record naming a live pid of this host with another start time (the pid since reused) counts as a dead owner', async () => {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    try {
      const pid = child.pid!;
      const started = processStartTime(pid);
      assert.ok(started !== undefined, 'the child runs');
      const json = (start_time: number) => JSON.stringify({ ...topology, owner: { pid, start_time, host: registryHostId() } });
      const same = fakeReg((args) => (args[0] === 'query' ? queryOutput('svc', json(started)) : kOk));
      assert.equal((await new RegistryDiscovery({ run: same.run }).lookupAll('svc')).length, 1, 'the same pid and start time: alive');
      assert.equal((await rejectionOf(new RegistryDiscovery({ run: same.run }).publish('svc', topology))).code, 'BUSY');
      const reused = fakeReg((args) => (args[0] === 'query' ? queryOutput('svc', json(started + 1)) : kOk));
      const d = new RegistryDiscovery({ run: reused.run });
      assert.deepEqual(await d.lookupAll('svc'), [], 'the same pid, another start time: dead');
      await d.publish('svc', topology);
      assert.deepEqual(reused.calls.filter((c) => c[0] === 'add').length, 1, 'the dead owner\'s record was written over');
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('another node of this process: its record is refused (BUSY) and never deleted; the node\'s own is', async () => {
    const nodeA = JSON.stringify({ ...topology, owner: { pid: process.pid, host: registryHostId(), node: 'node-a' } });
    const reg = fakeReg((args) => (args[0] === 'query' ? queryOutput('svc', nodeA) : kOk));
    const d = new RegistryDiscovery({ run: reg.run });
    const err = await rejectionOf(d.publish('svc', topology, { owner: 'node-b' }));
    assert.equal(err.code, 'BUSY');
    assert.match(err.message, /another node of this process/);
    await d.unpublish('svc', { owner: 'node-b' });
    assert.ok(reg.calls.every((c) => c[0] === 'query'), 'nothing written or deleted');
    // Node A itself may publish again and unpublish.
    await d.publish('svc', topology, { owner: 'node-a' });
    await d.unpublish('svc', { owner: 'node-a' });
    assert.deepEqual(reg.calls.filter((c) => c[0] !== 'query').map((c) => c[0]), ['add', 'delete']);
    assert.equal(JSON.parse(reg.calls.find((c) => c[0] === 'add')![7]!).owner.node, 'node-a');
  });

  it('waitFor polls until the record appears', async () => {
    const reg = fakeReg((_args, call) => (call < 3 ? kMissing : queryOutput('svc', tcpJson)));
    const started = Date.now();
    const record = await new RegistryDiscovery({ run: reg.run, pollMs: 30 }).waitFor('svc', { timeoutMs: 5000 });
    assert.equal(record.map['0'], '127.0.0.1:1337');
    assert.equal(reg.calls.length, 4);
    assert.ok(reg.calls.every((c) => c.join(' ') === `query ${KEY}\\svc`));
    assert.ok(Date.now() - started >= 80, 'it waited between queries');
  });

  it('waitFor rejects UNAVAILABLE on timeout (a malformed record never counts) and CANCELLED on abort', async () => {
    const malformed = fakeReg(() => queryOutput('svc', '{"transport_kind":"tcp"'));
    const err = await rejectionOf(new RegistryDiscovery({ run: malformed.run, pollMs: 20 }).waitFor('svc', { timeoutMs: 150 }));
    assert.equal(err.code, 'UNAVAILABLE');
    assert.ok(malformed.calls.length >= 3, 'it kept polling until the deadline');
    const callsAtTimeout = malformed.calls.length;
    await new Promise((r) => setTimeout(r, 80));
    assert.equal(malformed.calls.length, callsAtTimeout, 'polling stops after the timeout');

    const ac = new AbortController();
    const waiting = new RegistryDiscovery({ run: fakeReg(() => kMissing).run, pollMs: 20 }).waitFor('svc', { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    assert.equal((await rejectionOf(waiting)).code, 'CANCELLED');
    ac.abort();
    assert.equal((await rejectionOf(new RegistryDiscovery({ run: fakeReg(() => kMissing).run }).waitFor('svc', { signal: ac.signal }))).code, 'CANCELLED');
  });

  it('waitFor rejects when reg.exe cannot be run at all', async () => {
    const d = new RegistryDiscovery({ exe: '/nonexistent/reg.exe', pollMs: 20 });
    assert.equal((await rejectionOf(d.waitFor('svc', { timeoutMs: 5000 }))).code, 'UNAVAILABLE');
  });

  it('registerHost writes the CID as REG_DWORD; lookupHost reads the 0x.. form back', async () => {
    const reg = fakeReg((args) => {
      if (args[0] === 'add') return kOk;
      if (args[1] === `${HOSTS}\\Ubuntu 24.04`) {
        return { stdout: crlf('', 'HKEY_CURRENT_USER\\Software\\Ogurpchik\\Hosts\\Ubuntu 24.04', '    Cid    REG_DWORD    0x1a2b', '', ''), stderr: '', code: 0 };
      }
      return kMissing;
    });
    const d = new RegistryDiscovery({ run: reg.run });
    await d.registerHost('Ubuntu 24.04', 6699);
    assert.deepEqual(reg.calls[0], ['add', `${HOSTS}\\Ubuntu 24.04`, '/v', 'Cid', '/t', 'REG_DWORD', '/d', '6699', '/f']);
    assert.equal(await d.lookupHost('Ubuntu 24.04'), 0x1a2b);
    assert.deepEqual(reg.calls[1], ['query', `${HOSTS}\\Ubuntu 24.04`, '/v', 'Cid']);
    assert.equal(await d.lookupHost('other-vm'), undefined);
    assert.equal((await rejectionOf(d.registerHost('vm', -1))).code, 'INVALID_ARGUMENT');
    // VMADDR_CID_ANY is nobody's address: refused when written, ignored when found.
    assert.equal((await rejectionOf(d.registerHost('vm', 0xffffffff))).code, 'INVALID_ARGUMENT');
    assert.equal(reg.calls.length, 3, 'nothing was run for the refused CIDs');
    assert.equal((await rejectionOf(d.lookupHost('a\\b'))).code, 'INVALID_ARGUMENT');
  });

  it('lookupHost ignores a host entry holding VMADDR_CID_ANY or a value that is not a CID', async () => {
    for (const data of ['0xffffffff', '0x1ffffffff', 'banana']) {
      const reg = fakeReg((args) =>
        args[0] === 'query'
          ? { stdout: crlf('', 'HKEY_CURRENT_USER\\Software\\Ogurpchik\\Hosts\\vm', `    Cid    REG_DWORD    ${data}`, '', ''), stderr: '', code: 0 }
          : kOk,
      );
      assert.equal(await new RegistryDiscovery({ run: reg.run }).lookupHost('vm'), undefined, data);
    }
  });

  it('rejects bad service names before running anything', async () => {
    const reg = fakeReg(() => kOk);
    const d = new RegistryDiscovery({ run: reg.run });
    assert.equal((await rejectionOf(d.publish('..\\evil', topology))).code, 'INVALID_ARGUMENT');
    assert.equal((await rejectionOf(d.lookup('a b'))).code, 'INVALID_ARGUMENT');
    assert.throws(() => d.waitFor('x\\y'), (e: any) => e.code === 'INVALID_ARGUMENT');
    assert.equal(reg.calls.length, 0);
  });
});

/**
 * A fake reg.exe over an in-memory registry, for what recorded outputs cannot show (several
 * writers, state across calls). It answers as reg.exe does: `query <key>` prints the key's values
 * and then its subkeys' paths, `query <key> /v <name>` one value, `query <key> /s` the subtree;
 * `add <key> /v <name> /t <type> /d <data> /f` and `delete <key> [/v <name>] /f`; a missing key or
 * value is exit code 1. Key paths and value names are case-insensitive, as in the registry.
 */
function emulatedReg() {
  const keys = new Map<string, { path: string; values: Map<string, { name: string; type: string; data: string }> }>();
  const full = (key: string) => key.replace(/^HKCU\\/i, 'HKEY_CURRENT_USER\\');
  const block = (k: { path: string; values: Map<string, { name: string; type: string; data: string }> }, only?: string) => [
    k.path,
    ...[...k.values.values()].filter((v) => only === undefined || v.name.toLowerCase() === only.toLowerCase()).map((v) => `    ${v.name}    ${v.type}    ${v.data}`),
    '',
  ];
  const calls: string[][] = [];
  const run = async (args: string[]): Promise<RegRunResult> => {
    calls.push([...args]);
    const [op, rawKey, ...rest] = args;
    const path = full(rawKey!);
    const id = path.toLowerCase();
    const opt = (flag: string) => {
      const i = rest.indexOf(flag);
      return i < 0 ? undefined : rest[i + 1];
    };
    const key = keys.get(id);
    const below = [...keys.keys()].filter((k) => k.startsWith(`${id}\\`)).sort();
    if (op === 'query') {
      if (key === undefined && below.length === 0) return kMissing;
      const v = opt('/v');
      if (v !== undefined) return key?.values.has(v.toLowerCase()) ? { stdout: crlf('', ...block(key, v), ''), stderr: '', code: 0 } : kMissing;
      const own = key ? block(key) : [path, ''];
      if (rest.includes('/s')) return { stdout: crlf('', ...own, ...below.flatMap((k) => block(keys.get(k)!)), ''), stderr: '', code: 0 };
      const children = below.filter((k) => !k.slice(id.length + 1).includes('\\')).map((k) => keys.get(k)!.path);
      return { stdout: crlf('', ...own, ...children, ''), stderr: '', code: 0 };
    }
    if (op === 'add') {
      const k = key ?? { path, values: new Map() };
      keys.set(id, k);
      const name = opt('/v')!;
      k.values.set(name.toLowerCase(), { name, type: opt('/t')!, data: opt('/d')! });
      return kOk;
    }
    if (op === 'delete') {
      if (key === undefined) return kMissing;
      const v = opt('/v');
      if (v === undefined) {
        for (const k of [id, ...below]) keys.delete(k);
        return kOk;
      }
      return key.values.delete(v.toLowerCase()) ? kOk : kMissing;
    }
    return { stdout: '', stderr: `ERROR: Invalid syntax (${op}).\r\n`, code: 1 };
  };
  /** Writes a record as another process would. */
  const put = (name: string, value: string, record: object) => run(['add', `${KEY}\\${name}`, '/v', value, '/t', 'REG_SZ', '/d', JSON.stringify(record), '/f']);
  /** The record value names under a service's key. */
  const valuesOf = (name: string) => [...(keys.get(`${FULL}\\${name}`.toLowerCase())?.values.values() ?? [])].map((v) => v.name).sort();
  return { run, calls, put, valuesOf };
}

describe('registry discovery backend: several instances of a name (emulated registry)', function () {
  this.timeout(20_000);
  const foreign = (pid: number) => ({ ...topology, owner: { pid, host: foreignHost } });
  const dead = { ...topology, owner: { pid: kDeadPid, host: registryHostId() } };

  it('instances coexist as values Topology@<instance> of the name\'s key; readers see them all; each unpublishes only its own', async () => {
    const reg = emulatedReg();
    const d = new RegistryDiscovery({ run: reg.run });
    await d.publish('pool', { ...topology, map: { '0': '127.0.0.1:1' } }, { instance: 'b', owner: 'node-b' });
    await d.publish('pool', { ...topology, map: { '0': '127.0.0.1:2' } }, { instance: 'a', owner: 'node-a' });
    await reg.put('pool', 'Topology@c', { ...foreign(9), map: { '0': '10.0.0.3:3' } });
    assert.deepEqual(reg.valuesOf('pool'), ['Topology@a', 'Topology@b', 'Topology@c']);
    const all = await d.lookupAll('pool');
    assert.deepEqual(all.map((e) => [e.instance, e.record.map['0']]), [['a', '127.0.0.1:2'], ['b', '127.0.0.1:1'], ['c', '10.0.0.3:3']]);
    assert.equal((await d.lookup('pool'))?.map['0'], '127.0.0.1:2');
    assert.deepEqual((await d.list()).map((e) => [e.name, e.instance, e.alive]), [['pool', 'a', true], ['pool', 'b', true], ['pool', 'c', true]]);
    // Another node's instance, or another process's, is never removed; the node's own is, and only it.
    await d.unpublish('pool', { instance: 'a', owner: 'node-b' });
    await d.unpublish('pool', { instance: 'c' });
    assert.deepEqual(reg.valuesOf('pool'), ['Topology@a', 'Topology@b', 'Topology@c']);
    await d.unpublish('pool', { instance: 'a', owner: 'node-a' });
    assert.deepEqual(reg.valuesOf('pool'), ['Topology@b', 'Topology@c']);
    assert.deepEqual(reg.calls.filter((c) => c[0] === 'delete'), [['delete', `${KEY}\\pool`, '/v', 'Topology@a', '/f']]);
  });

  it('an exclusive name and instances of it exclude each other (BUSY); instance ids are checked', async () => {
    const reg = emulatedReg();
    const d = new RegistryDiscovery({ run: reg.run });
    await reg.put('solo', 'Topology', foreign(1));
    const err = await rejectionOf(d.publish('solo', topology, { instance: 'x' }));
    assert.equal(err.code, 'BUSY');
    assert.match(err.message, /exclusively by pid 1 on OTHER-PC/);
    await reg.put('many', 'Topology@one', foreign(2));
    const err2 = await rejectionOf(d.publish('many', topology));
    assert.equal(err2.code, 'BUSY');
    assert.match(err2.message, /as instance one/);
    // The same instance id, held by another live owner, is refused too.
    assert.equal((await rejectionOf(d.publish('many', topology, { instance: 'one' }))).code, 'BUSY');
    assert.deepEqual(reg.valuesOf('solo'), ['Topology']);
    assert.deepEqual(reg.valuesOf('many'), ['Topology@one']);
    for (const bad of ['a b', 'x\\y', '.hidden', 'a@b']) assert.equal((await rejectionOf(d.publish('many', topology, { instance: bad }))).code, 'INVALID_ARGUMENT', bad);
  });

  it('records whose owner on this host is gone count for nothing: a dead instance is removed by the next publisher, a dead exclusive one written over', async () => {
    const reg = emulatedReg();
    const d = new RegistryDiscovery({ run: reg.run });
    await reg.put('svc', 'Topology@gone', dead);
    await reg.put('svc', 'Topology', dead);
    assert.deepEqual(await d.lookupAll('svc'), []);
    await d.publish('svc', topology, { instance: 'live' });
    assert.deepEqual(reg.valuesOf('svc'), ['Topology', 'Topology@live']);
    await d.publish('svc', topology, { instance: 'live' }); // its own: published again in place
    assert.deepEqual((await d.lookupAll('svc')).map((e) => e.instance), ['live']);
    // A dead exclusive record is written over by the next exclusive publisher.
    await reg.put('other', 'Topology', dead);
    await d.publish('other', topology);
    assert.deepEqual((await d.lookupAll('other')).map((e) => e.record.owner?.pid), [process.pid]);
  });

  it('through the builder: two nodes publish one name shared, a client waiting for it spreads calls over both and drops the one that closes', async () => {
    const reg = emulatedReg();
    const discovery = new RegistryDiscovery({ run: reg.run, pollMs: 20 });
    const one = await new Node({ discovery }).serve(tcp('127.0.0.1:0'), { onRequest: () => 'one' }).publish('pool', { shared: true }).start();
    const two = await new Node({ discovery }).serve(tcp('127.0.0.1:0'), { onRequest: () => 'two' }).publish('pool', { shared: true, instance: 'second' }).start();
    let client: RunningNode<any, any> | undefined;
    try {
      assert.equal(reg.valuesOf('pool').length, 2);
      assert.ok(reg.valuesOf('pool').includes('Topology@second'));
      client = await new Node({ discovery }).waitFor('pool', { timeoutMs: 5000, reconnect: true }).start();
      const seen = new Set<unknown>();
      for (let i = 0; i < 10; i++) seen.add(await client.client.call(null));
      assert.deepEqual([...seen].sort(), ['one', 'two']);
      await two.close();
      assert.deepEqual(reg.valuesOf('pool').length, 1, 'closing a node removes its own record');
      const end = Date.now() + 5000;
      while (client.client.endpoints.length !== 1 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assert.equal(client.client.endpoints.length, 1, 'the closed instance was not dropped within 5 s');
      for (let i = 0; i < 5; i++) assert.equal(await client.client.call(null), 'one');
    } finally {
      await client?.close();
      await two.close();
      await one.close();
    }
  });
});
