/** A promise and the function that settles it, for waits settled from elsewhere (Node 20 has no Promise.withResolvers). */
export interface Deferred {
  readonly promise: Promise<void>;
  resolve(): void;
}

export function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
