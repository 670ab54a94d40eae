/** A child process's stdout taken one line at a time, by test helpers that talk to child processes. */
import type { Readable } from 'node:stream';
import { createInterface } from 'node:readline';

export class LineQueue {
  readonly #lines: string[] = [];
  readonly #readers: Array<(line: string) => void> = [];
  readonly #ended: Promise<unknown>;

  /** `ended` settles when the process is gone (with its exit code or signal): no line comes after. */
  constructor(stdout: Readable, ended: Promise<unknown>) {
    this.#ended = ended;
    createInterface({ input: stdout }).on('line', (line) => {
      const reader = this.#readers.shift();
      if (reader) reader(line);
      else this.#lines.push(line);
    });
  }

  /** The lines not taken yet, removed from the queue. */
  takeAll(): string[] {
    return this.#lines.splice(0);
  }

  /**
   * The next line; rejects with `late()` when none comes within `timeoutMs`, or with
   * `gone(code)` when the process ends first.
   */
  next(timeoutMs: number, late: () => Error, gone: (code: unknown) => Error): Promise<string> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => done(late()), timeoutMs);
      const reader = (line: string) => done(undefined, line);
      const done = (err?: Error, line?: string) => {
        clearTimeout(timer);
        const i = this.#readers.indexOf(reader);
        if (i >= 0) this.#readers.splice(i, 1);
        if (err) reject(err);
        else resolve(line!);
      };
      this.#readers.push(reader);
      this.#ended.then((code) => {
        if (this.#readers.includes(reader)) done(gone(code));
      });
    });
  }
}
