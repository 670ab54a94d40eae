/** Channel.readySession's one-endpoint shortcut: it never hands out a session the endpoints no longer offer. */
import assert from 'node:assert/strict';
import { RpcError, unix, type TransportDescriptor } from '../src/index.js';
import { Channel } from '../src/main/channel.js';
import type { Resolver } from '../src/discovery/resolver.js';
import { reconnectOptions } from '../src/main/reconnect.js';
import type { RemoteTask } from '../src/main/remote-task.js';
import type { Session } from '../src/session/session.js';

/** A connection task as the Channel sees it, without a worker: `end()` ends it as a lost connection would. */
function fakeTask(name: string): { task: RemoteTask; session: { name: string; closedWith: RpcError | undefined; pendingCount: number }; end(): void } {
  let end!: () => void;
  const ended = new Promise<void>((resolve) => (end = resolve));
  const session = { name, closedWith: undefined as RpcError | undefined, pendingCount: 0 };
  const task = { clientSession: session, ended, close: async () => end() } as unknown as RemoteTask;
  return { task, session, end };
}

const nameOf = (s: Session | undefined): string | undefined => (s as unknown as { name: string } | undefined)?.name;
const until = async (cond: () => boolean): Promise<void> => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), 'condition not met in time');
};

describe('Channel.readySession with one endpoint', function () {
  this.timeout(10_000);

  it('a closed session is not handed out; after a reconnect the new session is', async () => {
    const made: Array<ReturnType<typeof fakeTask>> = [];
    const channel = new Channel([unix('/nonexistent/a.sock')], {
      open: async () => {
        const t = fakeTask(`s${made.length}`);
        made.push(t);
        return t.task;
      },
      reconnect: reconnectOptions({ initialDelayMs: 0, maxDelayMs: 1, jitter: 0 }),
      balance: 'round-robin',
    });
    await channel.start();
    assert.equal(nameOf(channel.readySession()), 's0');
    assert.equal(nameOf(channel.readySession()), 's0');
    made[0]!.session.closedWith = new RpcError('CLOSED', 'gone');
    assert.equal(channel.readySession(), undefined, 'its endpoint has not noticed yet: skipped, as pick() skips it');
    made[0]!.end();
    await until(() => made.length === 2 && channel.readySession() !== undefined);
    assert.equal(nameOf(channel.readySession()), 's1');
    // The old session reopening (it cannot, but say a fake did) would not bring it back: the endpoint moved on.
    made[0]!.session.closedWith = undefined;
    assert.equal(nameOf(channel.readySession()), 's1');
    await channel.close();
    assert.equal(channel.readySession(), undefined);
  });

  it('a second endpoint from discovery: calls spread over both at once, though one endpoint was all there was', async () => {
    let onChange!: (transports: TransportDescriptor[]) => void;
    const a = unix('/nonexistent/a.sock');
    const b = unix('/nonexistent/b.sock');
    const resolver: Resolver = {
      resolve: async () => [a],
      watch: (fn) => {
        onChange = fn;
        return () => {};
      },
    };
    let gateB!: () => void;
    const bOpened = new Promise<void>((r) => (gateB = r));
    const channel = new Channel([a], {
      open: async (t) => {
        if ((t as { path: string }).path === b.path) await bOpened;
        return fakeTask((t as { path: string }).path).task;
      },
      reconnect: reconnectOptions({ initialDelayMs: 0, maxDelayMs: 1, jitter: 0 }),
      balance: 'round-robin',
      resolver,
    });
    await channel.start();
    assert.equal(nameOf(channel.readySession()), a.path);
    onChange([a, b]);
    // b is connecting: only a is ready.
    assert.equal(nameOf(channel.readySession()), a.path);
    gateB();
    await until(() => channel.endpoints.filter((e) => e.state === 'ready').length === 2);
    const picked = Array.from({ length: 4 }, () => nameOf(channel.readySession()));
    assert.deepEqual(picked.sort(), [a.path, a.path, b.path, b.path]);
    await channel.close();
  });
});
