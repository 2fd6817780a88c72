// The node's one compute lock: token-path steps and audit re-executions run their forwards one
// at a time, in arrival order (honest timings, and the engine is CPU-bound anyway).

export class ComputeLock {
  private tail: Promise<void> = Promise.resolve();

  /** Runs `fn` once every earlier holder has finished; the lock is released when `fn` settles. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
