// Worker-thread side of crypto-pool.ts: verifies and signs odsi records off the main thread,
// so a node's upstream check and commitment signature run while its main thread computes.
import { parentPort } from 'node:worker_threads';
import type { OdsiDomain, PrimaryType } from './eip712.js';
import { typedDigestBytes, assertWellFormed } from './eip712.js';
import { checkSigned, signDigest } from './receipts.js';
import { bytesToHex } from '@noble/hashes/utils.js';

export type CryptoJob =
  | { id: number; op: 'verify'; primary: PrimaryType; signed: unknown; domain: OdsiDomain }
  | { id: number; op: 'sign'; primary: PrimaryType; record: unknown; secret: Uint8Array; domain: OdsiDomain };

parentPort?.on('message', (job: CryptoJob) => {
  try {
    if (job.op === 'verify') {
      parentPort!.postMessage({ id: job.id, result: checkSigned(job.primary, job.signed, job.domain) });
    } else {
      assertWellFormed(job.primary, job.record);
      const d = typedDigestBytes(job.primary, job.record as never, job.domain);
      parentPort!.postMessage({ id: job.id, result: { digest: `0x${bytesToHex(d)}`, signature: signDigest(d, job.secret) } });
    }
  } catch (e) {
    parentPort!.postMessage({ id: job.id, error: (e as Error).message });
  }
});
