// The Ledger: odsi's control-plane economy (stake, slashing, client balances, per-epoch
// payments, reputation) behind one interface with two backends that apply the same rules:
//   - `sqlite:PATH`  embedded, zero set-up: an append-only hash-chained log of signed events,
//                    state derived by one deterministic apply(event) (src/ledger/sqlite/);
//   - `evm:RPC_URL@ADDRESS`  a Solidity contract on an EVM chain (many operators, no trusted one).
// The rules themselves (numbers and pure functions) are in rules.ts; docs/control-plane.md
// explains them. Nothing here is on the token path: gateways and nodes call the ledger
// asynchronously (the evidence queue in accountability/gateway/verdicts.ts is its seam).
//
// Conventions, the same for both backends:
//   - amounts are bigint in the smallest unit (1 ODSI = 10^18 units, rules.ts UNIT); in JSON
//     (status) they are decimal strings;
//   - an identity is the secp256k1 key that is already a node's peer id; it is named by its
//     EIP-55 address. A client account is just an address (it needs no key: deposits are made
//     for it, charges are settled against it by an authorised gateway);
//   - every write is signed by its submitter (a LedgerSigner: `Identity` fits) and either
//     accepted (typed result, state changed, event appended) or rejected with a code and a
//     reason — a rejected write stores nothing anywhere;
//   - time is the ledger's clock (injected into the SQLite backend, block time on a chain),
//     in unix seconds.

import type { Evidence } from '../accountability/records/evidence.js';
import type { Hex } from '../accountability/records/eip712.js';
import type { SignedVerdict } from '../accountability/records/receipts.js';
import type { LedgerParams, SlashKind } from './rules.js';

export type { Hex, SlashKind };
/** 0x + 40 hex digits; results and status use the EIP-55 checksummed form */
export type Address = `0x${string}`;

/** Who signs a write: an odsi `Identity` (src/identity/identity.ts) is one. */
export interface LedgerSigner {
  readonly address: Address;
  /** 32-byte secp256k1 secret */
  readonly secret: Uint8Array;
}

/** Why a write was refused. The refusal stores nothing (no event, no state change). */
export type RejectCode =
  | 'malformed' // input of the wrong shape (amount ≤ 0, bad address, evidence fields missing…)
  | 'bad_signature' // an event or a record inside evidence does not verify / recover to who it claims
  | 'unknown_identity' // the submitter or the accused is not registered
  | 'already_registered'
  | 'not_authorized' // operator-only or gateway-only write by someone else
  | 'slashed' // the identity was slashed: it may only unstake and withdraw
  | 'overdrawn' // wallet, stake, account balance or bond would go negative
  | 'below_min_stake' // a stake that leaves the identity above 0 but below rules' minStake
  | 'unbonding_not_over' // nothing matured yet (unbonding still running)
  | 'nothing_to_withdraw'
  | 'replayed_evidence' // evidence (or the slot it proves) was already used
  | 'unprovable_evidence' // well-formed, but does not prove what it claims on the ledger's own check
  | 'unknown_dispute'
  | 'dispute_closed'
  | 'epoch_order'; // settleEpoch / publishReputation for an epoch other than the next one

export interface Rejection {
  ok: false;
  code: RejectCode;
  reason: string;
}

/** An accepted write: the event's position in the log (SQLite) or transaction hash (EVM). */
export type Accepted<T extends object = object> = { ok: true; event: EventRef } & T;
export type LedgerResult<T extends object = object> = Accepted<T> | Rejection;

export interface EventRef {
  /** 1-based position in the ledger's event log (SQLite) or block number (EVM) */
  seq: number;
  /** hash of the event (SQLite: the chain hash after it; EVM: the transaction hash) */
  hash: Hex;
}

/** What one slash did, to the unit. slashed = reporterReward + burned. */
export interface SlashOutcome {
  accused: Address;
  kind: SlashKind;
  /** taken from stake first, then from unbonding entries (latest release first) */
  slashed: bigint;
  reporter: Address;
  reporterReward: bigint;
  burned: bigint;
  /** the id under which this evidence is now spent (replays of it are rejected) */
  evidenceId: Hex;
}

/** Result of submitEvidence. Audit evidence without a verdict quorum opens a dispute. */
export type EvidenceOutcome =
  | { outcome: 'slashed'; slash: SlashOutcome }
  | { outcome: 'dispute'; disputeId: Hex; accused: Address; bond: bigint; closesAt: number; guilty: number; innocent: number }
  /** enough signed "pass" verdicts: the accusation was frivolous, the bond went to the accused */
  | { outcome: 'frivolous'; accused: Address; bondForfeited: bigint; evidenceId: Hex };

