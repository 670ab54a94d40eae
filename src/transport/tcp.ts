/** The TCP transport adapter. */
import type { TcpDescriptor } from './descriptors.js';
import { formatAddress } from './descriptors.js';
import { connectNet, listenNet } from './net-stream.js';
import type { TransportAdapter } from './types.js';

export const tcpTransport: TransportAdapter = {
  connect(d: TcpDescriptor) {
    return connectNet({ host: d.host, port: d.port }, formatAddress(d));
  },
  async listen(d: TcpDescriptor, onStream) {
    const { server, listener } = await listenNet({ host: d.host, port: d.port }, onStream, (s) =>
      s.remoteAddress === undefined ? undefined : formatAddress({ kind: 'tcp', host: s.remoteAddress, port: s.remotePort ?? 0 }),
    );
    const bound = server.address();
    const port = typeof bound === 'object' && bound !== null ? bound.port : d.port;
    return listener({ kind: 'tcp', host: d.host, port });
  },
};
