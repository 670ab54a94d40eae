/**
 * The entry of a plugin's own worker thread (isolate transport). There is no socket: the plugin's
 * handler is served by a call session bound directly to the rings shared with the host's main
 * thread (a RingSession, ../bridge/ring-session.ts), so a call costs one thread hop each way. The
 * thread has no other task: it always adopts its spec's ring pair, and its one connection has id
 * kClientConnectionId there (announced by ready(), not by a ConnOpen record).
 */
import { workerData } from 'node:worker_threads';
import { RpcError, sendsStacks, toWireError } from '../errors.js';
import { createCodec } from '../codec/index.js';
import { kClientConnectionId, kHubWord, type ReadyResult, type TaskControl, type TaskSpec } from '../bridge/control.js';
import { exposeThreadControl } from '../bridge/thread-control.js';
import { RingSession } from '../bridge/ring-session.js';
import { RingReader, RingWriter } from '../shm/ring.js';
import type { Handler, PeerClient } from '../types.js';

/** What a plugin module may export. */
interface PluginModule {
  handler?: Handler;
  /** Called once the host is connected, with a client that calls the host's handler. */
  onConnect?(host: PeerClient): void | Promise<void>;
}

const spec = workerData as TaskSpec;
Atomics.store(spec.thread, kHubWord, spec.hub.id);
Atomics.notify(spec.thread, kHubWord);
const toMain = new RingWriter(spec.hub.toMain);
const codec = createCodec(spec.codec, spec.decodeLimits);
let conn: RingSession | undefined;
let finished = false;
/** For stats(): messages from and to the host. */
let messagesIn = 0;
let messagesOut = 0;

const fromMain = new RingReader(
  spec.hub.toWorker,
  { onMessage: (_tag, bytes) => conn?.record(bytes) },
  { spinMicros: spec.idle.spinMicros, pollMicros: spec.idle.pollMicros },
);

async function open(): Promise<ReadyResult> {
  if (spec.transport.kind !== 'isolate') return { ok: false, error: toWireError(new RpcError('INVALID_ARGUMENT', 'not an isolate task')) };
  let mod: PluginModule;
  try {
    mod = await import(spec.transport.module);
  } catch (cause) {
    return { ok: false, error: toWireError(new RpcError('UNAVAILABLE', `plugin ${spec.transport.module} failed to load: ${(cause as Error)?.message ?? cause}`, { cause })) };
  }
  if (mod.handler === undefined && mod.onConnect === undefined) {
    return { ok: false, error: toWireError(new RpcError('INVALID_ARGUMENT', `plugin ${spec.transport.module} exports neither \`handler\` nor \`onConnect\``)) };
  }
  conn = new RingSession({
    session: {
      codec,
      peer: { transport: 'isolate', auth: 'none', connectionId: kClientConnectionId, pid: process.pid },
      handler: mod.handler,
      sendStacks: sendsStacks(spec.remoteStacks, 'isolate'),
    },
    end: 'worker',
    ring: () => toMain,
    // The host closes the plugin's one connection (its side failed): the plugin goes with it.
    onEnded: () => void close(),
    onFailed: finish,
    onBody: (direction) => (direction === 'in' ? messagesIn++ : messagesOut++),
  });
  const session = conn.session;
  fromMain.start();
  if (mod.onConnect) {
    // The plugin's own start-up calls run after ready() has been answered.
    setImmediate(() => {
      Promise.resolve()
        .then(() => mod.onConnect!(session))
        .catch((err) => process.emitWarning(`ogurpchik plugin onConnect failed: ${(err as Error)?.stack ?? err}`));
    });
  }
  return { ok: true, connectionId: kClientConnectionId };
}

async function close(reason = new RpcError('CLOSED', 'the host closed the plugin')): Promise<void> {
  if (finished) return;
  conn?.close(reason);
  conn?.closeOtherEnd(reason);
  finish();
}

/** The plugin's one connection has closed, and the host has been told: the rings go, and the thread ends. */
function finish(): void {
  if (finished) return;
  finished = true;
  try {
    toMain.close();
  } catch {
    // the host side is gone
  }
  fromMain.stop();
  // Let comlink's reply leave, then let the thread end on its own.
  setImmediate(() => spec.hub.control.close());
}

const ready = open();
const control: TaskControl = {
  ready: () => ready,
  close: () => close(),
  // Never served: an isolate is only connected to.
  drain: () => Promise.resolve(),
  takeShm: () => undefined,
  // As the host's end of the connection sees them (what the plugin sent, the host received): its
  // messages are its frames.
  stats: () => ({ connections: finished ? 0 : 1, accepted: 1, framesIn: messagesOut, framesOut: messagesIn }),
};
// The pair is this plugin's alone: its one task answers for every key.
exposeThreadControl(spec.hub.control, () => control);
