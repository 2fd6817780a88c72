// Upstream RECEIPTS of one session, by step (docs/protocol.md §4.3). The upstream hop sends a
// step's receipts after its STEP, so they usually arrive while this hop computes; the executor
// takes them once its output has gone on, and signs nothing before they are there and verified.
// Bounded: a peer cannot park more than MAX_WAITING_RECEIPTS payloads here, and a step whose
// receipts never come is given up (take resolves undefined) at its deadline.
//
// No timer per step: a take that has to wait records its deadline, and one timer per inbox
// sweeps the overdue ones. That timer is armed when a wait begins and none is armed; when it
// fires it gives up the waits past their deadline and re-arms itself for the earliest one left
// (or stays off when none is left). Receipts that arrive in time resolve their wait without
// touching it, so in steady state a session arms about one timer per wait period, not one per
// token (the session's idle timer in sessions.ts works the same way).

import { DeadlineTimer } from '../util/deadline-timer.js';

/** RECEIPTS payloads one session may hold before anyone asks for them (a few steps ahead at most) */
export const MAX_WAITING_RECEIPTS = 16;

interface Waiter {
  resolve: (p: Uint8Array | undefined) => void;
  /** performance.now() after which the wait is given up */
  deadline: number;
}

export class ReceiptInbox {
  private readonly arrived = new Map<number, Uint8Array>();
  private readonly waiting = new Map<number, Waiter>();
  private closed = false;
  /** the sweep: one timer for every wait, armed at the earliest deadline */
  private readonly timer = new DeadlineTimer((now) => this.sweep(now));

  /** A RECEIPTS payload for `step` arrived; false when it is refused (a duplicate, or too many waiting). */
  put(step: number, payload: Uint8Array): boolean {
    if (this.closed) return false;
    const w = this.waiting.get(step);
    if (w) {
      this.waiting.delete(step);
      w.resolve(payload);
      return true;
    }
    if (this.arrived.has(step) || this.arrived.size >= MAX_WAITING_RECEIPTS) return false;
    this.arrived.set(step, payload);
    return true;
  }

  /**
   * The payload for `step`, once it arrives; undefined when it did not within `waitMs` (given up
   * by the sweep, at most a few ms late) or the session closed.
   */
  take(step: number, waitMs: number): Promise<Uint8Array | undefined> {
    const p = this.arrived.get(step);
    if (p) {
      this.arrived.delete(step);
      return Promise.resolve(p);
    }
    if (this.closed || this.waiting.has(step)) return Promise.resolve(undefined);
    const deadline = performance.now() + waitMs;
    return new Promise((resolve) => {
      this.waiting.set(step, { resolve, deadline });
      // a timer already armed to fire by this deadline serves this wait too
      this.timer.by(deadline);
    });
  }

  /** Drops what is held for steps before `step` (they were answered or failed). */
  forget(step: number): void {
    for (const k of this.arrived.keys()) if (k < step) this.arrived.delete(k);
  }

  close(): void {
    this.closed = true;
    this.arrived.clear();
    this.timer.cancel();
    for (const w of this.waiting.values()) w.resolve(undefined);
    this.waiting.clear();
  }

  /** waits pending (for tests and metrics) */
  get waits(): number {
    return this.waiting.size;
  }

  /** whether the sweep timer is armed, and how many times it was (for tests) */
  get armed(): boolean {
    return this.timer.armed;
  }
  get timersArmed(): number {
    return this.timer.armedCount;
  }

  /** Gives up the waits past their deadline; the earliest one left is next. */
  private sweep(now: number): number {
    let next = Infinity;
    for (const [step, w] of this.waiting) {
      if (w.deadline <= now) {
        this.waiting.delete(step);
        w.resolve(undefined);
      } else if (w.deadline < next) next = w.deadline;
    }
    return next;
  }
}
