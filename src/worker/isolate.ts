/**
 * The entry of a plugin's own worker thread (isolate transport). There is no socket: the plugin's
 * handler is served by a call session bound directly to the rings shared with the host's main
 * thread, so a call costs one thread hop each way. The thread has no other task: it always adopts
 * its spec's ring pair, and its one connection has id kClientConnectionId there (announced by
 * ready(), not by a ConnOpen record).
 */
import { workerData } from 'node:worker_threads';
import { RpcError, sendsStacks, toWireError } from '../errors.js';
import { createCodec } from '../codec/index.js';
import { ControlKind, encodeControl, kClientConnectionId, kHubWord, type ReadyResult, type TaskControl, type TaskSpec } from '../bridge/control.js';
import { exposeThreadControl } from '../bridge/thread-control.js';
import { Session } from '../session/session.js';
import { RingReader, RingWriter } from '../shm/ring.js';
import { kindOf } from '../protocol/envelope.js';
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
let session: Session | undefined;
let finished = false;
/** For stats(): messages from and to the host. */
let messagesIn = 0;
let messagesOut = 0;

const fromMain = new RingReader(
  spec.hub.toWorker,
  {
    onMessage: (_tag, bytes) => {
      // The host closes the plugin's one connection (its side failed): the plugin goes with it.
      if (kindOf(bytes) === ControlKind.CloseConn) {
        void close();
        return;
      }
      messagesIn++;
      try {
        session?.receive(bytes);
      } catch (err) {
        void close(RpcError.is(err) ? err : new RpcError('PROTOCOL', String(err)));
      }
    },
  },
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
  session = new Session({
    codec,
    peer: { transport: 'isolate', auth: 'none', connectionId: kClientConnectionId, pid: process.pid },
    handler: mod.handler,
    send: (head, payload) => {
      messagesOut++;
      return toMain.write2(kClientConnectionId, head, payload) ? undefined : toMain.flushed();
    },
    sendStacks: sendsStacks(spec.remoteStacks, 'isolate'),
  });
  fromMain.start();
  if (mod.onConnect) {
    // The plugin's own start-up calls run after ready() has been answered.
    setImmediate(() => {
      Promise.resolve()
        .then(() => mod.onConnect!(session!))
        .catch((err) => process.emitWarning(`ogurpchik plugin onConnect failed: ${(err as Error)?.stack ?? err}`));
    });
  }
  return { ok: true, connectionId: kClientConnectionId };
}

async function close(reason = new RpcError('CLOSED', 'the host closed the plugin')): Promise<void> {
  if (finished) return;
  finished = true;
  session?.close(reason);
  try {
    toMain.write(kClientConnectionId, encodeControl(ControlKind.ConnClosed, toWireError(reason)));
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
