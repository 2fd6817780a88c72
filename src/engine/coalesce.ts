// A shared stage that many sessions call at once (the gateway's embedding and LM head): calls
// that arrive while a pass is running wait and then go together as one forwardBatch, so 16
// concurrent requests read the head's weights once per round instead of 16 times. With other
// sessions open, an idle stage starts its next pass only once the I/O in hand is handled
// (setImmediate), so the calls of one tick (a wave's results arrive in one read) make one pass
// rather than a pass of the first and one of the rest; a lone session's call runs at once. A
// session with a call already waiting goes in the following pass (a batch holds one step per
// session).

import type { SessionState, Stage, StageInput, StageOutput } from './types.js';

interface Waiting {
  input: StageInput;
  resolve(o: StageOutput): void;
  reject(e: unknown): void;
}

export class CoalescingStage implements Stage {
  private waiting: Waiting[] = [];
  private running = false;
  /** sessions that called and are not closed yet */
  private readonly open = new Set<string>();
  /** passes run and calls served by them (mean batch = calls / passes) */
  readonly stats = { passes: 0, calls: 0 };

  constructor(
    readonly inner: Stage,
    /** most calls in one pass */
    private readonly maxBatch = 64,
  ) {}

  get range() {
    return this.inner.range;
  }
  get config() {
    return this.inner.config;
  }
  get profile() {
    return this.inner.profile;
  }

  forward(input: StageInput): Promise<StageOutput> {
    this.open.add(input.sessionId);
    return new Promise<StageOutput>((resolve, reject) => {
      this.waiting.push({ input, resolve, reject });
      if (!this.running) {
        this.running = true;
        if (this.open.size > 1) setImmediate(() => void this.drain());
        else void this.drain();
      }
    });
  }

  forwardBatch(inputs: StageInput[]): Promise<StageOutput[]> {
    return Promise.all(inputs.map((i) => this.forward(i)));
  }

  private async drain(): Promise<void> {
    try {
      while (this.waiting.length > 0) {
        const batch: Waiting[] = [];
        const rest: Waiting[] = [];
        const ids = new Set<string>();
        for (const w of this.waiting) {
          if (batch.length < this.maxBatch && !ids.has(w.input.sessionId)) {
            ids.add(w.input.sessionId);
            batch.push(w);
          } else rest.push(w);
        }
        this.waiting = rest;
        await this.run(batch);
      }
    } finally {
      this.running = false;
    }
  }

  private async run(batch: Waiting[]): Promise<void> {
    this.stats.passes++;
    this.stats.calls += batch.length;
    const inner = this.inner;
    if (batch.length > 1 && inner.forwardBatch) {
      try {
        const outs = await inner.forwardBatch(batch.map((w) => w.input));
        batch.forEach((w, i) => w.resolve(outs[i]!));
        return;
      } catch {
        /* one bad input fails the pass: run them one by one so it fails alone */
      }
    }
    for (const w of batch) await inner.forward(w.input).then(w.resolve, w.reject);
  }

  sessionLength(sessionId: string): number {
    return this.inner.sessionLength(sessionId);
  }
  closeSession(sessionId: string): void {
    this.open.delete(sessionId);
    this.inner.closeSession(sessionId);
  }
  dispose(): Promise<void> {
    return this.inner.dispose();
  }
  exportSession(sessionId: string): SessionState | undefined | Promise<SessionState | undefined> {
    return this.inner.exportSession?.(sessionId);
  }
  importSession(sessionId: string, state: SessionState): void | Promise<void> {
    return this.inner.importSession?.(sessionId, state);
  }
}
