// Fault injection for `odsi node` (tests, demos, chaos runs): the table of fault kinds, spec
// parsing, and the start-up wiring that wraps a node's stage, stamper, ERROR signer and onward send in its
// misbehaviours. Refused unless ODSI_ALLOW_FAULTS=1, so a production node can never be
// started misbehaving by a stray flag.

import type { Stage } from '../engine/types.js';
import type { StepStamper } from '../node/stamper.js';
import type { SendOnward } from '../node/executor.js';
import type { ErrorSigner } from '../protocol/error-signature.js';
import { DISHONEST_KINDS } from './dishonest.js';
import { FaultSpecError, FaultsNotAllowedError, type FaultKind, type Misbehaviour, type SigningContext } from './fault-kind.js';
import { MisbehavingStage } from './misbehaving-stage.js';
import { OUTAGE_KINDS } from './outages.js';

/** Every fault kind, by name. */
export const FAULT_KINDS: Readonly<Record<string, FaultKind>> = { ...OUTAGE_KINDS, ...DISHONEST_KINDS };

/** The fault kinds, for help texts. */
export function faultKinds(): { name: string; syntax: string; description: string }[] {
  return Object.entries(FAULT_KINDS).map(([name, k]) => ({ name, syntax: k.syntax, description: k.description }));
}

/** Parse one spec such as `crash@5`, `stall@10`, `delay:200`, `zeros`. */
export function parseFaultSpec(spec: string): Misbehaviour {
  const s = spec.trim();
  const m = /^([a-z][a-z0-9-]*)(?:([@:])(.*))?$/.exec(s);
  const known = () =>
    faultKinds()
      .map((k) => k.syntax)
      .join(', ');
  if (!m) throw new FaultSpecError(`fault "${spec}" is not of the form kind@N or kind:ARG (known: ${known()})`);
  const k = Object.hasOwn(FAULT_KINDS, m[1]!) ? FAULT_KINDS[m[1]!] : undefined;
  if (!k) throw new FaultSpecError(`unknown fault kind "${m[1]}" in "${spec}" (known: ${known()})`);
  if (m[2] !== undefined && k.sep !== m[2]) throw new FaultSpecError(`fault "${spec}": write it as ${k.syntax}`);
  return k.create(m[3] ?? '', s);
}

/** A node's misbehaviours, as wrappers for its stage and its stamper. */
export interface NodeFaults {
  readonly specs: string[];
  stage(stage: Stage): Stage;
  stamper(stamper: StepStamper, ctx: SigningContext): StepStamper;
  errors(sign: ErrorSigner): ErrorSigner;
  onward(send: SendOnward): SendOnward;
}

/** Wraps a stage, a stamper, an ERROR signer and the onward send in the given misbehaviours (in spec order). */
export function nodeFaultsOf(faults: Misbehaviour[]): NodeFaults {
  return {
    specs: faults.map((f) => f.spec),
    stage: (stage) => new MisbehavingStage(stage, faults),
    stamper: (stamper, ctx) => faults.reduce((s, f) => f.stamper?.(s, ctx) ?? s, stamper),
    errors: (sign) => faults.reduce((s, f) => f.errors?.(s) ?? s, sign),
    onward: (send) => faults.reduce((s, f) => f.onward?.(s) ?? s, send),
  };
}

/**
 * The misbehaviours of a node from its --fault specs (comma lists allowed), or undefined when
 * there are none. Throws FaultsNotAllowedError unless allowFaults (ODSI_ALLOW_FAULTS=1),
 * FaultSpecError on bad specs.
 */
export function createNodeFaults(specs: readonly string[], allowFaults: boolean): NodeFaults | undefined {
  const list = specs
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  if (!list.length) return undefined;
  if (!allowFaults) throw new FaultsNotAllowedError(list);
  return nodeFaultsOf(list.map(parseFaultSpec));
}
