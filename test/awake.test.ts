/** The connection worker's awake window (src/worker/awake.ts): the socket-side poll window. */
import assert from 'node:assert/strict';
import { AwakeWindow } from '../src/worker/awake.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('awake window', function () {
  this.timeout(5000);

  it('keeps the event loop turning for the window after each arrival, lets timers run, then lets the loop sleep', async () => {
    const awake = new AwakeWindow(20_000); // 20 ms
    awake.heard();
    const started = performance.now();
    await sleep(5); // a timer fires meanwhile: nothing holds the loop
    assert.ok(awake.turns > 5, `turns while awake: ${awake.turns}`);
    awake.heard(); // extends the window from now
    await sleep(60);
    const after = awake.turns;
    await sleep(30);
    assert.equal(awake.turns, after, 'asleep once the window passed');
    assert.ok(performance.now() - started >= 25);
  });

  it('a zero window never keeps the loop awake; stop() ends a window at once', async () => {
    const none = new AwakeWindow(0);
    none.heard();
    await sleep(5);
    assert.equal(none.turns, 0);
    const stopped = new AwakeWindow(1_000_000);
    stopped.heard();
    await sleep(2);
    stopped.stop();
    await new Promise((resolve) => setImmediate(resolve));
    const at = stopped.turns;
    await sleep(10);
    assert.equal(stopped.turns, at);
    stopped.heard();
    await sleep(5);
    assert.equal(stopped.turns, at, 'heard() after stop() does nothing');
  });
});
