// Worker-thread entry of an ORT stage: one worker per stage, so session.run (synchronous on
// the calling thread) never blocks the caller's event loop. Messages are handled strictly in
// order (handler.ts); results go back with their buffers transferred, not copied.

import { parentPort } from 'node:worker_threads';
import { ortHandler, type WorkerRequest } from './handler.js';

const port = parentPort;
if (!port) throw new Error('worker.ts must run as a worker thread');

const handle = ortHandler((m, transfer = []) => port.postMessage(m, transfer));
port.on('message', (req: WorkerRequest) => void handle(req));
