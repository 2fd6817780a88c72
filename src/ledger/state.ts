// The ledger's state and the ONE deterministic `apply(state, signedEvent)` that derives it
// from the event log. The SQLite backend runs it on every write (inside the write's
// transaction) and again on open and in verify() over the whole log; the contract implements
// the same transitions in Solidity. apply either rejects (with a code and a reason, having
// changed nothing) or applies the event completely. It reads no clock and no randomness:
// time is the event's.

import { toChecksumAddress } from '../identity/identity.js';
import { ZERO_HASH, type Hex, type OdsiDomain } from '../accountability/records/eip712.js';
import type { Evidence } from '../accountability/records/evidence.js';
import type {
  AccountStatus,
  Address,
  EpochOutcome,
  EvidenceOutcome,
  IdentityStatus,
  LedgerStatus,
  RejectCode,
  Rejection,
  SlashOutcome,
} from './ledger.js';
import {
  conductScore,
  reputationAt,
  isEligible,
  makeParams,
  matured,
  paramsFromJson,
  paramsJson,
  slashAmount,
  splitPayments,
  splitSlash,
  takeMatured,
  takeSlash,
  updateReputation,
  type LedgerParams,
  type SlashKind,
  type Unbonding,
} from './rules.js';
import { checkEventSignature, EVENT_KINDS, type EventBodies, type EventKind, type SignedEvent } from './events.js';
import { checkAudited, checkSelfProving, tallyVerdicts } from './evidence-check.js';

export interface IdentityRec {
  address: Address;
  role: 'node' | 'gateway';
  /** may settle epochs and publish reputation */
  authorized: boolean;
  stake: bigint;
  unbonding: Unbonding[];
  slashedTotal: bigint;
  /** slashed at least once: excluded from routing, auditing, rewards, and from staking again */
  isSlashed: boolean;
  earned: bigint;
  reputationPpm: number;
  /** reputation epoch `reputationPpm` is as of (decay since then is applied lazily) */
  reputationEpoch: number;
  layerSteps: number;
  slashes: { kind: SlashKind; amount: bigint; evidenceId: Hex; at: number }[];
  bonded: bigint;
  registeredAt: number;
  /** last epoch this identity settled as a gateway */
  settledEpoch: number;
}

export interface AccountRec {
  address: Address;
  balance: bigint;
  charged: bigint;
  deposited: bigint;
}

export interface DisputeRec {
  id: Hex;
  evidenceId: Hex;
  receiptDigest: Hex;
  accused: Address;
  accuser: Address;
  bond: bigint;
  openedAt: number;
  closesAt: number;
  guilty: Address[];
  innocent: Address[];
}

export interface Totals {
  minted: bigint;
  fees: bigint;
  burned: bigint;
  slashed: bigint;
  charged: bigint;
  rewards: bigint;
}

type Table = 'identities' | 'wallets' | 'accounts' | 'evidence' | 'disputes' | 'nonces' | 'globals';

export class LedgerState {
  /** chain hash after genesis: every later event names it */
  ledger: Hex = ZERO_HASH;
  chainId = 0;
  operator: Address = '0x0000000000000000000000000000000000000000';
  params: LedgerParams = makeParams();
  readonly identities = new Map<string, IdentityRec>();
  readonly wallets = new Map<string, bigint>();
  readonly accounts = new Map<string, AccountRec>();
  /** spent evidence ids → unix time spent */
  readonly evidence = new Map<string, number>();
  /** open disputes by id */
  readonly disputes = new Map<string, DisputeRec>();
  readonly nonces = new Map<string, number>();
  epoch = 0;
  reputationEpoch = 0;
  totals: Totals = { minted: 0n, fees: 0n, burned: 0n, slashed: 0n, charged: 0n, rewards: 0n };
  /** keys changed since the last takeDirty(), per table (a backend persists just these) */
  private dirty = new Map<Table, Set<string>>();

  get domain(): OdsiDomain {
    return { chainId: this.chainId };
  }
  get hasGenesis(): boolean {
    return this.chainId !== 0;
  }

  touch(t: Table, key: string): void {
    let s = this.dirty.get(t);
    if (!s) this.dirty.set(t, (s = new Set()));
    s.add(key);
  }
  takeDirty(): Map<Table, Set<string>> {
    const d = this.dirty;
    this.dirty = new Map();
    return d;
  }

