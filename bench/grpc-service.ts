/** The grpc-js echo service shared by grpc-server.ts and the peers section: raw bytes both ways. */

import type { ServiceDefinition } from '@grpc/grpc-js';

export const kGrpcEchoPath = '/bench.Echo/Echo';

const identity = (b: Buffer): Buffer => b;

export const kGrpcEchoService: ServiceDefinition = {
  Echo: {
    path: kGrpcEchoPath,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

export const serializeBytes = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);
export const deserializeBytes = identity;
