/**
 * The bench's progress bar, on stderr. Each section has an estimated duration (from its config);
 * the bar fills by sections done plus the running section's elapsed share of its estimate (capped
 * short of done, so a slow section never shows 100%). On a terminal it redraws one line in place;
 * otherwise (CI, a pipe) each message is a plain line with the percentage in front.
 */
export interface SectionEstimate {
  name: string;
  /** Expected seconds, for the bar's proportions only. */
  seconds: number;
}

const kWidth = 30;

export class Progress {
  readonly #sections: SectionEstimate[];
  readonly #total: number;
  readonly #tty: boolean;
  readonly #started = performance.now();
  #index = -1;
  #sectionStarted = 0;
  #last = '';
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(sections: SectionEstimate[], stream: NodeJS.WriteStream = process.stderr) {
    this.#sections = sections;
    this.#total = sections.reduce((sum, s) => sum + s.seconds, 0) || 1;
    this.#tty = stream.isTTY === true;
  }

  /** The named section starts (sections not in the plan are shown but weigh nothing). */
  section(name: string): void {
    const i = this.#sections.findIndex((s) => s.name === name);
    if (i >= 0) this.#index = i;
    this.#sectionStarted = performance.now();
    if (this.#tty && this.#timer === undefined) {
      // Redraw once a second, so the bar moves during long rounds with nothing to say.
      this.#timer = setInterval(() => this.#draw(), 1000);
      this.#timer.unref();
    }
  }

  /** A message from the running section. */
  note(line: string): void {
    this.#last = line;
    if (this.#tty) this.#draw();
    else process.stderr.write(`[bench ${String(Math.floor(this.fraction() * 100)).padStart(3)}% ${elapsed(performance.now() - this.#started)}] ${line}\n`);
  }

  /** Done: clears the bar line. */
  finish(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#tty) process.stderr.write(`\r\x1b[2K[bench] done in ${elapsed(performance.now() - this.#started)}\n`);
  }

  /** Share of the planned work done, 0 … 1. */
  fraction(): number {
    if (this.#index < 0) return 0;
    const before = this.#sections.slice(0, this.#index).reduce((sum, s) => sum + s.seconds, 0);
    const current = this.#sections[this.#index].seconds;
    const within = Math.min(0.95, (performance.now() - this.#sectionStarted) / 1000 / current);
    return Math.min(1, (before + within * current) / this.#total);
  }

  #draw(): void {
    const f = this.fraction();
    const filled = Math.round(f * kWidth);
    const bar = `${'#'.repeat(filled)}${'.'.repeat(kWidth - filled)}`;
    const columns = process.stderr.columns ?? 100;
    const text = `[${bar}] ${String(Math.floor(f * 100)).padStart(3)}% ${elapsed(performance.now() - this.#started)}  ${this.#last}`;
    process.stderr.write(`\r\x1b[2K${text.slice(0, columns - 1)}`);
  }
}

function elapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}
