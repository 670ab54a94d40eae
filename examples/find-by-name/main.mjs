// Two processes that find each other by name: the client starts first and waits for "greeter";
// the server starts half a second later and publishes it. Both exit on their own.
// Run: node examples/find-by-name/main.mjs
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// A private discovery directory for this run (mkdtemp makes it 0700, as discovery requires), so
// the example neither sees nor leaves records in the default one.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'find-by-name-'));
const start = (file) => fork(fileURLToPath(new URL(file, import.meta.url)), [dir]);
const exited = (child) =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve(child.exitCode ?? child.signalCode)
    : new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));

const children = [];
const watchdog = setTimeout(() => {
  console.error('find-by-name: failed: not done within 15 s');
  for (const c of children) if (c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
  process.exit(1);
}, 15_000);
try {
  const client = start('./client.mjs');
  children.push(client);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const server = start('./server.mjs');
  children.push(server);

  const clientCode = await exited(client);
  if (server.connected) server.send('stop');
  const serverCode = await exited(server);
  if (clientCode !== 0 || serverCode !== 0) throw new Error(`client exited with ${clientCode}, server with ${serverCode}`);
  const left = fs.readdirSync(dir);
  if (left.length > 0) throw new Error(`records left behind: ${left.join(', ')}`);
  console.log('both processes exited cleanly; the "greeter" record is gone');
} catch (err) {
  console.error(`find-by-name: failed: ${err.stack ?? err}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  fs.rmSync(dir, { recursive: true, force: true });
}
