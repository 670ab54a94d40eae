// The client process: knows only the name "greeter". waitFor() resolves once a live record of
// that name appears (here the server starts after us), then start() connects to its address.
import { FileDiscovery, Node } from 'ogurpchik';

const [dir] = process.argv.slice(2);
console.log('client: waiting for "greeter"...');
const t0 = performance.now();
const node = await new Node({ discovery: new FileDiscovery({ dir }) }).waitFor('greeter', { timeoutMs: 10_000 }).start();
try {
  console.log(`client: found "greeter" after ${Math.round(performance.now() - t0)} ms`);
  console.log(`client: it says: ${await node.client.call({ name: 'client' }, { timeoutMs: 5000 })}`);
} finally {
  await node.close();
}