  wallet(a: string): bigint {
    return this.wallets.get(a.toLowerCase()) ?? 0n;
  }
  setWallet(a: string, v: bigint): void {
    this.wallets.set(a.toLowerCase(), v);
    this.touch('wallets', a.toLowerCase());
  }
  identity(a: string): IdentityRec | undefined {
    return this.identities.get(a.toLowerCase());
  }
  touchIdentity(r: IdentityRec): void {
    this.touch('identities', r.address.toLowerCase());
  }
  /** reputation of `r` as of reputation epoch `epoch` (rules.reputationAt: lazy decay) */
  reputationAt(r: IdentityRec, epoch: number): number {
    return reputationAt(r.reputationPpm, r.reputationEpoch, epoch, this.params);
  }
  eligible(r: IdentityRec): boolean {
    return isEligible(r.stake, r.isSlashed, this.params);
  }
}

// ---------------------------------------------------------------- parsing helpers

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const MAX_UINT256 = (1n << 256n) - 1n;
const MAX_ITEMS = 10_000;

class Reject extends Error {
  constructor(
    readonly code: RejectCode,
    message: string,
  ) {
    super(message);
  }
}
const no = (code: RejectCode, reason: string): never => {
  throw new Reject(code, reason);
};

function addr(v: unknown, what: string): Address {
  if (typeof v !== 'string' || !ADDRESS.test(v)) no('malformed', `${what}: expected a 0x-prefixed 20-byte address`);
  return toChecksumAddress(v as string);
}
function amount(v: unknown, what: string, o: { positive?: boolean } = { positive: true }): bigint {
  if (typeof v !== 'string' || !/^\d{1,78}$/.test(v)) no('malformed', `${what}: expected a decimal amount of smallest units`);
  const a = BigInt(v as string);
  if (a > MAX_UINT256) no('malformed', `${what}: above 2^256 − 1`);
  if (o.positive && a <= 0n) no('malformed', `${what}: must be positive`);
  return a;
}
function uint(v: unknown, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) no('malformed', `${what}: expected an integer in [0, ${max}]`);
  return v as number;
}
function list(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v) || v.length > MAX_ITEMS) no('malformed', `${what}: expected an array of at most ${MAX_ITEMS}`);
  return v as unknown[];
}
function obj(v: unknown, what: string): Record<string, unknown> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) no('malformed', `${what}: expected an object`);
  return v as Record<string, unknown>;
}

// ---------------------------------------------------------------- apply

export type ApplyResult = { ok: true; result: object } | Rejection;

export interface ApplyOptions {
  /** skip signature checks (replaying a prefix of the log that was verified before) */
  trust?: boolean;
}

/**
 * Applies one signed event to `s`: all checks first, then all changes, so a rejection leaves
 * `s` untouched. `chainAfter` is the chain hash after this event (genesis uses it as the ledger id).
 */
export function apply(s: LedgerState, se: SignedEvent, chainAfter: Hex, o: ApplyOptions = {}): ApplyResult {
  try {
    return { ok: true, result: applyOrThrow(s, se, chainAfter, o.trust === true) };
  } catch (e) {
    if (e instanceof Reject) return { ok: false, code: e.code, reason: e.message };
    throw e;
  }
}

function applyOrThrow(s: LedgerState, se: SignedEvent, chainAfter: Hex, trust: boolean): object {
  const e = obj(se?.event, 'event');
  if (e.v !== 1) no('malformed', 'event: unknown version');
  if (!EVENT_KINDS.includes(e.kind as EventKind)) no('malformed', `event: unknown kind ${String(e.kind)}`);
  const kind = e.kind as EventKind;
  const submitter = addr(e.submitter, 'event.submitter');
  const time = uint(e.time, 'event.time');
  const nonce = uint(e.nonce, 'event.nonce');
  const body = obj(e.body, 'event.body');
  if (kind === 'genesis') {
    if (s.hasGenesis) no('malformed', 'genesis: the ledger already has one');
    if (e.ledger !== ZERO_HASH) no('malformed', 'genesis: ledger id must be zero');
  } else {
    if (!s.hasGenesis) no('malformed', 'event before genesis');
    if (typeof e.ledger !== 'string' || e.ledger.toLowerCase() !== s.ledger.toLowerCase())
      no('malformed', 'event: signed for another ledger');
  }
  const expected = (s.nonces.get(submitter.toLowerCase()) ?? 0) + 1;
  if (nonce !== expected) no('malformed', `event: nonce ${nonce}, expected ${expected} (replayed or out of order)`);
  if (!trust) {
    const err = checkEventSignature(se);
    if (err) no('bad_signature', err);
  }
  const result = HANDLERS[kind](s, body as never, { submitter, time, chainAfter, trust });
  // accepted: count the nonce (the handler has already applied its changes)
  s.nonces.set(submitter.toLowerCase(), nonce);
  s.touch('nonces', submitter.toLowerCase());
  return result;
}

