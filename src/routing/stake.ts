// Stake and reputation as routing and auditing read them: a small synchronous read interface
// (StakeView) that the ledger implements (src/ledger/stake-view.ts, a refreshed snapshot) and
// that has an in-memory implementation here for tests and fixed deployments. Routing never
// imports the ledger: the numbers (minimum stake, probation, the weight formula) come from
// src/ledger/rules.ts through whoever implements the view.
//
// Who reads what:
//   CostPlanner   drops identities that are not eligible or are excluded, and among comparable
//                 candidates for one layer range picks one with probability ∝ weight — weight
//                 is linear in stake, so ten identities sharing stake S draw the same expected
//                 work as one identity with S (no Sybil gain); see pickByWeight
//   AuditScheduler  audits each identity at least at auditRate(address) (probation: high), and
//                 chooses auditors only among eligible, not excluded identities
//   PeerLimits    (on nodes) limitWeight: an excluded identity gets no sessions or streams
// Identities are named by their EVM address (the peer id's key); addressOfPeerId converts.

import { parsePeerId } from '../identity/peer-id.js';
import { addressFromPublicKey } from '../identity/identity.js';
import { randomSeed, seededUniform } from '../util/rng.js';

export interface StakeView {
  /** may be routed to and audit: enough bonded stake, never slashed, not excluded */
  eligible(address: string): boolean;
  /** relative routing weight ≥ 0 (stake × reputation factor × probation multiplier; 0 when not eligible) */
  weight(address: string): number;
  /** slashed, or excluded by whoever runs the view: never routed to, never an auditor, refused by nodes */
  excluded(address: string): boolean;
  /** the audit rate the rules give this identity (high on probation); undefined: no opinion */
  auditRate(address: string): number | undefined;
}

/** What the in-memory view knows of one identity. */
export interface StakeEntry {
  /** routing weight (0 or absent eligible: not eligible) */
  weight: number;
  eligible?: boolean;
  excluded?: boolean;
  auditRate?: number;
}

/** A fixed table of identities (tests, a statically configured gateway); unknown ones are not eligible. */
export class StaticStakeView implements StakeView {
  private readonly table = new Map<string, StakeEntry>();

  constructor(entries: Iterable<[string, StakeEntry]> = []) {
    for (const [a, e] of entries) this.set(a, e);
  }

  set(address: string, e: StakeEntry): void {
    this.table.set(address.toLowerCase(), { ...e });
  }

  /** exclude an identity from now on (e.g. convicted here, slash not yet on the ledger) */
  exclude(address: string): void {
    const e = this.table.get(address.toLowerCase()) ?? { weight: 0 };
    this.table.set(address.toLowerCase(), { ...e, excluded: true });
  }

  private get(address: string): StakeEntry | undefined {
    return this.table.get(address.toLowerCase());
  }
  eligible(address: string): boolean {
    const e = this.get(address);
    return !!e && !e.excluded && (e.eligible ?? e.weight > 0);
  }
  weight(address: string): number {
    return this.eligible(address) ? Math.max(0, this.get(address)!.weight) : 0;
  }
  excluded(address: string): boolean {
    return this.get(address)?.excluded === true;
  }
  auditRate(address: string): number | undefined {
    return this.get(address)?.auditRate;
  }
}

const addrCache = new Map<string, string | null>();
/** The EVM address of a secp256k1 peer id; undefined for other keys (they cannot hold stake). */
export function addressOfPeerId(peerId: string): string | undefined {
  let a = addrCache.get(peerId);
  if (a === undefined) {
    try {
      const pk = parsePeerId(peerId).publicKey;
      a = pk?.type === 'secp256k1' ? addressFromPublicKey(pk.raw) : null;
    } catch {
      a = null;
    }
    if (addrCache.size > 10_000) addrCache.clear();
    addrCache.set(peerId, a);
  }
  return a ?? undefined;
}

/** Whether a peer may be routed to or audit under `view` (a peer without a secp256k1 key never may). */
export function peerEligible(view: StakeView, peerId: string): boolean {
  const a = addressOfPeerId(peerId);
  return a !== undefined && view.eligible(a) && !view.excluded(a);
}

/**
 * A node's per-peer limit multiplier for a remote peer (PeerLimits.weight): 0 for an excluded
 * (slashed) identity, whose sessions and streams are refused; 2 for an eligible staked one;
 * 1 for everyone else — gateways and clients need no stake to be served.
 */
export function limitWeight(view: StakeView, peerId: string): number {
  const a = addressOfPeerId(peerId);
  if (a === undefined) return 1;
  if (view.excluded(a)) return 0;
  return view.eligible(a) ? 2 : 1;
}

/**
 * One of `items` with probability weight(i)/Σweight (uniform when every weight is 0). `u` is a
 * uniform draw in [0, 1).
 */
export function pickByWeight<T>(items: readonly T[], weight: (t: T) => number, u: number): T {
  const w = items.map((t) => Math.max(0, weight(t)));
  const total = w.reduce((s, x) => s + x, 0);
  if (!(total > 0)) return items[Math.min(items.length - 1, Math.floor(u * items.length))]!;
  let x = u * total;
  for (let i = 0; i < items.length; i++) {
    x -= w[i]!;
    if (x < 0) return items[i]!;
  }
  return items[items.length - 1]!;
}

/** a uniform source: seeded (reproducible) or fresh */
export const uniformSource = (seed?: number): (() => number) => seededUniform(seed ?? randomSeed());
