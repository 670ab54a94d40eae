/** What a scenario measures: one connected client to one server child. */

/** The socket transports, for which a raw `net` ping-pong baseline exists. */
export type SocketKind = 'tcp' | 'unix';
export type TransportKind = SocketKind | 'shm';

export interface Subject {
  /** Key in the results, e.g. "raw", "ours-worker"; unique per transport. */
  readonly key: string;
  /** Shown in the table, e.g. "ours worker handler". */
  readonly label: string;
  readonly transport: TransportKind;
  /** Sends a fresh 16-byte payload and resolves when its echo arrives. */
  call(): Promise<unknown>;
  /** Sends `payload` (which the caller may reuse unless it comes back detached) and resolves with the echo. */
  callBytes?(payload: Uint8Array): Promise<unknown>;
  /** Closes the client, then stops the server child; safe to call twice. */
  close(): Promise<void>;
}

/** Size of every request payload in the suite, so that all competitors move the same bytes. */
export const kPayloadBytes = 16;