interface Ctx {
  submitter: Address;
  time: number;
  chainAfter: Hex;
  trust: boolean;
}
type Handler<K extends EventKind> = (s: LedgerState, b: EventBodies[K], c: Ctx) => object;

function registered(s: LedgerState, a: Address, who = 'submitter'): IdentityRec {
  return s.identity(a) ?? no('unknown_identity', `${who} ${a} is not registered`);
}
function operatorOnly(s: LedgerState, c: Ctx): void {
  if (c.submitter.toLowerCase() !== s.operator.toLowerCase()) no('not_authorized', 'only the ledger operator may do this');
}
function gatewayOnly(s: LedgerState, c: Ctx): void {
  if (c.submitter.toLowerCase() === s.operator.toLowerCase()) return;
  const r = s.identity(c.submitter);
  if (!r?.authorized) no('not_authorized', `${c.submitter} is not an authorised gateway`);
}

/** Takes the slash from `accused` (all checks done by the caller). */
function doSlash(s: LedgerState, accused: IdentityRec, kind: SlashKind, reporter: Address, evidenceId: Hex, time: number): SlashOutcome {
  const atRisk = accused.stake + accused.unbonding.reduce((t, u) => t + u.amount, 0n);
  const slashed = slashAmount(kind, atRisk, s.params);
  const taken = takeSlash(accused.stake, accused.unbonding, slashed);
  const { reporterReward, burned } = splitSlash(slashed, s.params);
  accused.stake = taken.stake;
  accused.unbonding = taken.entries;
  accused.slashedTotal += slashed;
  accused.isSlashed = true;
  accused.slashes.push({ kind, amount: slashed, evidenceId, at: time });
  s.touchIdentity(accused);
  s.setWallet(reporter, s.wallet(reporter) + reporterReward);
  s.totals.slashed += slashed;
  s.totals.burned += burned;
  s.touch('globals', 'state');
  spend(s, evidenceId, time);
  return { accused: accused.address, kind, slashed, reporter, reporterReward, burned, evidenceId };
}

function spend(s: LedgerState, evidenceId: Hex, time: number): void {
  s.evidence.set(evidenceId.toLowerCase(), time);
  s.touch('evidence', evidenceId.toLowerCase());
}

function closeDispute(s: LedgerState, d: DisputeRec): void {
  s.disputes.delete(d.id.toLowerCase());
  s.touch('disputes', d.id.toLowerCase());
}

/** Bond of a frivolous or expired accusation → the accused's wallet. */
function forfeitBond(s: LedgerState, d: { accuser: Address; accused: Address; bond: bigint }, locked: boolean): void {
  if (locked) {
    const acc = s.identity(d.accuser)!;
    acc.bonded -= d.bond;
    s.touchIdentity(acc);
  } else s.setWallet(d.accuser, s.wallet(d.accuser) - d.bond);
  s.setWallet(d.accused, s.wallet(d.accused) + d.bond);
}

function outcomeOfDispute(d: DisputeRec): EvidenceOutcome {
  return {
    outcome: 'dispute',
    disputeId: d.id,
    accused: d.accused,
    bond: d.bond,
    closesAt: d.closesAt,
    guilty: d.guilty.length,
    innocent: d.innocent.length,
  };
}

