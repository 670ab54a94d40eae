/**
 * The idle policy of a node (NodeOptions.idle): how long each thread that reads a ring or a socket
 * keeps looking for more before it sleeps and must be woken. One named preset sets every window;
 * NodeOptions.idleTuning overrides single fields. Thread-neutral: the main side resolves it, the
 * worker side receives the result whole (IdleWindows in the TaskSpec).
 */
import { RpcError } from './errors.js';

/** NodeOptions.idle: from the least CPU ('sleep') to the lowest latency ('spin'). */
export type IdlePreset = 'sleep' | 'balanced' | 'latency' | 'spin';

/** The windows of one connection, in µs (0: none), as the layers below the node receive them. */
export interface IdleWindows {
  /** Busy-poll a ring this long before sleeping; holds the thread (its event loop does not run). */
  spinMicros: number;
  /** After a message on a main <-> worker (or isolate) ring, look once per event-loop turn this long before sleeping. */
  pollMicros: number;
  /** The same window for what a connection worker reads from its peer: its shm ring, or its socket. */
  peerPollMicros: number;
  /** A client connection's worker: after the server's bytes and the caller's messages, look for the caller's next message this long. */
  clientPollMicros: number;
}

/** NodeOptions.idleTuning: fields that replace the preset's. */
export type IdleTuning = Partial<IdleWindows>;

/** One preset: its windows, with the main <-> worker poll window split by whether the connection is an isolate's. */
export interface IdlePresetWindows extends Omit<IdleWindows, 'pollMicros'> {
  /** pollMicros of an isolate's rings. */
  isolatePollMicros: number;
  /** pollMicros of every other connection's main <-> worker rings. */
  pollMicros: number;
}

/**
 * Every preset's windows: the single source for the code and for docs/PERFORMANCE.md's table.
 * 'balanced' is the long-standing default (isolates poll, a client's worker polls after traffic);
 * 'latency' adds the peer window on both ends and a main <-> worker window for every connection;
 * 'spin' also busy-polls every ring.
 */
export const kIdlePresets: Readonly<Record<IdlePreset, Readonly<IdlePresetWindows>>> = {
  sleep: { spinMicros: 0, isolatePollMicros: 0, pollMicros: 0, peerPollMicros: 0, clientPollMicros: 0 },
  balanced: { spinMicros: 0, isolatePollMicros: 50, pollMicros: 0, peerPollMicros: 0, clientPollMicros: 100 },
  latency: { spinMicros: 0, isolatePollMicros: 50, pollMicros: 50, peerPollMicros: 200, clientPollMicros: 100 },
  spin: { spinMicros: 50, isolatePollMicros: 50, pollMicros: 50, peerPollMicros: 200, clientPollMicros: 100 },
};

/** NodeOptions.idle unless given. */
export const kDefaultIdle: IdlePreset = 'balanced';

const kTuningFields = ['spinMicros', 'pollMicros', 'peerPollMicros', 'clientPollMicros'] as const;

/** Checks NodeOptions.idle and idleTuning; throws RpcError INVALID_ARGUMENT on an unknown preset, field or a value outside 0..1e6. */
export function checkIdle(idle: unknown, tuning: unknown): { idle: IdlePreset; tuning: IdleTuning } {
  const preset = idle === undefined ? kDefaultIdle : idle;
  if (typeof preset !== 'string' || !Object.hasOwn(kIdlePresets, preset)) {
    throw new RpcError('INVALID_ARGUMENT', `idle must be one of ${Object.keys(kIdlePresets).map((k) => `'${k}'`).join(', ')}, got ${String(idle)}`);
  }
  if (tuning === undefined) return { idle: preset as IdlePreset, tuning: {} };
  if (tuning === null || typeof tuning !== 'object') throw new RpcError('INVALID_ARGUMENT', `idleTuning takes { ${kTuningFields.join(', ')} }, got ${String(tuning)}`);
  const out: IdleTuning = {};
  for (const [name, value] of Object.entries(tuning)) {
    if (!(kTuningFields as readonly string[]).includes(name)) throw new RpcError('INVALID_ARGUMENT', `idleTuning has no field ${name} (it takes ${kTuningFields.join(', ')})`);
    if (value === undefined) continue;
    if (!(typeof value === 'number' && value >= 0 && value <= 1_000_000)) throw new RpcError('INVALID_ARGUMENT', `idleTuning.${name} must be from 0 to 1e6, got ${String(value)}`);
    out[name as keyof IdleTuning] = value;
  }
  return { idle: preset as IdlePreset, tuning: out };
}

/**
 * The windows of a connection over a transport of kind `kind` (isolate or another) under `preset`
 * with `tuning`'s fields over it. An isolate has no peer side and no client worker: those are 0.
 */
export function idleWindows(kind: string, preset: IdlePreset, tuning: IdleTuning = {}): IdleWindows {
  const p = kIdlePresets[preset];
  const isolate = kind === 'isolate';
  return {
    spinMicros: tuning.spinMicros ?? p.spinMicros,
    pollMicros: tuning.pollMicros ?? (isolate ? p.isolatePollMicros : p.pollMicros),
    peerPollMicros: isolate ? 0 : (tuning.peerPollMicros ?? p.peerPollMicros),
    clientPollMicros: isolate ? 0 : (tuning.clientPollMicros ?? p.clientPollMicros),
  };
}

/** A ring reader's windows. */
export type RingWindows = Pick<IdleWindows, 'spinMicros' | 'pollMicros'>;

/** The widest windows any of `members` asks of a ring they share (none: sleep at once). */
export function widestWindows(members: Iterable<{ readonly ringWindows: RingWindows }>): RingWindows {
  let spinMicros = 0;
  let pollMicros = 0;
  for (const m of members) {
    spinMicros = Math.max(spinMicros, m.ringWindows.spinMicros);
    pollMicros = Math.max(pollMicros, m.ringWindows.pollMicros);
  }
  return { spinMicros, pollMicros };
}
