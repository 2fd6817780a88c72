// What an injected misbehaviour is (tests, demos, chaos runs): a node started with `--fault`
// specs (refused unless ODSI_ALLOW_FAULTS=1) gets its stage and its stamper wrapped at
// start-up. A misbehaviour may act before a step computes (crash, stall, delay), rewrite the
// step's output (the dishonest kinds), wrap the node's StepStamper (forge, equivocate), wrap
// the signer of its ERRORs (frame, accuse) and/or wrap how its outputs go on (drop).
// The honest node code knows nothing of this.

import type { Identity } from '../identity/identity.js';
import type { OdsiDomain } from '../accountability/records/eip712.js';
import type { StepStamper } from '../node/stamper.js';
import type { SendOnward } from '../node/executor.js';
import type { ErrorSigner } from '../protocol/error-signature.js';

/** One forward of the node's stage, as a misbehaviour sees it. */
export interface StepView {
  sessionId: string;
  pos: number;
  nTokens: number;
  /** the rows the stage was given, [nTokens, dim] */
  input: Float32Array;
  /** token-path steps this node started before this one, all sessions (onsets `@N` count these) */
  nodeStep: number;
  /** a re-execution for an auditor (crash, stall and delay do not act on these) */
  audit: boolean;
}

/** What the node should do with the step: 'drop' means it is never answered. */
export type FaultAction = 'proceed' | 'drop';

/** What a stamper wrapper signs with (the node's key, the deployment's domain). */
export interface SigningContext {
  identity: Identity;
  domain: OdsiDomain;
}

/** One injected behaviour; every hook is optional. */
export interface Misbehaviour {
  readonly spec: string;
  /** before compute: may wait (delay), return 'drop' (never answer) or end the process */
  before?(v: StepView): Promise<FaultAction> | FaultAction;
  /** after compute: may replace the output */
  rewrite?(out: Float32Array, v: StepView): Float32Array;
  /** wraps the node's stamper (what it signs, what it shows auditors) */
  stamper?(inner: StepStamper, ctx: SigningContext): StepStamper;
  /** wraps the signer of the node's ERRORs (what it says went wrong, and whom it blames) */
  errors?(inner: ErrorSigner): ErrorSigner;
  /** wraps how the node's outputs and receipts go on to the next hop (what it passes on at all) */
  onward?(inner: SendOnward): SendOnward;
}

/** A fault kind: `name@arg` (sep '@') or `name:arg` (sep ':'); parses the argument. */
export interface FaultKind {
  sep: '@' | ':';
  /** e.g. 'crash@N' — shown in errors and --help */
  syntax: string;
  description: string;
  create(arg: string, spec: string): Misbehaviour;
}

export class FaultSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FaultSpecError';
  }
}

/** Fault injection was asked for without ODSI_ALLOW_FAULTS=1. */
export class FaultsNotAllowedError extends Error {
  constructor(specs: string[]) {
    super(
      `refusing to inject faults (${specs.join(', ')}): fault injection is for tests and demos only; set ODSI_ALLOW_FAULTS=1 to allow it`,
    );
    this.name = 'FaultsNotAllowedError';
  }
}

/** A non-negative integer argument. */
export function count(arg: string, spec: string, what: string): number {
  if (!/^\d+$/.test(arg)) throw new FaultSpecError(`fault "${spec}": ${what} must be a non-negative integer, got "${arg}"`);
  const n = Number(arg);
  if (!Number.isSafeInteger(n)) throw new FaultSpecError(`fault "${spec}": ${what} is too large`);
  return n;
}