const HANDLERS: { [K in EventKind]: Handler<K> } = {
  genesis(s, b, c) {
    const chainId = uint(b.chainId, 'genesis.chainId');
    if (chainId < 1) no('malformed', 'genesis.chainId must be ≥ 1');
    const operator = addr(b.operator, 'genesis.operator');
    if (operator.toLowerCase() !== c.submitter.toLowerCase()) no('malformed', 'genesis: must be signed by its operator');
    let params: LedgerParams;
    try {
      params = paramsFromJson(obj(b.params, 'genesis.params') as Record<string, string | number>);
    } catch (err) {
      return no('malformed', `genesis.params: ${(err as Error).message}`);
    }
    s.params = params;
    s.chainId = chainId;
    s.operator = operator;
    s.ledger = c.chainAfter;
    s.touch('globals', 'state');
    return { ledger: c.chainAfter };
  },

  register(s, b, c) {
    if (b.role !== 'node' && b.role !== 'gateway') no('malformed', 'register.role must be node or gateway');
    if (s.identity(c.submitter)) no('already_registered', `${c.submitter} is already registered`);
    const rec: IdentityRec = {
      address: c.submitter,
      role: b.role,
      authorized: false,
      stake: 0n,
      unbonding: [],
      slashedTotal: 0n,
      isSlashed: false,
      earned: 0n,
      reputationPpm: 0,
      reputationEpoch: s.reputationEpoch,
      layerSteps: 0,
      slashes: [],
      bonded: 0n,
      registeredAt: c.time,
      settledEpoch: 0,
    };
    s.identities.set(c.submitter.toLowerCase(), rec);
    s.touchIdentity(rec);
    return {};
  },

  authorize(s, b, c) {
    operatorOnly(s, c);
    const g = registered(s, addr(b.gateway, 'authorize.gateway'), 'gateway');
    g.authorized = true;
    s.touchIdentity(g);
    return {};
  },

  mint(s, b, c) {
    operatorOnly(s, c);
    const to = addr(b.to, 'mint.to');
    const a = amount(b.amount, 'mint.amount');
    s.setWallet(to, s.wallet(to) + a);
    s.totals.minted += a;
    s.touch('globals', 'state');
    return {};
  },

  stake(s, b, c) {
    const r = registered(s, c.submitter);
    const a = amount(b.amount, 'stake.amount');
    if (r.isSlashed) no('slashed', `${r.address} was slashed: it cannot stake again`);
    const w = s.wallet(r.address);
    if (w < a) no('overdrawn', `wallet holds ${w}, stake needs ${a}`);
    if (r.stake + a < s.params.minStake) no('below_min_stake', `stake ${r.stake + a} is below the minimum ${s.params.minStake}`);
    s.setWallet(r.address, w - a);
    r.stake += a;
    s.touchIdentity(r);
    return { stake: r.stake };
  },

  unstake(s, b, c) {
    const r = registered(s, c.submitter);
    const a = amount(b.amount, 'unstake.amount');
    if (r.stake < a) no('overdrawn', `stake is ${r.stake}, cannot unstake ${a}`);
    const releaseAt = c.time + s.params.unbondingSec;
    r.stake -= a;
    r.unbonding.push({ amount: a, releaseAt });
    s.touchIdentity(r);
    return { releaseAt };
  },

  withdraw(s, b, c) {
    const r = registered(s, c.submitter);
    const { ready, pending } = matured(r.unbonding, c.time);
    const want = b.amount === undefined ? ready : amount(b.amount, 'withdraw.amount');
    if (ready === 0n) {
      if (pending > 0n) {
        const next = Math.min(...r.unbonding.map((u) => u.releaseAt));
        no('unbonding_not_over', `nothing has finished unbonding yet (next release at ${next}, now ${c.time})`);
      }
      no('nothing_to_withdraw', 'no unbonding stake');
    }
    if (want > ready) no(pending > 0n ? 'unbonding_not_over' : 'overdrawn', `only ${ready} has finished unbonding, asked for ${want}`);
    r.unbonding = takeMatured(r.unbonding, c.time, want);
    s.touchIdentity(r);
    s.setWallet(r.address, s.wallet(r.address) + want);
    return { withdrawn: want };
  },

  deposit(s, b, c) {
    const account = addr(b.account, 'deposit.account');
    const a = amount(b.amount, 'deposit.amount');
    if (typeof b.faucet !== 'boolean') no('malformed', 'deposit.faucet must be a boolean');
    if (b.faucet) operatorOnly(s, c);
    else if (s.wallet(c.submitter) < a) no('overdrawn', `wallet holds ${s.wallet(c.submitter)}, deposit needs ${a}`);
    if (b.faucet) {
      s.totals.minted += a;
      s.touch('globals', 'state');
    } else s.setWallet(c.submitter, s.wallet(c.submitter) - a);
    const key = account.toLowerCase();
    const rec = s.accounts.get(key) ?? { address: account, balance: 0n, charged: 0n, deposited: 0n };
    rec.balance += a;
    rec.deposited += a;
    s.accounts.set(key, rec);
    s.touch('accounts', key);
    return { balance: rec.balance };
  },

  evidence(s, b, c): EvidenceOutcome {
    const reporter = registered(s, c.submitter);
    const ev = obj(b.evidence, 'evidence') as unknown as Evidence;
    const domain = s.domain;
    if (ev.kind === 'equivocation' || ev.kind === 'custody') {
      const chk = checkSelfProving(ev, domain, c.trust);
      if (!chk.ok) return no(chk.code, chk.reason);
      const accused = registered(s, chk.accused, 'accused');
      if (s.evidence.has(chk.evidenceId.toLowerCase())) no('replayed_evidence', `evidence ${chk.evidenceId} was already used`);
      return { outcome: 'slashed', slash: doSlash(s, accused, chk.kind, reporter.address, chk.evidenceId, c.time) };
    }
    if (ev.kind !== 'audit') return no('malformed', `evidence: unknown kind ${String((ev as { kind?: unknown }).kind)}`);
    const chk = checkAudited(ev, domain, c.trust);
    if (!chk.ok) return no(chk.code, chk.reason);
    const accused = registered(s, chk.accused, 'accused');
    const id = chk.evidenceId.toLowerCase();
    if (s.evidence.has(id) || s.disputes.has(id)) no('replayed_evidence', `evidence ${chk.evidenceId} was already used`);
    const t = tallyVerdicts(ev.verdicts, chk.receiptDigest!, domain, c.trust, {
      isRegistered: (a) => s.identity(a) !== undefined,
      counts: (a) => a.toLowerCase() !== accused.address.toLowerCase() && s.eligible(s.identity(a)!),
    });
    if (!t.ok) return no(t.code, t.reason);
    const q = s.params.verdictQuorum;
    if (t.tally.guilty.length >= q)
      return { outcome: 'slashed', slash: doSlash(s, accused, 'computation', reporter.address, chk.evidenceId, c.time) };
    const bond = s.params.accuserBond;
    if (s.wallet(reporter.address) < bond)
      no('overdrawn', `an accusation without a verdict quorum locks a bond of ${bond}; wallet holds ${s.wallet(reporter.address)}`);
    if (t.tally.innocent.length >= q) {
      forfeitBond(s, { accuser: reporter.address, accused: accused.address, bond }, false);
      spend(s, chk.evidenceId, c.time);
      return { outcome: 'frivolous', accused: accused.address, bondForfeited: bond, evidenceId: chk.evidenceId };
    }
    const d: DisputeRec = {
      id: chk.evidenceId,
      evidenceId: chk.evidenceId,
      receiptDigest: chk.receiptDigest!,
      accused: accused.address,
      accuser: reporter.address,
      bond,
      openedAt: c.time,
      closesAt: c.time + s.params.disputeWindowSec,
      guilty: t.tally.guilty,
      innocent: t.tally.innocent,
    };
    s.setWallet(reporter.address, s.wallet(reporter.address) - bond);
    reporter.bonded += bond;
    s.touchIdentity(reporter);
    s.disputes.set(id, d);
    s.touch('disputes', id);
    return outcomeOfDispute(d);
  },

  verdicts(s, b, c): EvidenceOutcome {
    registered(s, c.submitter);
    if (typeof b.dispute !== 'string') no('malformed', 'verdicts.dispute must be a dispute id');
    const id = b.dispute.toLowerCase();
    const d = s.disputes.get(id);
    if (!d) return no(s.evidence.has(id) ? 'dispute_closed' : 'unknown_dispute', `no open dispute ${b.dispute}`);
    if (c.time >= d.closesAt) no('dispute_closed', `dispute ${d.id} closed at ${d.closesAt}`);
    const seen = new Set([...d.guilty, ...d.innocent].map((a) => a.toLowerCase()));
    const t = tallyVerdicts(b.verdicts, d.receiptDigest, s.domain, c.trust, {
      isRegistered: (a) => s.identity(a) !== undefined,
      counts: (a) => a.toLowerCase() !== d.accused.toLowerCase() && s.eligible(s.identity(a)!),
      seen,
    });
    if (!t.ok) return no(t.code, t.reason);
    d.guilty = [...d.guilty, ...t.tally.guilty];
    d.innocent = [...d.innocent, ...t.tally.innocent];
    const q = s.params.verdictQuorum;
    if (d.guilty.length >= q) {
      const accuser = s.identity(d.accuser)!;
      accuser.bonded -= d.bond;
      s.touchIdentity(accuser);
      s.setWallet(d.accuser, s.wallet(d.accuser) + d.bond);
      closeDispute(s, d);
      return { outcome: 'slashed', slash: doSlash(s, s.identity(d.accused)!, 'computation', d.accuser, d.evidenceId, c.time) };
    }
    if (d.innocent.length >= q) {
      forfeitBond(s, d, true);
      closeDispute(s, d);
      spend(s, d.evidenceId, c.time);
      return { outcome: 'frivolous', accused: d.accused, bondForfeited: d.bond, evidenceId: d.evidenceId };
    }
    s.touch('disputes', id);
    return outcomeOfDispute(d);
  },

  settle(s, b, c): EpochOutcome {
    gatewayOnly(s, c);
    const epoch = uint(b.epoch, 'settle.epoch');
    const g = s.identity(c.submitter);
    const last = g ? g.settledEpoch : s.epoch;
    if (epoch <= last) no('epoch_order', `epoch ${epoch} is not after ${last}, the last this gateway settled`);
    const charges = new Map<string, { rec: AccountRec; amount: bigint }>();
    for (const [i, x] of list(b.charges, 'settle.charges').entries()) {
      const ch = obj(x, `settle.charges[${i}]`);
      const a = addr(ch.account, `settle.charges[${i}].account`);
      const amt = amount(ch.amount, `settle.charges[${i}].amount`, {});
      if (charges.has(a.toLowerCase())) no('malformed', `settle.charges: ${a} twice`);
      const rec = s.accounts.get(a.toLowerCase());
      if (!rec || rec.balance < amt) no('overdrawn', `account ${a} holds ${rec?.balance ?? 0n}, charged ${amt}`);
      charges.set(a.toLowerCase(), { rec: rec!, amount: amt });
    }
    const credits: { rec: IdentityRec; units: bigint; layerSteps: number }[] = [];
    const seen = new Set<string>();
    for (const [i, x] of list(b.credits, 'settle.credits').entries()) {
      const cr = obj(x, `settle.credits[${i}]`);
      const a = addr(cr.identity, `settle.credits[${i}].identity`);
      if (seen.has(a.toLowerCase())) no('malformed', `settle.credits: ${a} twice`);
      seen.add(a.toLowerCase());
      const rec = registered(s, a, 'credited identity');
      credits.push({
        rec,
        units: amount(cr.units, `settle.credits[${i}].units`, {}),
        layerSteps: uint(cr.layerSteps, `settle.credits[${i}].layerSteps`),
      });
    }
    let charged = 0n;
    for (const ch of charges.values()) charged += ch.amount;
    const split = splitPayments(
      charged,
      credits.map((x) => ({ units: x.units, forfeited: x.rec.isSlashed })),
      s.params,
    );
    // all checks passed: apply
    for (const ch of charges.values()) {
      ch.rec.balance -= ch.amount;
      ch.rec.charged += ch.amount;
      s.touch('accounts', ch.rec.address.toLowerCase());
    }
    const paid: { identity: Address; amount: bigint }[] = [];
    credits.forEach((x, i) => {
      const p = split.paid[i]!;
      if (!x.rec.isSlashed) x.rec.layerSteps += x.layerSteps;
      x.rec.earned += p;
      s.touchIdentity(x.rec);
      if (p > 0n) s.setWallet(x.rec.address, s.wallet(x.rec.address) + p);
      paid.push({ identity: x.rec.address, amount: p });
    });
    s.totals.charged += charged;
    s.totals.rewards += split.rewards;
    s.totals.fees += split.fees;
    if (g) {
      g.settledEpoch = epoch;
      s.touchIdentity(g);
    }
    if (epoch > s.epoch) s.epoch = epoch;
    s.touch('globals', 'state');
    // accusations whose window passed without a guilty quorum: frivolous, bond to the accused
    const closedDisputes: Hex[] = [];
    for (const d of [...s.disputes.values()].sort((x, y) => (x.id < y.id ? -1 : 1)))
      if (d.closesAt <= c.time) {
        forfeitBond(s, d, true);
        closeDispute(s, d);
        spend(s, d.evidenceId, c.time);
        closedDisputes.push(d.id);
      }
    return { epoch, charged, rewards: split.rewards, fees: split.fees, paid, closedDisputes };
  },

  reputation(s, b, c) {
    gatewayOnly(s, c);
    const epoch = uint(b.epoch, 'reputation.epoch');
    if (epoch <= s.reputationEpoch) no('epoch_order', `reputation epoch ${epoch} is not after ${s.reputationEpoch}`);
    const updates: { rec: IdentityRec; score: number }[] = [];
    const seen = new Set<string>();
    for (const [i, x] of list(b.reports, 'reputation.reports').entries()) {
      const r = obj(x, `reputation.reports[${i}]`);
      const a = addr(r.identity, `reputation.reports[${i}].identity`);
      if (seen.has(a.toLowerCase())) no('malformed', `reputation.reports: ${a} twice`);
      seen.add(a.toLowerCase());
      const rec = registered(s, a, 'reported identity');
      const w = `reputation.reports[${i}]`;
      const score = conductScore({
        deadlinesMet: uint(r.deadlinesMet, `${w}.deadlinesMet`),
        deadlinesMissed: uint(r.deadlinesMissed, `${w}.deadlinesMissed`),
        auditsPassed: uint(r.auditsPassed, `${w}.auditsPassed`),
        auditsFailed: uint(r.auditsFailed, `${w}.auditsFailed`),
        availabilityPpm: uint(r.availabilityPpm, `${w}.availabilityPpm`, 1_000_000),
        throughputPpm: uint(r.throughputPpm, `${w}.throughputPpm`, 1_000_000),
      });
      updates.push({ rec, score });
    }
    for (const u of updates) {
      const prev = s.reputationAt(u.rec, epoch - 1);
      u.rec.reputationPpm = u.rec.isSlashed ? 0 : updateReputation(prev, u.score, s.params);
      u.rec.reputationEpoch = epoch;
      s.touchIdentity(u.rec);
    }
    s.reputationEpoch = epoch;
    s.touch('globals', 'state');
    return { updated: updates.length };
  },
};

