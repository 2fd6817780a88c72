// Worker-thread entry of a llama stage: one worker per stage, so llama_decode (synchronous on
// the calling thread) never blocks the caller's event loop. Messages are handled strictly in
// order (handler.ts); results go back with their buffers transferred, not copied.

import { parentPort } from 'node:worker_threads';
import { llamaHandler, type WorkerRequest } from './handler.js';

const port = parentPort;
if (!port) throw new Error('worker.ts must run as a worker thread');

const handle = llamaHandler((m, transfer = []) => port.postMessage(m, transfer), { worker: true });
port.on('message', (req: WorkerRequest) => handle(req));