/** One account's charge in an epoch (tokens served × price, computed by the gateway). */
export interface EpochCharge {
  account: Address;
  amount: bigint;
}

/**
 * One identity's credit in an epoch: its layer-steps weighted by rules.stepWeight (tight
 * deadlines and bottleneck positions weigh more; missed deadlines earn nothing). Units are
 * relative: the ledger splits (charges − fee) pro rata over all units of the batch.
 */
export interface EpochCredit {
  identity: Address;
  units: bigint;
  /** plain count of layer-steps behind `units` (for the record and reputation) */
  layerSteps: number;
}

export interface EpochBatch {
  /** must be the ledger's current epoch + 1 */
  epoch: number;
  charges: EpochCharge[];
  credits: EpochCredit[];
}

export interface EpochOutcome {
  epoch: number;
  charged: bigint;
  /** paid to identities; rewards + fees = charged, to the unit */
  rewards: bigint;
  fees: bigint;
  paid: { identity: Address; amount: bigint }[];
  /** disputes whose window had passed without a guilty quorum, closed by this settlement (bonds to the accused) */
  closedDisputes: Hex[];
}

/**
 * One identity's observed conduct in an epoch, published by a coordinator/gateway. Ratios
 * are in parts per million so both backends compute reputation with the same integers.
 */
export interface ReputationReport {
  identity: Address;
  deadlinesMet: number;
  deadlinesMissed: number;
  auditsPassed: number;
  auditsFailed: number;
  /** share of the epoch the identity answered pings/served, ppm */
  availabilityPpm: number;
  /** measured throughput relative to the best of its layer range this epoch, ppm */
  throughputPpm: number;
}

export interface UnbondingEntry {
  amount: string;
  /** unix seconds from which it may be withdrawn */
  releaseAt: number;
}

/** One identity in `odsi ledger status --json`; amounts are decimal strings of the smallest unit. */
export interface IdentityStatus {
  address: Address;
  role: 'node' | 'gateway';
  /** free tokens (withdrawn stake, rewards, faucet) */
  wallet: string;
  /** bonded stake (what routing weighs) */
  stake: string;
  /** sum of unbonding entries (still slashable) */
  unbonding: string;
  unbondingEntries: UnbondingEntry[];
  /** total ever taken by slashes */
  slashed: string;
  /** total rewards ever credited by epoch settlements */
  earned: string;
  /** in [0, 1] */
  reputation: number;
  reputationPpm: number;
  /** layer-steps credited so far (the record probation looks at) */
  layerSteps: number;
  slashes: { kind: SlashKind; amount: string; evidenceId: Hex; at: number }[];
  /** bond locked in open accusations */
  bonded: string;
  /** rules.isEligible: stake ≥ minStake and never slashed */
  eligible: boolean;
  registeredAt: number;
}

export interface AccountStatus {
  address: Address;
  balance: string;
  /** total ever charged */
  charged: string;
  deposited: string;
}

export interface LedgerTotals {
  /** every token ever created (faucet/genesis) */
  minted: string;
  wallets: string;
  stake: string;
  unbonding: string;
  accounts: string;
  bonds: string;
  /** protocol fees from settlements */
  fees: string;
  /** slashed and not paid to a reporter */
  burned: string;
  slashed: string;
  charged: string;
  rewards: string;
}

/** The JSON of `odsi ledger status --json`. */
export interface LedgerStatus {
  backend: 'sqlite' | 'evm';
  /** where it lives: file path or chain id + contract address */
  location: string;
  /** last settled epoch (0 = none yet) */
  epoch: number;
  /** last reputation epoch published */
  reputationEpoch: number;
  /** events in the log (SQLite) */
  events: number;
  head: Hex;
  params: Record<string, string | number>;
  identities: IdentityStatus[];
  accounts: AccountStatus[];
  disputes: { id: Hex; accused: Address; accuser: Address; bond: string; closesAt: number; guilty: number; innocent: number }[];
  totals: LedgerTotals;
}

export interface VerifyReport {
  ok: boolean;
  events: number;
  head: Hex;
  /** what is inconsistent (empty when ok) */
  problems: string[];
  ms: number;
}