// ---------------------------------------------------------------- views

const str = (v: bigint): string => v.toString();

export function identityStatus(s: LedgerState, r: IdentityRec): IdentityStatus {
  const rep = r.isSlashed ? 0 : s.reputationAt(r, s.reputationEpoch);
  return {
    address: r.address,
    role: r.role,
    wallet: str(s.wallet(r.address)),
    stake: str(r.stake),
    unbonding: str(r.unbonding.reduce((t, u) => t + u.amount, 0n)),
    unbondingEntries: r.unbonding.map((u) => ({ amount: str(u.amount), releaseAt: u.releaseAt })),
    slashed: str(r.slashedTotal),
    earned: str(r.earned),
    reputation: rep / 1_000_000,
    reputationPpm: rep,
    layerSteps: r.layerSteps,
    slashes: r.slashes.map((x) => ({ kind: x.kind, amount: str(x.amount), evidenceId: x.evidenceId, at: x.at })),
    bonded: str(r.bonded),
    eligible: s.eligible(r),
    registeredAt: r.registeredAt,
  };
}

export function accountStatus(a: AccountRec): AccountStatus {
  return { address: a.address, balance: str(a.balance), charged: str(a.charged), deposited: str(a.deposited) };
}

export interface ConservationSums {
  wallets: bigint;
  stake: bigint;
  unbonding: bigint;
  accounts: bigint;
  bonds: bigint;
}

