import { Node, tcp, unix } from '../src/index.js';
import { echo } from './fixtures/echo-handler.js';
const mod = new URL('./fixtures/echo-handler.js', import.meta.url);
for (const h of [mod, { onRequest: echo }]) {
  const server = await new Node().serve(tcp('127.0.0.1:0'), h as any).start();
  const addr = server.addresses[0] as any;
  console.log('listening', addr);
  const c = await new Node().connect(tcp(addr)).start();
  console.log(await c.client.call({ type: 'Ping' }));
  console.log(await c.client.call({ type: 'Echo', text: 'hi' }));
  const t0 = performance.now(); let n = 0;
  while (performance.now() - t0 < 1000) { await c.client.call({ type: 'Ping' }); n++; }
  console.log('rt us', 1000000 / n);
  await c.close(); await server.close();
}
console.log('done');
