/** Helpers of the reconnect and several-endpoints tests: server processes to kill and restart, free ports, polling. */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import type { Address } from '../src/index.js';
import { killAll, sleep } from './helpers.js';

export interface InstanceServer {
  addresses: Address[];
  pid: number;
  /** Kills the process by pid (SIGKILL by default) and waits until it has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

const live = new Set<ChildProcess>();

/** Starts test/fixtures/instance-server.js (options as documented there) and waits, at most 10 s, until it listens. */
export async function startInstance(options: Record<string, unknown>): Promise<InstanceServer> {
  const script = new URL('./fixtures/instance-server.js', import.meta.url).pathname;
  const child = spawn(process.execPath, [script, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'inherit'] });
  live.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => (live.delete(child), resolve())));
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, signal);
    await exited;
  };
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('instance server did not start within 10 s')), 10_000);
      createInterface({ input: child.stdout! }).once('line', (l) => {
        clearTimeout(timer);
        resolve(l);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`instance server exited with ${code} before listening`));
      });
    });
    const { addresses, pid } = JSON.parse(line);
    return { addresses, pid, kill };
  } catch (err) {
    await kill();
    throw err;
  }
}

/** Kills every instance server still running (an after hook). */
export async function killInstances(): Promise<void> {
  await killAll(live);
}

/** A loopback TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

/** Polls `check` every 20 ms until it is true; fails after `timeoutMs` saying `what`. */
export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(20);
  }
}
