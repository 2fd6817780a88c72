// Upstream RECEIPTS of one session, by step (docs/protocol.md §4.3). The upstream hop sends a
// step's receipts after its STEP, so they usually arrive while this hop computes; the executor
// takes them once its output has gone on, and signs nothing before they are there and verified.
// Bounded: a peer cannot park more than MAX_WAITING_RECEIPTS payloads here.

/** RECEIPTS payloads one session may hold before anyone asks for them (a few steps ahead at most) */
export const MAX_WAITING_RECEIPTS = 16;

export class ReceiptInbox {
  private readonly arrived = new Map<number, Uint8Array>();
  private readonly waiting = new Map<number, { resolve: (p: Uint8Array | undefined) => void; timer: NodeJS.Timeout }>();
  private closed = false;

  /** A RECEIPTS payload for `step` arrived; false when it is refused (a duplicate, or too many waiting). */
  put(step: number, payload: Uint8Array): boolean {
    if (this.closed) return false;
    const w = this.waiting.get(step);
    if (w) {
      this.waiting.delete(step);
      clearTimeout(w.timer);
      w.resolve(payload);
      return true;
    }
    if (this.arrived.has(step) || this.arrived.size >= MAX_WAITING_RECEIPTS) return false;
    this.arrived.set(step, payload);
    return true;
  }

  /** The payload for `step`, once it arrives; undefined when it did not within `waitMs` (or the session closed). */
  take(step: number, waitMs: number): Promise<Uint8Array | undefined> {
    const p = this.arrived.get(step);
    if (p) {
      this.arrived.delete(step);
      return Promise.resolve(p);
    }
    if (this.closed || this.waiting.has(step)) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(step);
        resolve(undefined);
      }, waitMs);
      timer.unref?.();
      this.waiting.set(step, { resolve, timer });
    });
  }

  /** Drops what is held for steps before `step` (they were answered or failed). */
  forget(step: number): void {
    for (const k of this.arrived.keys()) if (k < step) this.arrived.delete(k);
  }

  close(): void {
    this.closed = true;
    this.arrived.clear();
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.resolve(undefined);
    }
    this.waiting.clear();
  }
}
