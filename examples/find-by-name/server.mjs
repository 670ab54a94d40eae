// The server process: serves a greeter on a loopback port the kernel picks, and publishes it under
// the name "greeter", so a client needs only the name. Stops when main.mjs says so.
import { FileDiscovery, Node, tcp } from 'ogurpchik';

const [dir] = process.argv.slice(2);
const node = await new Node({ discovery: new FileDiscovery({ dir }) })
  .serve(tcp('127.0.0.1:0'), { onRequest: ({ name }) => `hello ${name}, from process ${process.pid}` })
  .publish('greeter')
  .start();
const { host, port } = node.addresses[0];
console.log(`server: listening on ${host}:${port}, published as "greeter"`);

let closing;
const close = () => (closing ??= node.close()); // also removes the "greeter" record
const stop = async () => {
  await close();
  console.log('server: closed');
  process.disconnect?.(); // the IPC channel with main.mjs is the last thing keeping this process alive
};
process.on('message', (m) => m === 'stop' && void stop());
process.on('disconnect', () => void close()); // main.mjs went away: close and let the process end
