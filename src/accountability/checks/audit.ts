// Selective redundancy: which steps get re-executed, and turning a re-execution into a
// signed verdict (plus evidence when it fails). The re-execution itself is the caller's:
// an auditor replays the committed input through its own stage (one batched prefill).

import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import type { Identity } from '../../identity/identity.js';
import { outputRows, type Hex, type OdsiDomain } from '../records/eip712.js';
import { CustodyError, requireValidReceipt } from './custody.js';
import type { AuditEvidence } from '../records/evidence.js';
import { checkSigned, hashTensor, signVerdict, type SignedReceipt, type SignedVerdict } from '../records/receipts.js';
import { compareOutputs, type ComparisonVerdict } from './tolerance.js';

/**
 * Whether a receipt is audited: sha256(receiptDigest ‖ beacon) read as a number in [0, 1)
 * is below `rate`. With a beacon published only after the receipt was signed, the node
 * cannot know at execution time which steps will be checked, and anyone can re-derive the
 * choice. (A VRF would also hide the choice from others until revealed; not needed here.)
 */
export function auditSelected(receiptDigest: Hex, beacon: Hex, rate: number): boolean {
  if (!(rate >= 0 && rate <= 1)) throw new RangeError(`audit rate must be in [0, 1], got ${rate}`);
  const h = sha256(new Uint8Array([...hexToBytes(receiptDigest.slice(2)), ...hexToBytes(beacon.slice(2))]));
  // top 52 bits → uniform double in [0, 1)
  const x = Number(BigInt(`0x${bytesToHex(h.subarray(0, 7))}`) >> 4n) / 2 ** 52;
  return x < rate;
}

/**
 * Audit rate from reputation: p = max(pMin, p0 · e^(−passes/scale)). New identities are
 * audited often (p0), proven ones rarely (pMin); a confirmed fault should reset passes.
 */
export function auditRate(passes: number, opts: { p0?: number; pMin?: number; scale?: number } = {}): number {
  const { p0 = 0.25, pMin = 0.02, scale = 200 } = opts;
  return Math.max(pMin, p0 * Math.exp(-Math.max(0, passes) / scale));
}

export interface AuditResult {
  comparison: ComparisonVerdict;
  verdict: SignedVerdict;
  /** present when the comparison failed: a signed verdict against the receipt */
  evidence?: AuditEvidence;
}

const toPpb = (x: number): number => (Number.isFinite(x) ? Math.min(Number.MAX_SAFE_INTEGER, Math.ceil(x * 1e9)) : Number.MAX_SAFE_INTEGER);

/**
 * Judges one audited step. `workerOutput` is the worker's output as f32 [nTokens, dim];
 * `workerWire` the exact bytes that were hashed into the receipt when they differ (f16/bf16
 * transport). `auditOutput` is the auditor's replay of the committed input.
 * Throws CustodyError('output_mismatch') when the bytes given are not the ones the worker
 * signed: then the comparison would prove nothing about the worker.
 */
export function auditReceipt(
  auditor: Identity,
  domain: OdsiDomain,
  a: {
    receipt: SignedReceipt;
    workerOutput: Float32Array;
    workerWire?: Float32Array | Uint16Array | Uint8Array;
    auditOutput: Float32Array;
    auditorProfile: string;
    dim: number;
    /** the audited receipt is a peer auditor's ReexecutionReceipt (default: a token-path ExecutionReceipt) */
    reexecution?: boolean;
  },
  now = Date.now(),
): AuditResult {
  const digest = a.reexecution ? requireValidReexecutionReceipt(a.receipt, domain) : requireValidReceipt(a.receipt, domain);
  const r = a.receipt.record;
  const wireHash = hashTensor(a.workerWire ?? a.workerOutput);
  if (wireHash.toLowerCase() !== r.outputHash.toLowerCase())
    throw new CustodyError(
      'output_mismatch',
      `the output bytes given (${wireHash.slice(0, 10)}…) are not the ones ${r.signer} signed (${r.outputHash.slice(0, 10)}…)`,
    );
  // a "+last" profile signs the last position's row alone: it is judged against that row of the replay
  const rows = outputRows(r);
  if (a.workerOutput.length !== rows * a.dim)
    throw new CustodyError('malformed', `worker output has ${a.workerOutput.length} values, receipt covers ${rows} rows × ${a.dim}`);
  const audited = rows < r.nTokens ? a.auditOutput.subarray(a.auditOutput.length - rows * a.dim) : a.auditOutput;
  const profilePair = `${r.profile}|${a.auditorProfile}`;
  const comparison = compareOutputs(a.workerOutput, audited, profilePair, { dim: a.dim });
  const verdict = signVerdict(
    auditor,
    {
      receiptHash: digest,
      auditOutputHash: hashTensor(audited),
      profilePair,
      distancePpb: toPpb(comparison.maxRelL2),
      tolerancePpb: toPpb(comparison.tau),
      pass: comparison.pass,
    },
    domain,
  );
  return comparison.pass
    ? { comparison, verdict }
    : {
        comparison,
        verdict,
        evidence: {
          kind: 'audit',
          receipt: a.receipt,
          ...(a.reexecution ? { receiptType: 'ReexecutionReceipt' as const } : {}),
          verdicts: [verdict],
          detectedAt: now,
        },
      };
}

function requireValidReexecutionReceipt(signed: SignedReceipt, domain: OdsiDomain): Hex {
  const v = checkSigned('ReexecutionReceipt', signed, domain);
  if (!v.ok) throw new CustodyError(v.malformed ? 'malformed' : 'bad_signature', v.reason);
  return v.digest;
}
