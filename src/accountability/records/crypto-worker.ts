// Worker-thread side of crypto-pool.ts: verifies and signs odsi records off the main thread,
// so a node's upstream check and commitment signature run while its main thread computes.
import { parentPort, workerData } from 'node:worker_threads';
import { selectEcdsa, type BackendName } from '../../identity/ecdsa.js';
import type { OdsiDomain, PrimaryType } from './eip712.js';
import { typedDigestBytes, assertWellFormed } from './eip712.js';
import { checkSigned, signDigest } from './receipts.js';
import { bytesToHex } from '@noble/hashes/utils.js';

export type CryptoJob =
  | { id: number; op: 'verify'; primary: PrimaryType; signed: unknown; domain: OdsiDomain }
  | { id: number; op: 'sign'; primary: PrimaryType; record: unknown; secret: Uint8Array; domain: OdsiDomain };

/** one job's answer (crypto-pool.ts CryptoReply) */
function answer(job: CryptoJob): { id: number; result?: unknown; error?: string } {
  try {
    if (job.op === 'verify') return { id: job.id, result: checkSigned(job.primary, job.signed, job.domain) };
    assertWellFormed(job.primary, job.record);
    const d = typedDigestBytes(job.primary, job.record as never, job.domain);
    return { id: job.id, result: { digest: `0x${bytesToHex(d)}`, signature: signDigest(d, job.secret) } };
  } catch (e) {
    return { id: job.id, error: (e as Error).message };
  }
}

// the backend the process chose at start-up (crypto-pool.ts passes its name)
const chosen = (workerData as { ecdsa?: BackendName } | null)?.ecdsa;
if (chosen) selectEcdsa(chosen);

// the pool posts the jobs of one tick as one message, and gets their answers as one
parentPort?.on('message', (jobs: CryptoJob[]) => {
  parentPort!.postMessage(jobs.map(answer));
});
