// A helper process: looks prices up in the host over shared memory for a while, timing each call,
// then sends its timings to the host over the fork() IPC channel and exits.
import { Node, shm } from 'ogurpchik';

const [name, durationMs, skus] = process.argv.slice(2);
// The host went away (killed, or failed): leave too rather than linger as an orphan.
const onHostGone = () => process.exit(1);
process.on('disconnect', onHostGone);

const node = await new Node().connect(shm(name)).start();
const latencies = [];
try {
  const until = performance.now() + Number(durationMs);
  for (let i = 0; performance.now() < until; i++) {
    const sku = `sku-${(i * 7919 + process.pid) % Number(skus)}`;
    const t0 = performance.now();
    const { price } = await node.client.call({ sku }, { timeoutMs: 5000 });
    latencies.push(performance.now() - t0);
    if (typeof price !== 'number') throw new Error(`bad answer for ${sku}: ${price}`);
    // Pace the calls like a helper with work of its own, so each one finds the host's worker asleep.
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
} finally {
  await node.close();
}
process.off('disconnect', onHostGone);
process.send({ pid: process.pid, latencies }, () => process.disconnect());
