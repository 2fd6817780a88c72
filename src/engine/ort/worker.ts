// Worker-thread entry of an ORT stage: one worker per stage, so session.run (synchronous on
// the calling thread) never blocks the caller's event loop. Messages are handled strictly in
// order; results go back with their buffers transferred, not copied.

import { parentPort } from 'node:worker_threads';
import { OrtRunner, type LoadSpec, type StepIn } from './runner.js';
import type { SessionState } from '../types.js'; // kv-transfer

export type WorkerRequest =
  | { type: 'load'; id: number; spec: LoadSpec }
  | { type: 'step'; id: number; input: StepIn }
  | { type: 'batch'; id: number; inputs: StepIn[] }
  | { type: 'close'; id: number; sessionId: string }
  | { type: 'export'; id: number; sessionId: string } // kv-transfer
  | { type: 'import'; id: number; sessionId: string; state: SessionState } // kv-transfer
  | { type: 'dispose'; id: number };

export type WorkerReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; message: string; code?: string };

const port = parentPort;
if (!port) throw new Error('worker.ts must run as a worker thread');

let runner: OrtRunner | undefined;
let chain: Promise<void> = Promise.resolve();

port.on('message', (req: WorkerRequest) => {
  chain = chain.then(() => handle(req));
});

async function handle(req: WorkerRequest): Promise<void> {
  try {
    switch (req.type) {
      case 'load':
        // progress messages carry no id: the client passes them to its load callback
        runner = await OrtRunner.create(req.spec, (bytes) => port!.postMessage({ progress: bytes }));
        port!.postMessage({ id: req.id, ok: true, value: runner.info } satisfies WorkerReply);
        return;
      case 'step': {
        if (!runner) throw new Error('stage not loaded');
        const out = await runner.step(req.input);
        const buf = (out.hidden ?? out.logits)!;
        // ORT hands back fresh buffers per output: transfer them when they are not shared
        const transfer = buf.byteOffset === 0 && buf.buffer.byteLength === buf.byteLength && !(buf.buffer instanceof SharedArrayBuffer) ? [buf.buffer as ArrayBuffer] : [];
        port!.postMessage({ id: req.id, ok: true, value: out } satisfies WorkerReply, transfer);
        return;
      }
      case 'batch': {
        if (!runner) throw new Error('stage not loaded');
        const outs = await runner.stepBatch(req.inputs);
        const transfer = outs.map((o) => (o.hidden ?? o.logits)!.buffer as ArrayBuffer).filter((b, i, a) => a.indexOf(b) === i);
        port!.postMessage({ id: req.id, ok: true, value: outs } satisfies WorkerReply, transfer);
        return;
      }
      case 'close':
        runner?.closeSession(req.sessionId);
        port!.postMessage({ id: req.id, ok: true, value: null } satisfies WorkerReply);
        return;
      // kv-transfer: session KV caches out of / into the worker
      case 'export':
        port!.postMessage({ id: req.id, ok: true, value: runner?.exportSession(req.sessionId) ?? null } satisfies WorkerReply);
        return;
      case 'import':
        if (!runner) throw new Error('stage not loaded');
        runner.importSession(req.sessionId, req.state);
        port!.postMessage({ id: req.id, ok: true, value: null } satisfies WorkerReply);
        return;
      case 'dispose':
        await runner?.dispose();
        runner = undefined;
        port!.postMessage({ id: req.id, ok: true, value: null } satisfies WorkerReply);
        return;
    }
  } catch (e) {
    const err = e as Error & { code?: string };
    port!.postMessage({ id: req.id, ok: false, message: err.message ?? String(e), code: err.code } satisfies WorkerReply);
  }
}
