// The ORT engine's requests, answered in order: what worker.ts runs on its thread, and what the
// calling thread runs (../in-thread.ts) for an embedding-only stage or with computeThread 'main'.
// Results go back through `reply` with their buffers listed for transfer, not copied.

import { OrtRunner, type LoadSpec, type StepIn } from './runner.js';
import type { SessionState } from '../types.js'; // kv-transfer
import { failedReply, type ReplyTo } from '../worker-client.js';

export type WorkerRequest =
  | { type: 'load'; id: number; spec: LoadSpec }
  | { type: 'step'; id: number; input: StepIn }
  | { type: 'batch'; id: number; inputs: StepIn[] }
  | { type: 'close'; id: number; sessionId: string }
  | { type: 'export'; id: number; sessionId: string } // kv-transfer
  | { type: 'import'; id: number; sessionId: string; state: SessionState } // kv-transfer
  | { type: 'dispose'; id: number };

/** A request handler over one runner; call it with each request in turn (it chains them). */
export function ortHandler(reply: ReplyTo): (req: WorkerRequest) => Promise<void> {
  let runner: OrtRunner | undefined;
  let chain: Promise<void> = Promise.resolve();
  const handle = async (req: WorkerRequest): Promise<void> => {
    try {
      switch (req.type) {
        case 'load':
          // progress messages carry no id: the client passes them to its load callback
          runner = await OrtRunner.create(req.spec, (bytes) => reply({ progress: bytes }));
          reply({ id: req.id, ok: true, value: runner.info });
          return;
        case 'step': {
          if (!runner) throw new Error('stage not loaded');
          const out = await runner.step(req.input);
          const buf = (out.hidden ?? out.logits)!;
          // ORT hands back fresh buffers per output: transfer them when they are not shared
          const transfer =
            buf.byteOffset === 0 && buf.buffer.byteLength === buf.byteLength && !(buf.buffer instanceof SharedArrayBuffer)
              ? [buf.buffer as ArrayBuffer]
              : [];
          reply({ id: req.id, ok: true, value: out }, transfer);
          return;
        }
        case 'batch': {
          if (!runner) throw new Error('stage not loaded');
          const outs = await runner.stepBatch(req.inputs);
          const transfer = outs.map((o) => (o.hidden ?? o.logits)!.buffer as ArrayBuffer).filter((b, i, a) => a.indexOf(b) === i);
          reply({ id: req.id, ok: true, value: outs }, transfer);
          return;
        }
        case 'close':
          runner?.closeSession(req.sessionId);
          reply({ id: req.id, ok: true, value: null });
          return;
        // kv-transfer: session KV caches out of / into the runner
        case 'export':
          reply({ id: req.id, ok: true, value: runner?.exportSession(req.sessionId) ?? null });
          return;
        case 'import':
          if (!runner) throw new Error('stage not loaded');
          runner.importSession(req.sessionId, req.state);
          reply({ id: req.id, ok: true, value: null });
          return;
        case 'dispose':
          await runner?.dispose();
          runner = undefined;
          reply({ id: req.id, ok: true, value: null });
          return;
      }
    } catch (e) {
      reply(failedReply(req.id, e));
    }
  };
  return (req) => (chain = chain.then(() => handle(req)));
}
