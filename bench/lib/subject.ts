/** What a scenario measures: one connected client to one server child. */

export type TransportKind = 'tcp' | 'unix';

export interface Subject {
  /** Key in the results, e.g. "raw", "ours-worker"; unique per transport. */
  readonly key: string;
  /** Shown in the table, e.g. "ours worker handler". */
  readonly label: string;
  readonly transport: TransportKind;
  /** Sends a fresh 16-byte payload and resolves when its echo arrives. */
  call(): Promise<unknown>;
  /** Closes the client, then stops the server child; safe to call twice. */
  close(): Promise<void>;
}

/** Size of every request payload in the suite, so that all competitors move the same bytes. */
export const kPayloadBytes = 16;
