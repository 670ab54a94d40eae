/**
 * One address served by several pool threads (`serve(..., { threads })`). The main thread binds
 * the listening socket itself and holds it, with no event loop watching it; each of `threads`
 * supervised listener tasks adopts a duplicate, so the kernel hands every new connection to
 * whichever of their threads accepts first, and a thread that is busy (a worker-module handler
 * computing) leaves new clients to the others. A task that dies takes only its own duplicate and
 * its connections with it, and starts again on the same socket. maxConnections (and one-to-one)
 * counts the clients of all of them, in one word of shared memory.
 */
import dns from 'node:dns/promises';
import { RpcError, messageOf } from '../errors.js';
import { loadNative } from '../native/addon.js';
import { formatAddress, type Address } from '../transport/descriptors.js';
import { listenSocketFile, type SocketFile } from '../transport/socket-file.js';
import { SupervisedListener, type ListenerStats } from './listener.js';
import type { RemoteTaskOptions, TaskRunner } from './remote-task.js';

export class ListenerGroup {
  /** The bound address (port 0 resolved). */
  readonly address: Address | undefined;
  readonly #members: SupervisedListener[];
  /** The listening socket the tasks adopt duplicates of; closed (and its socket file removed) last. */
  readonly #fd: number;
  readonly #file: SocketFile | undefined;
  #closing: Promise<void> | undefined;
  /** Set once the socket is closed: by drain() (no new clients meanwhile) or close(). */
  #released = false;

  private constructor(members: SupervisedListener[], fd: number, file: SocketFile | undefined) {
    // What its tasks report they listen on (the adapters' own address, port 0 resolved).
    this.address = members[0].address;
    this.#members = members;
    this.#fd = fd;
    this.#file = file;
  }

  /** Binds `options.config.transport` (tcp or unix) and starts `threads` listener tasks on it; rejects with nothing left behind when any fails. */
  static async start(runner: TaskRunner, options: RemoteTaskOptions, threads: number): Promise<ListenerGroup> {
    const native = loadNative();
    const t = options.config.transport;
    const where = formatAddress(t);
    let bound: { fd: number; port: number };
    let file: SocketFile | undefined;
    try {
      if (t.kind === 'unix') {
        ({ bound, file } = await listenSocketFile(t.path, (privatePath) => native.listenSocket({ path: privatePath }), ({ fd }) => native.closeFd(fd)));
      } else if (t.kind === 'tcp') {
        // Bound by number, as net.Server#listen does after the same lookup.
        const ip = await dns.lookup(t.host);
        bound = native.listenSocket({ host: ip.address, port: t.port });
      } else {
        throw new RpcError('INVALID_ARGUMENT', `serve(..., { threads }) takes tcp or unix transports, not ${t.kind}`);
      }
    } catch (err) {
      if (RpcError.is(err)) throw err;
      throw new RpcError('UNAVAILABLE', `cannot listen on ${where}: ${messageOf(err)}`, { cause: err });
    }
    // The total, then each task's own share (see TaskSpec.shared).
    const connections = new Int32Array(new SharedArrayBuffer(4 * (1 + threads)));
    const transport = t.kind === 'tcp' ? { ...t, port: bound.port } : t;
    const members: SupervisedListener[] = [];
    try {
      for (let i = 0; i < threads; i++) members.push(await SupervisedListener.start(runner, { ...options, config: { ...options.config, transport, shared: { listenFd: bound.fd, connections, member: i } } }));
    } catch (err) {
      await Promise.all(members.map((m) => m.close()));
      release(bound.fd, file);
      throw err;
    }
    return new ListenerGroup(members, bound.fd, file);
  }

  /** The sum over its tasks; `threads` says how many there are. */
  async stats(): Promise<ListenerStats> {
    const all = await Promise.all(this.#members.map((m) => m.stats()));
    const sum = (key: 'connections' | 'accepted' | 'framesIn' | 'framesOut' | 'restarts') => all.reduce((n, s) => n + s[key], 0);
    return {
      ...(this.address !== undefined ? { address: this.address } : {}),
      threads: this.#members.length,
      connections: sum('connections'),
      accepted: sum('accepted'),
      framesIn: sum('framesIn'),
      framesOut: sum('framesOut'),
      restarts: sum('restarts'),
    };
  }

  /**
   * Every task's graceful close (see SupervisedListener#drain). The socket goes at once: while
   * its tasks answer what they serve, a new client is refused rather than left waiting in a
   * backlog that nobody accepts from any more.
   */
  async drain(): Promise<void> {
    const drained = Promise.all(this.#members.map((m) => m.drain()));
    this.#release();
    await drained;
  }

  /** Closes every task, then the socket (and its file). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all(this.#members.map((m) => m.close()));
      this.#release();
    })();
    return this.#closing;
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    release(this.#fd, this.#file);
  }
}

function release(fd: number, file: SocketFile | undefined): void {
  try {
    loadNative().closeFd(fd);
  } catch {
    // EBADF: there is nothing left to release
  }
  file?.remove();
}
