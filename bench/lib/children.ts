/**
 * Server child processes and temp dirs for the bench, with the bookkeeping that guarantees none
 * outlives the bench: every child is stopped by pid and every temp dir removed, on success, on
 * failure and on SIGINT/SIGTERM.
 *
 * The child protocol: a server script prints one JSON line on stdout when it is ready — its
 * address (`{"kind":"tcp","host":…,"port":…}`, `{"kind":"unix","path":…}` or `{"kind":"shm","name":…}`), or
 * `{"error":"…"}` when it could not start; non-JSON lines before it are passed on to stderr.
 * It stops on SIGTERM, and when its parent goes away (the IPC channel of `fork` disconnects).
 */

import { fork, type ChildProcess } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort } from 'node:worker_threads';

export type ServerAddress =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string }
  | { kind: 'shm'; name: string };

/** A client socket connected to a tcp or unix server child; rejects with the connect error. */
export function connectSocket(address: ServerAddress): Promise<net.Socket> {
  if (address.kind === 'shm') return Promise.reject(new Error(`no socket to connect to at shm ${address.name}`));
  return new Promise((resolve, reject) => {
    const socket = address.kind === 'tcp' ? net.connect({ host: address.host, port: address.port }) : net.connect({ path: address.path });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

/** The child side: prints `line` as the child's JSON line, or posts it to the parent thread from a worker (whose process prints it). */
export function reportLine(line: object): void {
  if (isMainThread) process.stdout.write(`${JSON.stringify(line)}\n`);
  else parentPort!.postMessage(line);
}

/**
 * The child side: listens `server` on `--kind tcp` (127.0.0.1, a free port) or `--kind unix --path`,
 * and reports its address with `reportLine`, or an error line starting with `label` when the
 * arguments name neither or the listen fails; a child process then exits 2, a worker leaves that to
 * its parent.
 */
export function listenAndReport(server: net.Server, options: { kind?: string; path?: string; label: string }): void {
  const failed = (error: string): void => {
    reportLine({ error });
    if (isMainThread) process.exit(2);
  };
  server.once('error', (err) => failed(`${options.label} could not listen: ${err.message}`));
  if (options.kind === 'tcp') {
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { address, port } = server.address() as net.AddressInfo;
      reportLine({ kind: 'tcp', host: address, port });
    });
  } else if (options.kind === 'unix' && options.path !== undefined) {
    const path = options.path;
    server.listen({ path }, () => reportLine({ kind: 'unix', path }));
  } else {
    failed(`${options.label}: expected --kind tcp, or --kind unix --path <path>`);
  }
}

/** Why a server child did not come up. `reported` means the child said why (see `message`). */
export type ChildStartFailure = 'timeout' | 'exited' | 'reported' | 'bad-output';

export class ChildStartError extends Error {
  override readonly name = 'ChildStartError';
  constructor(
    message: string,
    readonly reason: ChildStartFailure,
  ) {
    super(message);
  }
}

export interface ServerChild {
  readonly pid: number;
  readonly address: ServerAddress;
  /** Stops the child by pid (SIGTERM, then SIGKILL after `kStopGraceMs`); safe to call twice. */
  stop(): Promise<void>;
}

const kReadyTimeoutMs = 10_000;
const kStopGraceMs = 3_000;

const liveChildren = new Set<ChildProcess>();
const tempDirs = new Set<string>();
/** Directories to sweep for entries whose names carry a token of ours (shm segments, control sockets). */
const sweeps = new Map<string, { dir: string; token: string }>();

export interface StartServerOptions {
  /** Shown in progress and error messages, e.g. "raw tcp server". */
  label: string;
  readyTimeoutMs?: number;
}

/** Forks `script` (a compiled .js file) with `args` and waits for its ready line. */
export function startServerChild(
  script: URL,
  args: readonly string[],
  options: StartServerOptions,
): Promise<ServerChild> {
  const readyTimeoutMs = options.readyTimeoutMs ?? kReadyTimeoutMs;
  // execArgv: [] so that the parent's flags (--inspect, --cpu-prof…) do not leak into servers.
  const child = fork(fileURLToPath(script), [...args], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    execArgv: [],
  });
  liveChildren.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  exited.then(() => liveChildren.delete(child));
  const stop = () => stopChild(child, exited);

  return new Promise<ServerChild>((resolve, reject) => {
    let buffered = '';
    let done = false;
    const fail = (message: string, reason: ChildStartFailure): void => {
      if (done) return;
      done = true;
      cleanup();
      // Stop the child before reporting, so that a caller that exits at once leaves nothing behind.
      stop().then(
        () => reject(new ChildStartError(`${options.label}: ${message}`, reason)),
        () => reject(new ChildStartError(`${options.label}: ${message}`, reason)),
      );
    };
    const onData = (chunk: Buffer): void => {
      buffered += chunk.toString('utf8');
      let newline: number;
      while (!done && (newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        onLine(line);
      }
    };
    const onLine = (line: string): void => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = undefined;
      }
      if (typeof parsed !== 'object' || parsed === null) {
        // Not the ready line: something the server logged. Show it rather than choke on it.
        process.stderr.write(`[${options.label}] ${line}\n`);
        return;
      }
      const record = parsed as Record<string, unknown>;
      if (typeof record.error === 'string') {
        fail(record.error, 'reported');
        return;
      }
      if (!isAddress(record)) {
        fail(`ready line is not an address: ${line.slice(0, 200)}`, 'bad-output');
        return;
      }
      done = true;
      cleanup();
      // Keep draining stdout so that a chatty child never blocks on a full pipe.
      child.stdout!.resume();
      resolve({ pid: child.pid!, address: record, stop });
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      fail(`exited before it was ready (code ${code}, signal ${signal})`, 'exited');
    const onError = (err: Error): void => fail(`could not be started: ${err.message}`, 'exited');
    const timer = setTimeout(
      () => fail(`did not report its address within ${readyTimeoutMs / 1000} s`, 'timeout'),
      readyTimeoutMs,
    );
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
    };
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

/** A child with a JSON IPC channel for the caller's own messages (see `forkIpcChild`). */
export interface IpcChild {
  readonly pid: number;
  readonly process: ChildProcess;
  /** Stops the child by pid, like `ServerChild.stop`; safe to call twice. */
  stop(): Promise<void>;
}

/**
 * Forks `script` with `serialization: 'json'` and waits for its first IPC message (any value:
 * its ready signal); the channel is then the caller's. Tracked and stopped like the servers.
 */
export function forkIpcChild(script: URL, options: StartServerOptions): Promise<IpcChild> {
  const readyTimeoutMs = options.readyTimeoutMs ?? kReadyTimeoutMs;
  const child = fork(fileURLToPath(script), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'json',
    execArgv: [],
  });
  liveChildren.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  exited.then(() => liveChildren.delete(child));
  const stop = () => stopChild(child, exited);
  return new Promise<IpcChild>((resolve, reject) => {
    let done = false;
    const finish = (err?: ChildStartError): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      child.off('error', onError);
      if (err === undefined) resolve({ pid: child.pid!, process: child, stop });
      else stop().finally(() => reject(err));
    };
    const onMessage = (): void => finish();
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      finish(new ChildStartError(`${options.label}: exited before it was ready (code ${code}, signal ${signal})`, 'exited'));
    const onError = (err: Error): void =>
      finish(new ChildStartError(`${options.label}: could not be started: ${err.message}`, 'exited'));
    const timer = setTimeout(
      () => finish(new ChildStartError(`${options.label}: sent no ready message within ${readyTimeoutMs / 1000} s`, 'timeout')),
      readyTimeoutMs,
    );
    child.once('message', onMessage);
    child.once('exit', onExit);
    child.once('error', onError);
  });
}

