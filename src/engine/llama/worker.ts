// Worker-thread entry of a llama stage: one worker per stage, so llama_decode (synchronous on
// the calling thread) never blocks the caller's event loop. Messages are handled strictly in
// order; results go back with their buffers transferred, not copied.

import { parentPort } from 'node:worker_threads';
import { loadLlamaLib } from './ffi.js';
import { LlamaRunner, type RunnerSpec, type StepIn } from './runner.js';

export type WorkerRequest =
  | { type: 'load'; id: number; spec: RunnerSpec; libDir?: string }
  | { type: 'batch'; id: number; inputs: StepIn[] }
  | { type: 'close'; id: number; sessionId: string }
  | { type: 'dispose'; id: number };

export type WorkerReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; message: string; code?: string; lengths?: Record<string, number> };

const port = parentPort;
if (!port) throw new Error('worker.ts must run as a worker thread');

let runner: LlamaRunner | undefined;

port.on('message', (req: WorkerRequest) => {
  try {
    switch (req.type) {
      case 'load': {
        // the main thread loaded the library first (and owns llama.cpp's log callback)
        runner = new LlamaRunner(loadLlamaLib({ libDir: req.libDir, worker: true }), req.spec);
        port.postMessage({ id: req.id, ok: true, value: null } satisfies WorkerReply);
        return;
      }
      case 'batch': {
        if (!runner) throw new Error('stage not loaded');
        try {
          const outs = runner.stepBatch(req.inputs);
          port.postMessage({ id: req.id, ok: true, value: outs } satisfies WorkerReply, outs.map((o) => (o.hidden ?? o.logits)!.buffer as ArrayBuffer));
        } catch (e) {
          const err = e as Error & { code?: string };
          const lengths = runner.lengths(req.inputs.map((i) => i.sessionId));
          port.postMessage({ id: req.id, ok: false, message: err.message ?? String(e), code: err.code, lengths } satisfies WorkerReply);
        }
        return;
      }
      case 'close':
        runner?.closeSession(req.sessionId);
        port.postMessage({ id: req.id, ok: true, value: null } satisfies WorkerReply);
        return;
      case 'dispose':
        runner?.dispose();
        runner = undefined;
        port.postMessage({ id: req.id, ok: true, value: null } satisfies WorkerReply);
        return;
    }
  } catch (e) {
    const err = e as Error & { code?: string };
    port.postMessage({ id: req.id, ok: false, message: err.message ?? String(e), code: err.code } satisfies WorkerReply);
  }
});
