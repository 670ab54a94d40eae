/**
 * The view codec against msgpack on a 1 MiB request (issue: "bytes copied per 1 MiB request for
 * view vs msgpack"). The request is an order with three small fields and a 1 MiB blob; the handler
 * reads the three fields and sums the blob's first 64 bytes. Both codecs go through the runtime's
 * own receive path, in this thread: the framing decoder fed 64 KiB chunks as a socket delivers
 * them, then the call session (a handler in the connection worker), or additionally the ring to
 * the main thread (a main-thread handler). Copies are the runtime's own count (src/observe.ts
 * countCopied: frame assembly, ring writes and reassembly, decoding); the time is receive + handle.
 */
import { createCodec, msgpack, view, type CodecDescriptor } from '../src/codec/index.js';
import type { View } from '../src/codec/view.js';
import { bytesCopied } from '../src/observe.js';
import { FrameDecoder, encodeFrame } from '../src/protocol/framing.js';
import { encodeRequest } from '../src/protocol/envelope.js';
import { Session } from '../src/session/session.js';
import { RingReader, RingWriter, createRing } from '../src/shm/ring.js';
import { Order, buildOrder } from '../test/fixtures/order.js';
import type { ResultRow } from './lib/table.js';

const kBlobBytes = 1024 * 1024;
const kChunk = 64 * 1024;

interface Reading {
  id: bigint | number;
  customer: string | null;
  qty: number;
  sum: number;
}

function readView(v: View): Reading {
  const order = v.root(Order.getRootAsOrder);
  const blob = order.blobArray()!;
  let sum = 0;
  for (let i = 0; i < 64; i++) sum += blob[i];
  return { id: order.id(), customer: order.customer(), qty: order.qty(), sum };
}

function readObject(o: { id: number; customer: string; qty: number; blob: Uint8Array }): Reading {
  let sum = 0;
  for (let i = 0; i < 64; i++) sum += o.blob[i];
  return { id: o.id, customer: o.customer, qty: o.qty, sum };
}

export interface ViewCase {
  codec: 'view' | 'msgpack';
  path: 'worker handler' | 'main-thread handler';
  copiedPerRequest: number;
  medianUs: number;
  requestBytes: number;
}

export interface ViewResult {
  cases: ViewCase[];
}

function frameFor(codec: CodecDescriptor, blob: Uint8Array): Uint8Array {
  const payload =
    codec.kind === 'view'
      ? buildOrder({ id: 7n, customer: 'ada', qty: 3, blob }).asUint8Array()
      : createCodec(msgpack()).encode({ id: 7, customer: 'ada', qty: 3, blob });
  return encodeFrame(encodeRequest(1, 0, payload));
}

async function measure(codecDesc: CodecDescriptor, path: ViewCase['path'], requests: number): Promise<ViewCase> {
  const blob = new Uint8Array(kBlobBytes).map((_, i) => i & 0xff);
  const frame = frameFor(codecDesc, blob);
  let read: Reading | undefined;
  const handler = { onRequest: (req: unknown) => ((read = codecDesc.kind === 'view' ? readView(req as View) : readObject(req as any)), new Uint8Array(0)) };
  const session = new Session({
    codec: createCodec(codecDesc),
    peer: { transport: 'bench', auth: 'none', connectionId: 1 },
    send: () => {},
    handler,
  });
  let deliver: (body: Uint8Array) => Promise<void>;
  let stop = () => {};
  if (path === 'worker handler') {
    deliver = async (body) => session.receive(body);
  } else {
    // The relay: the worker writes the body into the ring (1 MiB, the default), the main thread reads it.
    const sab = createRing(1024 * 1024);
    let done: (() => void) | undefined;
    const reader = new RingReader(sab, { onMessage: (_tag, bytes) => (session.receive(bytes), done?.()) }, { keepAlive: false });
    const writer = new RingWriter(sab);
    reader.start();
    stop = () => reader.stop();
    deliver = (body) =>
      new Promise<void>((resolve) => {
        done = resolve;
        if (!writer.write2(1, body.subarray(0, 0), body)) void writer.flushed();
      });
  }
  const times: number[] = [];
  let copied = 0;
  try {
    for (let i = 0; i < requests + 3; i++) {
      const decoder = new FrameDecoder();
      const before = bytesCopied();
      const t0 = process.hrtime.bigint();
      const bodies: Uint8Array[] = [];
      for (let at = 0; at < frame.length; at += kChunk) decoder.push(frame.subarray(at, at + kChunk), (b) => bodies.push(b));
      for (const b of bodies) await deliver(b);
      const us = Number(process.hrtime.bigint() - t0) / 1000;
      if (read === undefined || read.sum !== blob.subarray(0, 64).reduce((a, b) => a + b, 0)) throw new Error('the handler read the wrong bytes');
      if (i >= 3) {
        times.push(us);
        copied += bytesCopied() - before;
      }
    }
  } finally {
    stop();
  }
  times.sort((a, b) => a - b);
  return { codec: codecDesc.kind as ViewCase['codec'], path, copiedPerRequest: copied / requests, medianUs: times[times.length >> 1], requestBytes: frame.length };
}

export async function runView(options: { requests: number }, log: (line: string) => void): Promise<ViewResult> {
  const cases: ViewCase[] = [];
  for (const path of ['worker handler', 'main-thread handler'] as const) {
    for (const codec of [msgpack(), view()]) {
      log(`view codec: ${codec.kind}, ${path}`);
      cases.push(await measure(codec, path, options.requests));
    }
  }
  return { cases };
}

export function viewRows(result: ViewResult): ResultRow[] {
  const rows: ResultRow[] = [];
  for (const path of ['worker handler', 'main-thread handler'] as const) {
    const base = result.cases.find((c) => c.codec === 'msgpack' && c.path === path)!;
    for (const c of result.cases.filter((x) => x.path === path)) {
      rows.push({
        scenario: `1 MiB request, read 3 fields + 64 B, ${c.codec}, ${path}`,
        transport: 'in-process',
        medianUs: c.medianUs,
        copiedBytes: Math.round(c.copiedPerRequest),
        ...(c === base ? {} : { baseline: `msgpack, ${path}`, ratio: c.copiedPerRequest / base.copiedPerRequest }),
      });
    }
  }
  return rows;
}
