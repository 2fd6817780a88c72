// The stage's side of an engine worker thread (ORT, llama): numbered requests, replies matched to
// them, an engine error rebuilt with its code, and a worker that dies fails every pending call.
// The thread is unref'd while idle, so an idle stage never keeps the process alive.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { EngineError } from './types.js';

/** What an engine worker answers: a value, or an error with its EngineError code (and, llama, the sessions' lengths after it). */
export type EngineWorkerReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; message: string; code?: string; lengths?: Record<string, number> }
  | { progress: number };

/** The compiled worker `js` (a URL beside the engine's module); from TypeScript sources the .ts one, run through tsx. */
export function workerEntry(js: URL): [URL, { execArgv?: string[] }] {
  if (existsSync(fileURLToPath(js))) return [js, {}];
  return [new URL(js.href.replace(/\.js$/, '.ts')), { execArgv: ['--import', 'tsx'] }];
}

/** What a stage calls its engine through: a worker thread (EngineWorkerClient) or the calling thread (InThreadCaller). */
export interface EngineCaller<Req extends { type: string }> {
  call(req: Req, transfer?: ArrayBuffer[]): Promise<unknown>;
  terminate(): Promise<void>;
  /** told of the bytes of each tensor read while loading */
  onProgress?: (bytes: number) => void;
}

/** Where a handler's answers go: a reply to a request, or a load progress report (no id); buffers listed for transfer, not copied. */
export type ReplyTo = (m: EngineWorkerReply, transfer?: ArrayBuffer[]) => void;

/** An engine's request handler over its reply channel: what its worker thread runs, or the calling thread (in-thread.ts). */
export type EngineHandler<Req> = (reply: ReplyTo) => (req: Req) => unknown;

/** The failed reply to request `id`: the error's message and EngineError code (llama adds the sessions' lengths after it). */
export function failedReply(id: number, e: unknown, extra: { lengths?: Record<string, number> } = {}): EngineWorkerReply {
  const err = e as Error & { code?: string };
  return { id, ok: false, message: err.message ?? String(e), code: err.code, ...extra };
}

/** An engine error from a failed reply, rebuilt with its code (unknown codes: internal). */
export function replyError(r: { message: string; code?: string; lengths?: Record<string, number> }): EngineError {
  const code = r.code === 'bad_input' || r.code === 'capacity' || r.code === 'unknown_session' ? r.code : 'internal';
  return Object.assign(new EngineError(r.message, code), r.lengths ? { lengths: r.lengths } : {});
}

export class EngineWorkerClient<Req extends { type: string }> implements EngineCaller<Req> {
  private worker: Worker;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private dead?: Error;
  /** told of the bytes of each tensor the worker reads while loading */
  onProgress?: (bytes: number) => void;

  /** `label` names the worker in errors ("ORT worker failed: …") */
  constructor(js: URL, label: string) {
    this.worker = new Worker(...workerEntry(js));
    this.worker.unref();
    this.worker.on('message', (r: EngineWorkerReply) => {
      if ('progress' in r) return this.onProgress?.(r.progress);
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) this.worker.unref();
      if (r.ok) return p.resolve(r.value);
      p.reject(replyError(r));
    });
    const fail = (e: Error) => {
      this.dead = new EngineError(`${label} failed: ${e.message}`, 'internal');
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
  }

  call(req: Req, transfer: ArrayBuffer[] = []): Promise<unknown> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref(); // a call in flight keeps the process alive until answered
      this.worker.postMessage({ ...req, id }, transfer);
    });
  }

  async terminate(): Promise<void> {
    await this.worker.terminate();
  }
}
