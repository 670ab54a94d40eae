/**
 * The far end of the bench's bare ring chain (a child process): maps the two shared-memory rings
 * the parent created, echoes every message of the first into the second with the same tag, and
 * wakes the other process with the native futex, as the runtime's shm transport does, with
 * nothing of the runtime in between (no framing, codec or session).
 * Usage: `node ring-chain-server.js <c2s segment> <s2c segment>`. Prints `{"kind":"shm","name":…}`
 * once both are mapped; exits when the first ring closes, on SIGTERM, or when the parent goes.
 */
import { futexSignal, loadNative } from '../src/native/addon.js';
import { RingReader, RingWriter } from '../src/shm/ring.js';

const [c2sName, s2cName] = process.argv.slice(2);
try {
  const native = loadNative();
  const c2s = native.shmOpen({ name: c2sName! });
  const s2c = native.shmOpen({ name: s2cName! });
  const writer = new RingWriter(s2c, { signal: futexSignal });
  new RingReader(c2s, {
    onMessage: (tag, bytes) => writer.write(tag, bytes),
    onClose: () => {
      writer.close();
      void writer.flushed().finally(() => process.exit(0));
    },
  }, { signal: futexSignal }).start();
  process.stdout.write(`${JSON.stringify({ kind: 'shm', name: c2sName })}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: `ring chain server: ${(err as Error).message}` })}\n`);
  process.exit(2);
}
process.once('SIGTERM', () => process.exit(0));
process.once('disconnect', () => process.exit(0));
