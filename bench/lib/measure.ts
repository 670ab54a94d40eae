/**
 * Timing helpers shared by every scenario: one-in-flight round trips, N-in-flight throughput,
 * and the median of several rounds. They know nothing of transports: a scenario is a `call`
 * that resolves when its reply has arrived.
 */

export interface RoundTripOptions {
  /** Calls made before measuring; their times are discarded (JIT, socket buffers, pools). */
  warmupMs: number;
  /** Measuring stops at the first completion after this long… */
  durationMs: number;
  /** …or after this many samples, whichever comes first. */
  maxSamples: number;
}

export interface RoundTripResult {
  medianUs: number;
  p99Us: number;
  samples: number;
}

export interface PipelinedOptions {
  /** Calls kept outstanding at every moment: each completion starts the next call. */
  inflight: number;
  warmupMs: number;
  durationMs: number;
}

export interface PipelinedResult {
  callsPerSec: number;
}

const now = process.hrtime.bigint;

function msToNs(ms: number): bigint {
  return BigInt(Math.round(ms * 1e6));
}

/** Sequential calls, one in flight; each sample is the time from a call's start to its reply. */
export async function roundTrip(
  call: () => Promise<unknown>,
  options: RoundTripOptions,
  keep?: (sortedUs: Float64Array) => void,
): Promise<RoundTripResult> {
  const warmupEnd = now() + msToNs(options.warmupMs);
  while (now() < warmupEnd) await call();

  // Preallocated so that collecting samples does not allocate while we measure.
  const samples = new Float64Array(options.maxSamples);
  let count = 0;
  const end = now() + msToNs(options.durationMs);
  let started = now();
  while (count < options.maxSamples) {
    await call();
    const finished = now();
    samples[count++] = Number(finished - started) / 1000;
    if (finished >= end) break;
    started = finished;
  }
  const sorted = samples.subarray(0, count).sort();
  keep?.(sorted);
  return { medianUs: quantile(sorted, 0.5), p99Us: quantile(sorted, 0.99), samples: count };
}

/**
 * Keeps exactly `inflight` calls outstanding; each completion starts the next call. The rate is
 * taken over completions between the end of warm-up and the end of the duration; calls still
 * outstanding then are drained before the promise settles, so the next scenario starts idle.
 * Rejects with the first call's error if any call fails.
 */
export function pipelined(
  call: () => Promise<unknown>,
  options: PipelinedOptions,
): Promise<PipelinedResult> {
  return new Promise((resolve, reject) => {
    const measureFrom = now() + msToNs(options.warmupMs);
    const measureTo = measureFrom + msToNs(options.durationMs);
    // 0: warming up, 1: measuring, 2: draining (no new calls).
    let phase = 0;
    let completed = 0;
    let outstanding = 0;
    let markCount = 0;
    let markTime = 0n;
    let callsPerSec = 0;
    let failed = false;
    let failure: unknown;

    const settleIfDrained = (): void => {
      if (outstanding !== 0) return;
      if (failed) reject(failure);
      else resolve({ callsPerSec });
    };
    // The clock is read on every completion rather than from a timer, so the bench still ends
    // when replies arrive in microtasks and the event loop never reaches its timer phase.
    const onReply = (): void => {
      outstanding--;
      completed++;
      if (phase !== 2) {
        const t = now();
        if (phase === 0 && t >= measureFrom) {
          phase = 1;
          markCount = completed;
          markTime = t;
        } else if (phase === 1 && t >= measureTo) {
          phase = 2;
          callsPerSec = (completed - markCount) / (Number(t - markTime) / 1e9);
        }
        if (phase !== 2) {
          launch();
          return;
        }
      }
      settleIfDrained();
    };
    const onError = (err: unknown): void => {
      outstanding--;
      if (!failed) {
        failed = true;
        failure = err;
      }
      phase = 2;
      settleIfDrained();
    };
    const launch = (): void => {
      outstanding++;
      let pending: Promise<unknown>;
      try {
        pending = call();
      } catch (err) {
        pending = Promise.reject(err);
      }
      pending.then(onReply, onError);
    };
    for (let i = 0; i < options.inflight; i++) launch();
  });
}

/** Runs `run` for `rounds` rounds in sequence and returns every round's result. */
export async function inRounds<T>(rounds: number, run: (round: number) => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  for (let round = 0; round < rounds; round++) results.push(await run(round));
  return results;
}

/** Median of each figure across rounds; `samples` is the total over all rounds. */
export function medianOfRoundTrips(rounds: readonly RoundTripResult[]): RoundTripResult {
  return {
    medianUs: median(rounds.map((r) => r.medianUs)),
    p99Us: median(rounds.map((r) => r.p99Us)),
    samples: rounds.reduce((sum, r) => sum + r.samples, 0),
  };
}

export function medianOfPipelined(rounds: readonly PipelinedResult[]): PipelinedResult {
  return { callsPerSec: median(rounds.map((r) => r.callsPerSec)) };
}

/** Median and p99 of every sample of several rounds taken together (not a median of the rounds' p99s). */
export function pooledRoundTrips(rounds: readonly Float64Array[]): RoundTripResult {
  const count = rounds.reduce((n, r) => n + r.length, 0);
  const all = new Float64Array(count);
  let at = 0;
  for (const r of rounds) {
    all.set(r, at);
    at += r.length;
  }
  all.sort();
  return { medianUs: quantile(all, 0.5), p99Us: quantile(all, 0.99), samples: count };
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  return quantile(Float64Array.from(values).sort(), 0.5);
}

/** `q` quantile of ascending `sorted`: the middle (mean of the two middles) for 0.5, else nearest rank. */
function quantile(sorted: Float64Array, q: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  if (q === 0.5) {
    const mid = n >> 1;
    return n % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  }
  return sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]!;
}

/** Rejects with `what stalled` when `promise` has not settled within `ms`. */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} stalled: not done within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}
