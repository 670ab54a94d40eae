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
