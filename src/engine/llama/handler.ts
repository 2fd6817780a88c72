// The llama engine's requests, each answered before the next: what worker.ts runs on its
// thread, and what the calling thread runs (../in-thread.ts) with computeThread 'main'. Results
// go back through `reply` with their buffers listed for transfer, not copied; a failed batch also
// reports its sessions' lengths after the failure.

import { loadLlamaLib } from './ffi.js';
import { LlamaRunner, type RunnerSpec, type StepIn } from './runner.js';
import { failedReply, type ReplyTo } from '../worker-client.js';

export type WorkerRequest =
  | { type: 'load'; id: number; spec: RunnerSpec; libDir?: string }
  | { type: 'batch'; id: number; inputs: StepIn[] }
  | { type: 'close'; id: number; sessionId: string }
  | { type: 'dispose'; id: number };

/** A request handler over one runner. `worker`: on a stage's own thread, which binds the library
 *  the main thread loaded first (and whose log callback stays the main thread's). */
export function llamaHandler(reply: ReplyTo, o: { worker: boolean }): (req: WorkerRequest) => void {
  let runner: LlamaRunner | undefined;
  return (req) => {
    try {
      switch (req.type) {
        case 'load':
          runner = new LlamaRunner(loadLlamaLib({ libDir: req.libDir, worker: o.worker }), req.spec);
          reply({ id: req.id, ok: true, value: null });
          return;
        case 'batch': {
          if (!runner) throw new Error('stage not loaded');
          try {
            const outs = runner.stepBatch(req.inputs);
            reply(
              { id: req.id, ok: true, value: outs },
              outs.map((o) => (o.hidden ?? o.logits)!.buffer as ArrayBuffer),
            );
          } catch (e) {
            reply(failedReply(req.id, e, { lengths: runner.lengths(req.inputs.map((i) => i.sessionId)) }));
          }
          return;
        }
        case 'close':
          runner?.closeSession(req.sessionId);
          reply({ id: req.id, ok: true, value: null });
          return;
        case 'dispose':
          runner?.dispose();
          runner = undefined;
          reply({ id: req.id, ok: true, value: null });
          return;
      }
    } catch (e) {
      reply(failedReply(req.id, e));
    }
  };
}
