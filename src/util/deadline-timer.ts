// One timer for many deadlines (performance.now() times): armed at the earliest one, and when it
// fires the owner's sweep handles what is due and names the next deadline, for which it re-arms.
// The steps of a route (route-stage.ts) and the receipt waits of a session (receipt-inbox.ts)
// each use one, so no step sets or clears a timer of its own.

export class DeadlineTimer {
  private timer?: NodeJS.Timeout;
  private at = Infinity;
  /** how many times a timer was armed (tests) */
  armedCount = 0;

  /** `sweep(now)` handles what is due at `now` and returns the next deadline (Infinity: none) */
  constructor(private readonly sweep: (now: number) => number) {}

  /** The sweep runs by `deadline` at the latest (a timer already armed to fire by then serves it). */
  by(deadline: number): void {
    if (deadline >= this.at) return;
    this.cancel();
    this.armedCount++;
    this.at = deadline;
    // timers run on the event loop's cached clock, which may lag performance.now(): a sweep that
    // comes early finds nothing due and re-arms for what is left
    this.timer = setTimeout(() => this.fire(), Math.max(1, Math.ceil(deadline - performance.now()) + 1));
    this.timer.unref?.(); // never what keeps a process up
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.at = Infinity;
  }

  get armed(): boolean {
    return this.timer !== undefined;
  }

  private fire(): void {
    this.timer = undefined;
    this.at = Infinity;
    const next = this.sweep(performance.now());
    if (next !== Infinity) this.by(next);
  }
}
