// The host's handler: this module is imported and run inside the host's connection worker, not on
// its main thread, so a lookup is answered even while the main thread is in the middle of a slice.
import fs from 'node:fs';

// A handler module is imported by URL and takes no arguments, so the host hands over its table
// the one way a URL can: the table file's path in the query string.
const tableFile = new URL(import.meta.url).searchParams.get('table');
if (tableFile === null) throw new Error('lookup-handler.mjs needs ?table=<path of a JSON table>');
const prices = new Map(Object.entries(JSON.parse(fs.readFileSync(tableFile, 'utf8'))));

export const handler = {
  onRequest({ sku }) {
    const price = prices.get(sku);
    // A throw reaches the caller as RpcError REMOTE with this message.
    if (price === undefined) throw new Error(`no such sku: ${sku}`);
    return { sku, price };
  },
};