function isAddress(value: Record<string, unknown>): value is ServerAddress {
  if (value.kind === 'tcp') return typeof value.host === 'string' && typeof value.port === 'number';
  if (value.kind === 'unix') return typeof value.path === 'string';
  if (value.kind === 'shm') return typeof value.name === 'string';
  return false;
}

async function stopChild(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  killQuietly(child.pid, 'SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const graceOver = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), kStopGraceMs);
  });
  const stopped = await Promise.race([exited.then(() => true), graceOver]);
  clearTimeout(timer);
  if (!stopped) {
    killQuietly(child.pid, 'SIGKILL');
    await exited;
  }
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone: nothing to stop.
  }
}

/** A fresh private (0700) directory under the OS temp dir, removed by `removeTempDir` or at exit. */
export async function makeTempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ogurpchik-bench-'));
  tempDirs.add(dir);
  return dir;
}

export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/**
 * Registers entries of `dir` whose names contain `token` (and so are ours: the token should carry
 * this process's pid) for removal by `sweepLeftovers`, `cleanupAll` and the signal handler.
 */
export function trackLeftovers(dir: string, token: string): void {
  sweeps.set(`${dir}\0${token}`, { dir, token });
}

/** Entries of the tracked sweeps still present, as full paths. */
export function findLeftovers(): string[] {
  const found: string[] = [];
  for (const { dir, token } of sweeps.values()) {
    let entries: string[];
    try {
      entries = readdirSync(dir);
    } catch {
      continue;
    }
    for (const entry of entries) if (entry.includes(token)) found.push(join(dir, entry));
  }
  return found;
}

/** Removes what `findLeftovers` finds and returns those paths (empty when all was clean). */
export function sweepLeftovers(): string[] {
  const found = findLeftovers();
  for (const path of found) rmSync(path, { recursive: true, force: true });
  return found;
}

/** Stops every child still running and removes every temp dir and tracked leftover still present. */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...liveChildren].map((child) => stopChild(child, onceExited(child))));
  await Promise.all([...tempDirs].map((dir) => removeTempDir(dir)));
  sweepLeftovers();
}

function onceExited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * On SIGINT/SIGTERM: kill every child by pid, remove temp dirs, and exit 130/143. Synchronous,
 * because the process is about to end and pending promises will not run.
 */
export function installSignalCleanup(): void {
  const onSignal = (signal: NodeJS.Signals): void => {
    process.stderr.write(`\n[bench] ${signal}: stopping ${liveChildren.size} server child(ren)\n`);
    cleanupSync();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // Last resort if the bench exits by another path (an uncaught exception).
  process.once('exit', cleanupSync);
}

function cleanupSync(): void {
  for (const child of liveChildren) if (child.pid !== undefined) killQuietly(child.pid, 'SIGKILL');
  liveChildren.clear();
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
  sweepLeftovers();
}