export function sums(s: LedgerState): ConservationSums {
  const out: ConservationSums = { wallets: 0n, stake: 0n, unbonding: 0n, accounts: 0n, bonds: 0n };
  for (const w of s.wallets.values()) out.wallets += w;
  for (const r of s.identities.values()) {
    out.stake += r.stake;
    out.bonds += r.bonded;
    for (const u of r.unbonding) out.unbonding += u.amount;
  }
  for (const a of s.accounts.values()) out.accounts += a.balance;
  return out;
}

/**
 * Invariants every state satisfies: tokens are conserved (minted = held + fees + burned),
 * slashed = reporter rewards + burned is implied, nothing negative, disputes' bonds are locked.
 */
export function checkInvariants(s: LedgerState): string[] {
  const p: string[] = [];
  const t = sums(s);
  const held = t.wallets + t.stake + t.unbonding + t.accounts + t.bonds + s.totals.fees + s.totals.burned;
  if (held !== s.totals.minted) p.push(`tokens not conserved: minted ${s.totals.minted}, held + fees + burned ${held}`);
  for (const [k, w] of s.wallets) if (w < 0n) p.push(`wallet ${k} is negative`);
  for (const r of s.identities.values()) {
    if (r.stake < 0n || r.bonded < 0n || r.unbonding.some((u) => u.amount <= 0n)) p.push(`identity ${r.address} has a negative amount`);
  }
  for (const a of s.accounts.values()) if (a.balance < 0n) p.push(`account ${a.address} is negative`);
  let bonds = 0n;
  for (const d of s.disputes.values()) bonds += d.bond;
  if (bonds !== t.bonds) p.push(`bonds locked ${t.bonds} ≠ open disputes' bonds ${bonds}`);
  return p;
}

