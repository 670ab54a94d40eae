/**
 * Separate network hosts on one machine, for tests that must cross a real network: each host is a
 * Linux network namespace with its own private address, and all of them hang off a bridge that
 * lives in a namespace of its own, so the machine's own network (the root namespace) is never
 * touched and no packet can leave the lab. Needs root and iproute2 (`ip`).
 *
 *   const lab = await NetnsLab.create(['etcd', 'server-a', 'client']);   // 10.77.0.1, .2, .3
 *   const etcd = await lab.startEtcd('etcd');                             // etcd.url
 *   const server = await lab.startNode('server-a', fixtureUrl, { ... });  // server.line: its first stdout line
 *   await server.kill();                                                  // by pid
 *   await lab.destroy();                                                  // kills what it started, deletes namespaces
 *
 * Namespaces are named `ogt-<pid>-<host>` (and `ogt-<pid>-sw` for the bridge). A lab deletes its
 * own on destroy() and, if the process exits first, from an exit hook; `create()` first removes any
 * `ogt-<pid>-*` namespaces whose process is gone (a crashed earlier run), with the processes still
 * running in them and that run's temp dir.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LineQueue } from '../lines.js';

export const kIp = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => fs.existsSync(p)) ?? 'ip';
const kPrefix = 'ogt-';
const kStartTimeoutMs = 15_000;

/** Why the lab cannot run here (not root, no `ip`, no namespaces), or undefined when it can. */
export function labUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'creating network namespaces needs root';
  const r = spawnSync(kIp, ['netns', 'list'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) return `iproute2 is missing or fails (${r.error?.message ?? r.stderr.trim()}): apt-get install iproute2`;
  return undefined;
}

