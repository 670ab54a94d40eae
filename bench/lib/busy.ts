/**
 * The busy host's main thread, for every server child of the busy-host section: blocked in CPU
 * slices of `sliceMs`, letting the event loop turn once (I/O, timers, immediates) between slices,
 * as a host doing CPU-heavy work in chunks does. Returns a function that stops it.
 */
export function busySlices(sliceMs: number): () => void {
  let busy = true;
  const spin = (): void => {
    if (!busy) return;
    const end = performance.now() + sliceMs;
    while (performance.now() < end) {
      // busy
    }
    setImmediate(spin);
  };
  setImmediate(spin);
  return () => {
    busy = false;
  };
}

/** `--busy-slice-ms <ms>` as parsed by node:util parseArgs: 0 when absent. */
export function sliceMsOf(value: string | undefined): number {
  const ms = value === undefined ? 0 : Number(value);
  if (!(ms >= 0)) throw new Error(`--busy-slice-ms takes a number of ms, got ${value}`);
  return ms;
}

/**
 * A server child's report(): prints one JSON line; once its address is out (a line without
 * `error`), a `--busy-slice-ms` above 0 starts keeping this main thread busy.
 */
export function busyReporter(sliceMsArg: string | undefined): (line: object) => void {
  let started = false;
  return (line) => {
    process.stdout.write(`${JSON.stringify(line)}\n`);
    const sliceMs = sliceMsOf(sliceMsArg);
    if (sliceMs > 0 && !('error' in line) && !started) {
      started = true;
      busySlices(sliceMs);
    }
  };
}