export function statusOf(s: LedgerState, where: { backend: 'sqlite' | 'evm'; location: string; events: number; head: Hex }): LedgerStatus {
  const t = sums(s);
  const byAddr = <T extends { address: string }>(xs: T[]): T[] =>
    xs.sort((a, b) => (a.address.toLowerCase() < b.address.toLowerCase() ? -1 : 1));
  return {
    backend: where.backend,
    location: where.location,
    epoch: s.epoch,
    reputationEpoch: s.reputationEpoch,
    events: where.events,
    head: where.head,
    params: paramsJson(s.params),
    identities: byAddr([...s.identities.values()].map((r) => identityStatus(s, r))),
    accounts: byAddr([...s.accounts.values()].map(accountStatus)),
    disputes: [...s.disputes.values()].map((d) => ({
      id: d.id,
      accused: d.accused,
      accuser: d.accuser,
      bond: str(d.bond),
      closesAt: d.closesAt,
      guilty: d.guilty.length,
      innocent: d.innocent.length,
    })),
    totals: {
      minted: str(s.totals.minted),
      wallets: str(t.wallets),
      stake: str(t.stake),
      unbonding: str(t.unbonding),
      accounts: str(t.accounts),
      bonds: str(t.bonds),
      fees: str(s.totals.fees),
      burned: str(s.totals.burned),
      slashed: str(s.totals.slashed),
      charged: str(s.totals.charged),
      rewards: str(s.totals.rewards),
    },
  };
}

