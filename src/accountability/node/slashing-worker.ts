// Writer thread of slashing-protection.ts: its own connection to the protection file, so the
// durable write of a session (fsync with 'full') never blocks the node's main thread. Jobs run
// in order; each is answered once it is on file (or with the error that kept it off).
import { parentPort, workerData } from 'node:worker_threads';
import { JournalWriter, openProtectionFile, type JournalJob, type ProtectionSync } from './slashing-protection.js';

const { path, sync } = workerData as { path: string; sync: ProtectionSync };
// the file and its signer were checked by the opening thread; the writer only reopens it
const db = openProtectionFile(path, undefined, sync);
const writer = new JournalWriter(db);

parentPort?.on('message', (job: JournalJob) => {
  try {
    if (job.op === 'record') writer.record(job.session, job.at);
    else if (job.op === 'prune') writer.prune(job.before);
    else db.close();
    parentPort!.postMessage({ id: job.id });
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: (e as Error).message });
  }
});
