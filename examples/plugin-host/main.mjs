// A plugin host: three isolate() plugins, each in a worker thread of its own. One works, one throws
// on some requests, one hangs; the host keeps calling the good one all along and it keeps answering.
// Run: node examples/plugin-host/main.mjs
import { Node, RpcError, isolate } from 'ogurpchik';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const plugin = (file) =>
  // closeTimeoutMs: how long close() lets the plugin's thread stop by itself before terminating it.
  new Node().connect(isolate(new URL(file, import.meta.url), { closeTimeoutMs: 300 })).start();

let good, flaky, stuck;
let calling = true;
try {
  [good, flaky, stuck] = await Promise.all([plugin('./plugins/good.mjs'), plugin('./plugins/flaky.mjs'), plugin('./plugins/stuck.mjs')]);
  console.log('host: 3 plugins started');

  // The host's own traffic to the good plugin, every 5 ms, for the whole run.
  let answered = 0;
  const background = (async () => {
    for (let i = 0; calling; i++) {
      const words = await good.client.call({ text: `call ${i} of the good plugin` }, { timeoutMs: 1000 });
      if (words !== 6) throw new Error(`good plugin answered ${words}`);
      answered++;
      await sleep(5);
    }
  })();
  background.catch(() => {}); // awaited below; this only keeps an early failure from crashing the host first

  // 1. A plugin that throws: each failure is that call's alone.
  let remote = 0;
  for (let n = 1; n <= 6; n++) {
    try {
      console.log(`flaky(${n}) = ${await flaky.client.call({ n }, { timeoutMs: 1000 })}`);
    } catch (err) {
      if (!(err instanceof RpcError) || err.code !== 'REMOTE') throw err;
      remote++;
      console.log(`flaky(${n}) failed: ${err.code} ${err.remote?.name}: ${err.message}`);
    }
  }
  if (remote !== 2) throw new Error(`expected 2 REMOTE errors from the flaky plugin, got ${remote}`);

  // 2. A plugin that hangs: the call times out; the plugin's thread is still spinning, so close it
  // (terminated after closeTimeoutMs) and start a fresh one.
  console.log(`stuck: ${await stuck.client.call({ op: 'warm-up' }, { timeoutMs: 1000 })}`);
  const before = answered;
  try {
    await stuck.client.call({ op: 'hang' }, { timeoutMs: 300 });
    throw new Error('the hanging call returned');
  } catch (err) {
    if (!(err instanceof RpcError) || err.code !== 'TIMEOUT') throw err;
    console.log(`stuck: hang failed: ${err.code} (${err.message})`);
  }
  const t0 = performance.now();
  await stuck.close();
  console.log(`stuck: closed in ${Math.round(performance.now() - t0)} ms (its thread was terminated)`);
  stuck = await plugin('./plugins/stuck.mjs');
  console.log(`stuck: restarted: ${await stuck.client.call({ op: 'after restart' }, { timeoutMs: 1000 })}`);
  const duringHang = answered - before;

  await sleep(100);
  calling = false;
  await background;
  if (duringHang === 0) throw new Error('the good plugin answered nothing while the stuck one hung');
  console.log(`host kept serving: the good plugin answered ${answered} calls, ${duringHang} of them while the stuck plugin hung and restarted`);
} catch (err) {
  console.error(`plugin-host: failed: ${err.stack ?? err}`);
  process.exitCode = 1;
} finally {
  calling = false;
  await Promise.all([good?.close(), flaky?.close(), stuck?.close()]);
}