export interface Ledger {
  readonly params: LedgerParams;
  /** the operator's address: may mint (faucet) and authorise gateways */
  readonly operator: Address;

  /** Registers `who` (its key signs the event: proof of possession). Nodes and gateways alike. */
  register(who: LedgerSigner, role?: 'node' | 'gateway'): Promise<LedgerResult>;
  /** Operator only: lets a registered gateway settle epochs and publish reputation. */
  authorize(operator: LedgerSigner, gateway: Address): Promise<LedgerResult>;
  /** Operator only: creates tokens in `to`'s wallet (genesis / faucet for tests and the demo). */
  mint(operator: LedgerSigner, to: Address, amount: bigint): Promise<LedgerResult>;

  /** wallet → stake. The resulting stake must be ≥ minStake. */
  stake(who: LedgerSigner, amount: bigint): Promise<LedgerResult<{ stake: bigint }>>;
  /** stake → an unbonding entry releasing at now + unbondingSec (still slashable meanwhile). */
  requestUnstake(who: LedgerSigner, amount: bigint): Promise<LedgerResult<{ releaseAt: number }>>;
  /** matured unbonding → wallet; `amount` omitted = all matured. */
  withdraw(who: LedgerSigner, amount?: bigint): Promise<LedgerResult<{ withdrawn: bigint }>>;
  /**
   * Credits a client account's balance: from `from`'s wallet, or — `from` omitted — from the
   * operator's faucet (the operator mints it; the demo and `odsi deposit` use this).
   */
  deposit(account: Address, amount: bigint, from?: LedgerSigner): Promise<LedgerResult<{ balance: bigint }>>;

  /**
   * Evidence from the accountability layer, checked by the ledger itself:
   * equivocation (two receipts, one slot, different outputs) and forged custody (a receipt
   * naming an upstream receipt whose output it contradicts) slash at once; audit evidence
   * (computation fault) needs `verdictQuorum` signed failing verdicts from staked identities
   * and locks `accuserBond` from the submitter's wallet until decided. Evidence is usable once.
   */
  submitEvidence(submitter: LedgerSigner, evidence: Evidence): Promise<LedgerResult<EvidenceOutcome>>;
  /** More signed verdicts for an open dispute; decides it once a quorum either way is reached. */
  addVerdicts(submitter: LedgerSigner, disputeId: Hex, verdicts: SignedVerdict[]): Promise<LedgerResult<EvidenceOutcome>>;

  /** An authorised gateway's batch for one epoch: charges in, rewards out + fees, to the unit. */
  settleEpoch(gateway: LedgerSigner, batch: EpochBatch): Promise<LedgerResult<EpochOutcome>>;
  /** An authorised gateway's reputation observations for one epoch (next epoch only); unreported identities decay. */
  publishReputation(gateway: LedgerSigner, epoch: number, reports: ReputationReport[]): Promise<LedgerResult<{ updated: number }>>;

  /** One identity's view (undefined when unknown): what routing and auditor choice read. */
  identity(address: Address): Promise<IdentityStatus | undefined>;
  account(address: Address): Promise<AccountStatus | undefined>;
  /** The highest settled epoch and the last reputation epoch: one small read (settlement). */
  epochs(): Promise<{ epoch: number; reputationEpoch: number }>;
  status(): Promise<LedgerStatus>;
  /**
   * EVM only: the identities named by the registry's events in blocks (after, after + maxBlocks],
   * capped at the chain head, and the block read up to — what a bounded stake view re-reads
   * instead of the whole registry (stake-view.ts). `epochs`: an epoch was settled or reputation
   * published in that range.
   */
  identityChanges?(after: bigint, maxBlocks: number): Promise<IdentityChanges>;
  /** Re-verifies everything (SQLite: every signature, the hash chain, and state = replay of the log). */
  verify(): Promise<VerifyReport>;
  close(): Promise<void>;
}

export interface IdentityChanges {
  /** the last block read (pass it as `after` next time) */
  upTo: bigint;
  /** the chain head when read (upTo < head: more to read) */
  head: bigint;
  /** distinct identities whose record changed, in order of first mention */
  addresses: Address[];
  epochs: boolean;
}

/** Unix seconds. Tests inject one they can move. */
export type Clock = () => number;
export const systemClock: Clock = () => Math.floor(Date.now() / 1000);

export const reject = (code: RejectCode, reason: string): Rejection => ({ ok: false, code, reason });