// ---------------------------------------------------------------- rows (persistence and comparison)

/** JSON rows of one table, keyed; bigints as decimal strings. Used to persist and to compare states. */
export function rowsOf(s: LedgerState, t: Table, key: string): string | undefined {
  const j = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
  switch (t) {
    case 'identities': {
      const r = s.identities.get(key);
      return r && j(r);
    }
    case 'wallets': {
      const w = s.wallets.get(key);
      return w === undefined ? undefined : w.toString();
    }
    case 'accounts': {
      const a = s.accounts.get(key);
      return a && j(a);
    }
    case 'evidence': {
      const e = s.evidence.get(key);
      return e === undefined ? undefined : String(e);
    }
    case 'disputes': {
      const d = s.disputes.get(key);
      return d && j(d);
    }
    case 'nonces': {
      const n = s.nonces.get(key);
      return n === undefined ? undefined : String(n);
    }
    case 'globals':
      return j({
        ledger: s.ledger,
        chainId: s.chainId,
        operator: s.operator,
        params: paramsJson(s.params),
        epoch: s.epoch,
        reputationEpoch: s.reputationEpoch,
        totals: s.totals,
      });
  }
}

export const TABLES: readonly Table[] = ['identities', 'wallets', 'accounts', 'evidence', 'disputes', 'nonces', 'globals'];
export type { Table };

export function keysOf(s: LedgerState, t: Table): string[] {
  switch (t) {
    case 'identities':
      return [...s.identities.keys()];
    case 'wallets':
      return [...s.wallets.keys()];
    case 'accounts':
      return [...s.accounts.keys()];
    case 'evidence':
      return [...s.evidence.keys()];
    case 'disputes':
      return [...s.disputes.keys()];
    case 'nonces':
      return [...s.nonces.keys()];
    case 'globals':
      return ['state'];
  }
}

/** Rebuilds a state from persisted rows (the inverse of rowsOf). */
export function stateFromRows(rows: { table: Table; key: string; value: string }[]): LedgerState {
  const s = new LedgerState();
  const big = (x: unknown): bigint => BigInt(x as string);
  for (const { table, key, value } of rows) {
    switch (table) {
      case 'identities': {
        const r = JSON.parse(value) as Record<string, unknown>;
        s.identities.set(key, {
          ...(r as unknown as IdentityRec),
          stake: big(r.stake),
          slashedTotal: big(r.slashedTotal),
          earned: big(r.earned),
          bonded: big(r.bonded),
          unbonding: (r.unbonding as { amount: string; releaseAt: number }[]).map((u) => ({
            amount: big(u.amount),
            releaseAt: u.releaseAt,
          })),
          slashes: (r.slashes as { kind: SlashKind; amount: string; evidenceId: Hex; at: number }[]).map((x) => ({
            ...x,
            amount: big(x.amount),
          })),
        });
        break;
      }
      case 'wallets':
        s.wallets.set(key, BigInt(value));
        break;
      case 'accounts': {
        const a = JSON.parse(value) as Record<string, unknown>;
        s.accounts.set(key, {
          address: a.address as Address,
          balance: big(a.balance),
          charged: big(a.charged),
          deposited: big(a.deposited),
        });
        break;
      }
      case 'evidence':
        s.evidence.set(key, Number(value));
        break;
      case 'disputes': {
        const d = JSON.parse(value) as Record<string, unknown>;
        s.disputes.set(key, { ...(d as unknown as DisputeRec), bond: big(d.bond) });
        break;
      }
      case 'nonces':
        s.nonces.set(key, Number(value));
        break;
      case 'globals': {
        const g = JSON.parse(value) as Record<string, unknown>;
        s.ledger = g.ledger as Hex;
        s.chainId = g.chainId as number;
        s.operator = g.operator as Address;
        s.params = paramsFromJson(g.params as Record<string, string | number>);
        s.epoch = g.epoch as number;
        s.reputationEpoch = g.reputationEpoch as number;
        const t = g.totals as Record<string, string>;
        s.totals = {
          minted: big(t.minted),
          fees: big(t.fees),
          burned: big(t.burned),
          slashed: big(t.slashed),
          charged: big(t.charged),
          rewards: big(t.rewards),
        };
        break;
      }
    }
  }
  return s;
}
