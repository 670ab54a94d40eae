/** Shared test helpers: child-process servers, temp dirs, timing. */
import { spawn, type ChildProcess } from 'node:child_process';
import { sign, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type net from 'node:net';
import { Kind, decodeEnvelope } from '../src/protocol/envelope.js';
import { FrameDecoder } from '../src/protocol/framing.js';
import type { Address, RpcError, RunningNode } from '../src/index.js';
import { LineQueue } from './lines.js';

export interface ChildServer {
  address: Address;
  pid: number;
  child: ChildProcess;
  /** Kills the child by pid (SIGKILL by default) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** The next line the server prints after its address (parsed JSON); rejects after `timeoutMs`. */
  nextLine(timeoutMs: number): Promise<any>;
}

const children = new Set<ChildProcess>();

/** Starts test/fixtures/server.js in its own process and waits (at most 10 s) for its address. */
export async function startServer(options: Record<string, unknown>): Promise<ChildServer> {
  const script = new URL('./fixtures/server.js', import.meta.url);
  const child = spawn(process.execPath, [script.pathname, JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const kill = async (signal: NodeJS.Signals = 'SIGKILL') => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(child.pid!, signal);
    await exited;
  };
  // Every stdout line in order: the first is the address, later ones whatever the server reports.
  // 'close', not 'exit': by then every line it wrote has been read.
  const ended = new Promise<number | string | null>((resolve) => child.once('close', (code, signal) => resolve(code ?? signal)));
  const lines = new LineQueue(child.stdout!, ended);
  const nextLine = (timeoutMs: number, what: string): Promise<string> =>
    lines.next(
      timeoutMs,
      () => new Error(`test server: no ${what} within ${timeoutMs} ms`),
      (code) => new Error(`test server exited with ${code} before ${what}`),
    );
  const line = await nextLine(10_000, 'listening').catch(async (err) => {
    await kill();
    throw err;
  });
  const { address, pid } = JSON.parse(line);
  return { address, pid, child, kill, nextLine: async (timeoutMs) => JSON.parse(await nextLine(timeoutMs, 'next line')) };
}

/** Kills every child server still running (mocha root hook). */
export async function killAllChildren(): Promise<void> {
  await killAll(children);
}

/** SIGKILLs each process of `processes` still running, by pid, and resolves when all have exited. */
export async function killAll(processes: Iterable<ChildProcess>): Promise<void> {
  await Promise.all(
    [...processes].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          process.kill(c.pid!, 'SIGKILL');
        }),
    ),
  );
}

/** A fresh private temp dir; removed by the returned function. */
export function tempDir(): { dir: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ogurpchik-test-'));
  // Retried: a stopped discovery watch may still be finishing the mkdir of the directory it was
  // about to watch (ensureTrustedDir cannot be cancelled), racing the recursive removal (ENOTEMPTY).
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 }) };
}

/** Resolves with the rejection of `p`, failing if it resolves. */
export async function rejectionOf(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject, it resolved');
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Why a client was refused when the refusal may reach it before its start() resolved or after:
 * start()'s rejection, else that of `call(node)` on the started node, which is closed afterwards
 * (`closedWith` is then its client's close reason, read before the close).
 */
export async function refusalOf(
  starting: Promise<RunningNode<any, any>>,
  call: (node: RunningNode<any, any>) => Promise<unknown>,
): Promise<{ err: any; started: boolean; closedWith?: RpcError }> {
  let node: RunningNode<any, any>;
  try {
    node = await starting;
  } catch (err) {
    return { err, started: false };
  }
  try {
    const err = await rejectionOf(call(node));
    return { err, started: true, closedWith: node.client.closedWith };
  } finally {
    await node.close();
  }
}

/**
 * A copy of this node binary at `<dir>/node` with its detached Ed25519 signature beside it
 * (`node.sig`, base64), for the signed-process handshake. A hard link where possible: it is ~100 MB.
 */
export function signedNodeCopy(dir: string, privateKey: KeyObject): string {
  const signedNode = path.join(dir, 'node');
  const real = fs.realpathSync(process.execPath);
  try {
    fs.linkSync(real, signedNode);
  } catch {
    fs.copyFileSync(real, signedNode);
    fs.chmodSync(signedNode, 0o755);
  }
  fs.writeFileSync(`${signedNode}.sig`, sign(null, fs.readFileSync(signedNode), privateKey).toString('base64'));
  return signedNode;
}

/** `p`, or a rejection saying `what` did not happen within `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * For a hand-written server: the ids of the calls (Request and Open) the client sends on
 * `socket`, filled as its frames arrive; resolves once the first has come, or after `waitMs`.
 */
export async function callIdsOf(socket: net.Socket, options: { maxFrameBytes?: number; waitMs: number }): Promise<number[]> {
  const calls: number[] = [];
  const decoder = new FrameDecoder(options.maxFrameBytes);
  socket.on('error', () => {});
  socket.on('data', (chunk) => {
    try {
      decoder.push(chunk, (body) => {
        const env = decodeEnvelope(body);
        if (env.kind === Kind.Request || env.kind === Kind.Open) calls.push(env.id);
      });
    } catch {
      // the client speaks the protocol; if not, the assertions on its calls will say so
    }
  });
  for (let i = 0; i < options.waitMs / 2 && calls.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 2));
  return calls;
}
