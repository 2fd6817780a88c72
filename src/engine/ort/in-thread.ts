// An ORT stage's requests answered on the calling thread, for a stage whose every call is too
// small to be worth a worker: the gateway's embedding (a row lookup and dequantization per token,
// no ORT session). Through a worker each such call costs two thread wake-ups, 0.3–0.4 ms on the
// development VM (bench/README.md, session 12), for microseconds of work.

import { replyError, type EngineCaller } from '../worker-client.js';
import { ortHandler, type WorkerRequest } from './handler.js';

export class InThreadOrt implements EngineCaller<WorkerRequest> {
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  onProgress?: (bytes: number) => void;
  private readonly handle = ortHandler((m) => {
    if ('progress' in m) return this.onProgress?.(m.progress);
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.ok) p.resolve(m.value);
    else p.reject(replyError(m));
  });

  call(req: WorkerRequest): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      void this.handle({ ...req, id });
    });
  }

  async terminate(): Promise<void> {}
}
