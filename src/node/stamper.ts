// What the node needs from accountability per step, as one interface: fix the commitment while
// the stage computes; after the output went on, check the upstream receipts (custody) as they
// arrive in their RECEIPTS message, sign this hop's receipt (the executor sends it on with the
// chain, docs/protocol.md §4.3), keep the step for auditors. The
// accountable implementation is src/accountability/node/stamper.ts (NodeStamper); NO_STAMPER
// is the node with accountability off. Which one a node gets is decided once, at start-up.

import type { SignedReceipt } from '../accountability/records/receipts.js';
import type { ArrivingStep, CustodyFailure, FinishedStep, ReexecReceiptFields } from '../accountability/node/stamper.js';
import type { ClaimResult } from '../accountability/node/slot-guard.js';
import type { OpenHeader } from '../protocol/messages.js';
import type { OdsiDomain } from '../accountability/records/eip712.js';

export interface StepStamper {
  /** false: no receipts, no commitments, and the node serves no audit re-execution */
  readonly accountable: boolean;
  /** the EIP-712 domain the stamper signs under (undefined when it signs nothing) */
  readonly domain?: OdsiDomain;
  /** get ready before the first step (audit protocol registered, crypto worker warmed) */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** a session opens: resolves once it may be signed for (slashing protection on file); rejects: refuse the session */
  openSession(open: OpenHeader): Promise<void>;
  /** before anything else: refuses a second, different input for a slot already taken (never sign twice) */
  claim(step: ArrivingStep): ClaimResult;
  /** custody check of a step's upstream receipts (after its output went on); a failure means this hop signs nothing for it */
  checkUpstream(step: ArrivingStep): Promise<CustodyFailure | undefined>;
  /** signs the step's commitment (before compute); never rejects */
  commit(step: ArrivingStep): Promise<void>;
  /** after the output went on, before the upstream receipts are checked: takes what the receipt needs that does not depend on them (signs nothing) */
  prepare?(step: FinishedStep): void;
  /** signs the step's receipt for the output bytes as sent; undefined when it could not */
  sign(step: FinishedStep): SignedReceipt | undefined;
  /** keeps the step for auditors, shown with `receipt` */
  retain(step: FinishedStep, receipt: SignedReceipt): void;
  /** signs the receipt of an audit re-execution (only called when accountable) */
  signReexecution(fields: ReexecReceiptFields): SignedReceipt;
}

/** The stamper of a node with accountability off: checks nothing, signs nothing. */
export const NO_STAMPER: StepStamper = {
  accountable: false,
  start: async () => {},
  stop: async () => {},
  openSession: async () => {},
  claim: () => ({ ok: true }),
  checkUpstream: async () => undefined,
  commit: async () => {},
  prepare: () => {},
  sign: () => undefined,
  retain: () => {},
  signReexecution: () => {
    throw new Error('accountability is off: this node signs no receipts');
  },
};
