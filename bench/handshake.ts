/**
 * Handshake cost (DESIGN §6: under 2 ms on loopback): connection set-up time with each scheme
 * beside set-up with none, over TCP on 127.0.0.1, server and client in this process. The cost of
 * a scheme is its median set-up time minus the median with no handshake, measured in the same
 * interleaved rounds.
 */
import { Node, tcp, type RunningNode } from '../src/index.js';
import type { ResultRow } from './lib/table.js';

export const kHandshakeTargetUs = 2000;
const kSecret = 'bench-secret-bench-secret-bench!';

type Scheme = 'none' | 'version' | 'hmac' | 'hmac mutual';
const kSchemes: Scheme[] = ['none', 'version', 'hmac', 'hmac mutual'];

function configure(node: Node, scheme: Scheme): Node {
  switch (scheme) {
    case 'none':
      return node;
    case 'version':
      return node.handshakeVersionOnly();
    case 'hmac':
      return node.authHmac(kSecret);
    case 'hmac mutual':
      return node.authHmac(kSecret, { mutual: true });
  }
}

export interface HandshakeResult {
  /** Median and p99 connection set-up (connect + handshake + start) per scheme, µs. */
  setup: Record<Scheme, { medianUs: number; p99Us: number; samples: number }>;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

export async function runHandshake(options: { rounds: number; perRound: number }, log: (line: string) => void): Promise<HandshakeResult> {
  const servers = new Map<Scheme, RunningNode>();
  try {
    for (const scheme of kSchemes) servers.set(scheme, await configure(new Node(), scheme).serve(tcp('127.0.0.1:0'), { onRequest: (r: unknown) => r }).start());
    const samples = new Map<Scheme, number[]>(kSchemes.map((s) => [s, []]));
    for (let round = 0; round < options.rounds; round++) {
      log(`handshake: round ${round + 1}/${options.rounds}`);
      for (const scheme of kSchemes) {
        const address = servers.get(scheme)!.addresses[0] as { host: string; port: number };
        for (let i = 0; i < options.perRound; i++) {
          const t0 = process.hrtime.bigint();
          const client = await configure(new Node(), scheme).connect(tcp(address)).start();
          const us = Number(process.hrtime.bigint() - t0) / 1000;
          await client.close();
          if (i > 0) samples.get(scheme)!.push(us); // the first of each round warms up
        }
      }
    }
    const setup = {} as HandshakeResult['setup'];
    for (const scheme of kSchemes) {
      const s = samples.get(scheme)!.sort((a, b) => a - b);
      setup[scheme] = { medianUs: percentile(s, 0.5), p99Us: percentile(s, 0.99), samples: s.length };
    }
    return { setup };
  } finally {
    for (const server of servers.values()) await server.close().catch(() => {});
  }
}

export function handshakeRows(result: HandshakeResult): ResultRow[] {
  const none = result.setup.none;
  const rows: ResultRow[] = [{ scenario: 'connection set-up, no handshake', transport: 'tcp', medianUs: none.medianUs, p99Us: none.p99Us }];
  for (const scheme of ['version', 'hmac', 'hmac mutual'] as const) {
    const s = result.setup[scheme];
    const cost = s.medianUs - none.medianUs;
    rows.push({ scenario: `connection set-up, ${scheme} handshake`, transport: 'tcp', medianUs: s.medianUs, p99Us: s.p99Us });
    rows.push({
      scenario: `  handshake cost, ${scheme} (median - none)`,
      transport: 'tcp',
      medianUs: cost,
      target: `< ${kHandshakeTargetUs} µs`,
      verdict: cost < kHandshakeTargetUs ? 'PASS' : 'MISS',
    });
  }
  return rows;
}