function ip(args: string[]): string {
  const r = spawnSync(kIp, args, { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) throw new Error(`ip ${args.join(' ')} failed: ${r.error?.message ?? r.stderr.trim()}`);
  return r.stdout;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills every process inside namespace `ns` (SIGKILL, by pid) and deletes it; quiet if it is gone. */
function deleteNamespace(ns: string): void {
  const pids = spawnSync(kIp, ['netns', 'pids', ns], { encoding: 'utf8', timeout: 10_000 }).stdout ?? '';
  for (const pid of pids.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  spawnSync(kIp, ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
}

function namespaces(): string[] {
  return ip(['netns', 'list'])
    .split('\n')
    .map((line) => line.split(' ')[0])
    .filter((name) => name.startsWith(kPrefix));
}

const kDirPrefix = 'ogurpchik-netns-';

/** Removes lab namespaces (and lab temp dirs) left by processes that no longer run; returns the namespaces' names. */
export function removeStaleNamespaces(): string[] {
  const stale = (name: string, pattern: RegExp) => {
    const owner = Number(pattern.exec(name)?.[1]);
    return !(owner > 0 && alive(owner));
  };
  const gone = namespaces().filter((ns) => stale(ns, /^ogt-(\d+)-/));
  for (const ns of gone) deleteNamespace(ns);
  for (const entry of fs.readdirSync(os.tmpdir())) {
    if (entry.startsWith(kDirPrefix) && stale(entry, /^ogurpchik-netns-(\d+)-/)) fs.rmSync(path.join(os.tmpdir(), entry), { recursive: true, force: true });
  }
  return gone;
}

export interface LabHost {
  /** The name given to create(). */
  name: string;
  /** The network namespace. */
  ns: string;
  /** Its address on the lab network. */
  address: string;
}

/** A process the lab started inside a host. */
export interface LabProcess {
  readonly host: LabHost;
  readonly child: ChildProcess;
  readonly pid: number;
  /** Everything it wrote to stderr so far (for failure messages). */
  stderr(): string;
  /** Resolves with its next stdout line; rejects if it exits first or `timeoutMs` passes. */
  nextLine(timeoutMs?: number): Promise<string>;
  /** The stdout lines written so far and not yet taken by nextLine(); takes them. */
  takeLines(): string[];
  /** Resolves with its exit code (or signal) once it has exited. */
  exited(): Promise<number | string>;
  /** Kills it by pid (default SIGKILL) and waits until it is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface LabOptions {
  /** The lab network's first three octets (a /24 of 10.0.0.0/8 or 192.168.0.0/16); hosts get .1, .2, … Default `10.77.0`. */
  subnet?: string;
}

export class NetnsLab {
  readonly hosts: ReadonlyMap<string, LabHost>;
  /** A private temp dir for the lab's files (etcd's data), removed by destroy(). */
  readonly dir: string;
  readonly #namespaces: string[];
  readonly #processes = new Set<LabProcess>();
  readonly #onExit: () => void;
  #destroyed = false;

  private constructor(hosts: Map<string, LabHost>, namespaces: string[], dir: string) {
    this.hosts = hosts;
    this.#namespaces = namespaces;
    this.dir = dir;
    // If the test process ends without destroy() (a crash, process.exit), still leave nothing behind.
    this.#onExit = () => this.#destroySync();
    process.once('exit', this.#onExit);
  }

  /** Creates one namespace per host name, wired to a private bridge, each with its address and loopback up. */
  static async create(names: string[], options: LabOptions = {}): Promise<NetnsLab> {
    const reason = labUnavailable();
    if (reason) throw new Error(`network lab unavailable: ${reason}`);
    const subnet = options.subnet ?? '10.77.0';
    if (!/^(10\.\d{1,3}\.\d{1,3}|192\.168\.\d{1,3})$/.test(subnet)) throw new Error(`lab subnet must be private (10.x.y or 192.168.x), got ${subnet}`);
    if (names.length === 0 || names.length > 200 || new Set(names).size !== names.length || names.some((n) => !/^[a-z0-9-]{1,20}$/.test(n) || n === 'sw')) {
      throw new Error('lab hosts: 1-200 distinct names of a-z, 0-9 and -, not "sw"');
    }
    removeStaleNamespaces();
    const base = `${kPrefix}${process.pid}-`;
    const sw = `${base}sw`;
    const created: string[] = [];
    const hosts = new Map<string, LabHost>();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${kDirPrefix}${process.pid}-`));
    const lab = new NetnsLab(hosts, created, dir);
    try {
      ip(['netns', 'add', sw]);
      created.push(sw);
      ip(['-n', sw, 'link', 'add', 'br0', 'type', 'bridge']);
      ip(['-n', sw, 'link', 'set', 'br0', 'up']);
      names.forEach((name, i) => {
        const ns = `${base}${name}`;
        ip(['netns', 'add', ns]);
        created.push(ns);
        const port = `v${i + 1}`;
        // Both ends are created inside namespaces: no interface ever appears in the root namespace.
        ip(['link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', sw]);
        ip(['-n', sw, 'link', 'set', port, 'master', 'br0']);
        ip(['-n', sw, 'link', 'set', port, 'up']);
        const address = `${subnet}.${i + 1}`;
        ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
        ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
        ip(['-n', ns, 'link', 'set', 'lo', 'up']);
        hosts.set(name, { name, ns, address });
      });
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  host(name: string): LabHost {
    const h = this.hosts.get(name);
    if (h === undefined) throw new Error(`no lab host ${name}`);
    return h;
  }

  /** Runs `command args` inside host `name` (through `ip netns exec`, which execs it: the pid is the command's). */
  spawn(name: string, command: string, args: string[]): LabProcess {
    if (this.#destroyed) throw new Error('the lab is destroyed');
    const host = this.host(name);
    const child = spawn(kIp, ['netns', 'exec', host.ns, command, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (c) => (stderr = (stderr + c).slice(-4000)));
    // 'close', not 'exit': by then every line it wrote has been read.
    const exit = new Promise<number | string>((resolve) => child.once('close', (code, signal) => resolve(code ?? signal ?? -1)));
    const lines = new LineQueue(child.stdout!, exit);
    const gone = () => child.exitCode !== null || child.signalCode !== null;
    const proc: LabProcess = {
      host,
      child,
      pid: child.pid!,
      stderr: () => stderr,
      exited: () => exit,
      takeLines: () => lines.takeAll(),
      nextLine: (timeoutMs = kStartTimeoutMs) =>
        lines.next(
          timeoutMs,
          () => new Error(`${command} in ${name}: no output within ${timeoutMs} ms; stderr: ${stderr.slice(-500)}`),
          (code) => new Error(`${command} in ${name} exited (${code}) before writing a line; stderr: ${stderr.slice(-500)}`),
        ),
      kill: async (signal: NodeJS.Signals = 'SIGKILL') => {
        if (!gone()) {
          try {
            process.kill(child.pid!, signal);
          } catch {
            // exited meanwhile
          }
        }
        await exit;
        this.#processes.delete(proc);
      },
    };
    this.#processes.add(proc);
    exit.then(() => this.#processes.delete(proc));
    return proc;
  }

  /**
   * Starts a Node script (`node <script> <JSON arg>`) inside host `name` and waits for its first
   * stdout line, which the script writes once it is ready (e.g. `{"address":…}`).
   */
  async startNode(name: string, script: URL, arg: unknown): Promise<LabProcess & { line: string }> {
    const proc = this.spawn(name, process.execPath, [script.pathname, JSON.stringify(arg)]);
    try {
      return Object.assign(proc, { line: await proc.nextLine() });
    } catch (err) {
      await proc.kill();
      throw err;
    }
  }

  /** Runs a Node script in host `name` to its end; resolves with its stdout lines (rejects on a non-zero exit or after `timeoutMs`). */
  async runNode(name: string, script: URL, arg: unknown, timeoutMs = 30_000): Promise<string[]> {
    const proc = this.spawn(name, process.execPath, [script.pathname, JSON.stringify(arg)]);
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      proc.exited(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${script.pathname} in ${name} did not finish within ${timeoutMs} ms`)), timeoutMs))),
    ]).finally(async () => {
      clearTimeout(timer);
      await proc.kill();
    });
    if (code !== 0) throw new Error(`${script.pathname} in ${name} exited with ${code}: ${proc.stderr().slice(-800)}`);
    return proc.takeLines();
  }

  /** Starts etcd (`/usr/bin/etcd` or `etcd` on PATH) in host `name`, bound to that host's address; resolves once it accepts clients. */
  async startEtcd(name: string, binary = fs.existsSync('/usr/bin/etcd') ? '/usr/bin/etcd' : 'etcd'): Promise<LabProcess & { url: string }> {
    const { address } = this.host(name);
    const url = `http://${address}:2379`;
    const peer = `http://${address}:2380`;
    const proc = this.spawn(name, binary, [
      '--name', name,
      '--data-dir', path.join(this.dir, `etcd-${name}`),
      '--listen-client-urls', url,
      '--advertise-client-urls', url,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--initial-cluster', `${name}=${peer}`,
      '--log-level', 'error',
    ]);
    try {
      await this.waitForPort(name, address, 2379);
    } catch (err) {
      await proc.kill();
      throw new Error(`etcd did not start in ${name}: ${(err as Error).message}; etcd said: ${proc.stderr().slice(-500)}`);
    }
    return Object.assign(proc, { url });
  }

  /** Resolves once a TCP connection from inside host `from` to `address:port` succeeds (within `timeoutMs`). */
  async waitForPort(from: string, address: string, port: number, timeoutMs = kStartTimeoutMs): Promise<void> {
    const probe = `
      const net = require('node:net');
      const deadline = Date.now() + ${timeoutMs};
      const attempt = () => {
        const s = net.connect(${port}, ${JSON.stringify(address)});
        s.once('connect', () => { s.destroy(); process.exit(0); });
        s.once('error', () => (Date.now() > deadline ? process.exit(1) : setTimeout(attempt, 100)));
      };
      attempt();`;
    const proc = this.spawn(from, process.execPath, ['-e', probe]);
    const code = await proc.exited();
    if (code !== 0) throw new Error(`${address}:${port} did not accept a connection from ${from} within ${timeoutMs} ms`);
  }

  /** Kills every process it started (by pid), deletes its namespaces and its temp dir. Idempotent. */
  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    await Promise.all([...this.#processes].map((p) => p.kill()));
    this.#destroySync();
  }

  #destroySync(): void {
    this.#destroyed = true;
    process.off('exit', this.#onExit);
    for (const p of this.#processes) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    this.#processes.clear();
    for (const ns of this.#namespaces.splice(0).reverse()) deleteNamespace(ns);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
