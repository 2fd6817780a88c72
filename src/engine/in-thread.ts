// An engine's requests answered on the calling thread instead of a worker thread: the same
// handler a worker runs (ort/handler.ts, llama/handler.ts), its replies matched to the calls.
// Through a worker every call costs two thread wake-ups (the worker's, then the caller's), 0.3–0.4
// ms on the development VM (bench/README.md, sessions 12 and 16); here it costs none, but the
// caller's event loop waits while the engine computes. Used for the gateway's embedding (a row
// lookup per token) and, with `computeThread: 'main'`, for a whole stage.

import { replyError, type EngineCaller, type EngineHandler } from './worker-client.js';

export class InThreadCaller<Req extends { type: string; id: number }> implements EngineCaller<Req> {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  onProgress?: (bytes: number) => void;
  private readonly handle: (req: Req) => unknown;

  constructor(handler: EngineHandler<Req>) {
    this.handle = handler((m) => {
      if ('progress' in m) return this.onProgress?.(m.progress);
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else p.reject(replyError(m));
    });
  }

  call(req: Req): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // after the caller's synchronous code, as a worker would: the call returns before it computes
      queueMicrotask(() => void this.handle({ ...req, id }));
    });
  }

  async terminate(): Promise<void> {}
}
