// StepStamper wrappers for the dishonest kinds that lie in what they sign (dishonest.ts):
// forge corrupts its signatures; equivocate shows auditors another output than the one it
// sent, under a second receipt for the same step.

import { encodeTensor, type OpenHeader } from '../protocol/messages.js';
import type { Hex, OdsiDomain } from '../accountability/records/eip712.js';
import { hashTensor, signReceipt, type SignedReceipt } from '../accountability/records/receipts.js';
import type { ArrivingStep, CustodyFailure, FinishedStep, ReexecReceiptFields } from '../accountability/node/stamper.js';
import type { StepStamper } from '../node/stamper.js';
import type { ClaimResult } from '../accountability/node/slot-guard.js';
import type { SigningContext } from './fault-kind.js';

/** Passes everything on to the wrapped stamper; subclasses override what they lie about. */
export class StamperDecorator implements StepStamper {
  constructor(protected readonly inner: StepStamper) {}

  get accountable(): boolean {
    return this.inner.accountable;
  }
  get domain(): OdsiDomain | undefined {
    return this.inner.domain;
  }
  start(): Promise<void> {
    return this.inner.start();
  }
  stop(): Promise<void> {
    return this.inner.stop();
  }
  openSession(open: OpenHeader): Promise<void> {
    return this.inner.openSession(open);
  }
  claim(step: ArrivingStep): ClaimResult {
    return this.inner.claim(step);
  }
  checkUpstream(step: ArrivingStep): Promise<CustodyFailure | undefined> {
    return this.inner.checkUpstream(step);
  }
  commit(step: ArrivingStep): Promise<void> {
    return this.inner.commit(step);
  }
  sign(step: FinishedStep): SignedReceipt | undefined {
    return this.inner.sign(step);
  }
  retain(step: FinishedStep, receipt: SignedReceipt): void {
    this.inner.retain(step, receipt);
  }
  signReexecution(fields: ReexecReceiptFields): SignedReceipt {
    return this.inner.signReexecution(fields);
  }
}

/** flip bits in r: still well formed, no longer recovers to the signer */
function corrupt(r: SignedReceipt): SignedReceipt {
  const b = r.signature.slice(2).split('');
  b[10] = b[10] === 'a' ? 'b' : 'a';
  b[11] = b[11] === 'c' ? 'd' : 'c';
  return { record: r.record, signature: `0x${b.join('')}` as Hex };
}

/** forge[@N]: from the node's N-th signed step on, every receipt (audits' too) carries a corrupted signature. */
export class ForgingStamper extends StamperDecorator {
  private signed = 0;

  constructor(
    inner: StepStamper,
    private readonly onset: number,
  ) {
    super(inner);
  }

  override sign(step: FinishedStep): SignedReceipt | undefined {
    const r = this.inner.sign(step);
    if (!r) return r;
    return this.signed++ >= this.onset ? corrupt(r) : r;
  }

  override signReexecution(fields: ReexecReceiptFields): SignedReceipt {
    const r = this.inner.signReexecution(fields);
    return this.signed >= this.onset ? corrupt(r) : r;
  }
}

/**
 * equivocate: the step went downstream noised, under the honest stamper's receipt; auditors
 * are shown the honest output under a second receipt for the same slot, linked like the first
 * and citing the same commitment.
 */
export class EquivocatingStamper extends StamperDecorator {
  constructor(
    inner: StepStamper,
    private readonly ctx: SigningContext,
    /** the honest output of a step this node equivocated on */
    private readonly honestOutput: (sessionId: string, pos: number) => Float32Array | undefined,
  ) {
    super(inner);
  }

  override retain(step: FinishedStep, receipt: SignedReceipt): void {
    const honest = this.honestOutput(step.open.sessionId, step.header.pos);
    if (!honest) return this.inner.retain(step, receipt);
    const output = encodeTensor(honest, step.header.dtype);
    const alt = signReceipt(this.ctx.identity, { ...receipt.record, outputHash: hashTensor(output) }, this.ctx.domain);
    this.inner.retain({ ...step, output }, alt);
  }
}
