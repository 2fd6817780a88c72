// The gateway's side of the ledger, never on the token path:
//   - evidence: drains Verdicts' bounded queue into ledger.submitEvidence, one at a time, in
//     the background (a slash refreshes the stake view, so the slashed identity leaves routing);
//   - payments, per REQUEST: the layer-steps proven by the receipts the gateway accepted (credits
//     to their signers, weighted by rules.stepUnits) and what the request's client account was
//     charged (rules.chargeFor of the tokens the API reported in `usage`) are kept under the
//     request's key while it runs (its credits come with its receipts, step by step; its charge
//     only at its end). A request settles in the epoch in which it ENDS (end(): the API is done
//     with it, after its charge if it was charged), its credits together with its own charge,
//     never before; credits of requests still running stay pending, whatever epochs close
//     meanwhile. A request that ends uncharged (an error, a cancel, a free request) settles its
//     credits with no charge of its own in the epoch it ends. The epoch's ended requests form ONE
//     batch (settle(): on a timer, and at shutdown): per identity the units of their credits,
//     per account their charges; the ledger splits the batch's charges over the batch's units pro
//     rata (EpochBatch is unchanged), so requests that end in the same epoch share one pool, and
//     a request never pays for another that ends in a different epoch. Receipts and charges given
//     no request key (a caller that does not track requests; receipts the gateway cannot place)
//     join the open epoch's batch directly (counted in `unkeyedSteps`). Bounds: at most
//     MAX_PENDING_REQUESTS requests pending (at the cap the oldest is ended as is, with whatever
//     charge it has — logged, counted in `evicted`; what arrives for it later is a new entry
//     under its key, settled at its end) and at most
//     MAX_REQUEST_IDENTITIES identities per request. The final settlement (shutdown) ends every
//     pending request first. Settlement reads only the epochs and the batch's own identities and
//     accounts (bounded by the batch, never the whole registry); a batch the ledger failed to
//     take (it threw, or another gateway settled that epoch number first) is kept, bounded, and
//     retried with the next epoch;
//   - reputation: with each settlement, one report per identity seen (deadlines met/missed from
//     the receipts, audits passed/failed from Verdicts' records, availability, throughput).
// Everything is counted synchronously in memory (addReceipts/charge/end are O(hops)); the ledger
// is touched only by the drain loop and settle().

import type { Logger } from 'pino';
import type { Evidence, EvidenceQueue } from '../accountability/records/evidence.js';
import type { SignedReceipt } from '../accountability/records/receipts.js';
import type {
  Address,
  EpochBatch,
  EpochOutcome,
  EvidenceOutcome,
  Ledger,
  LedgerResult,
  LedgerSigner,
  RejectCode,
  ReputationReport,
} from './ledger.js';
import { PPM, chargeFor, stepUnits } from './rules.js';
import type { LedgerStakeView } from './stake-view.js';

/** An audit as Verdicts records it (the fields reputation needs). */
export interface AuditSummary {
  at: number;
  accused: string;
  pass: boolean;
  incomplete?: boolean;
}

export interface GatewaySettlementOptions {
  ledger: Ledger;
  /** the gateway's key: registered, authorised by the operator, staked (its referee verdicts count) */
  signer: LedgerSigner;
  /** evidence to submit (Verdicts' queue) */
  evidence?: EvidenceQueue<Evidence>;
  /** refreshed after a slash (settlements leave it to its own timer: one ledger read per settlement) */
  stake?: LedgerStakeView;
  /** the gateway's audit records (bounded, oldest first) */
  audits?: () => readonly AuditSummary[];
  /** settle automatically this often (0: only when settle() is called; default 0) */
  epochMs?: number;
  log?: Logger;
}

/** What became of one piece of evidence on the ledger. */
export interface SubmittedEvidence {
  kind: Evidence['kind'];
  accused?: string;
  at: number;
  outcome?: EvidenceOutcome['outcome'];
  rejected?: { code: RejectCode; reason: string };
}

/** an unsettled batch kept for retry holds at most this many identities and this many accounts */
const MAX_KEPT_KEYS = 10_000;
const MAX_REFUSALS = 1000;
/** requests whose credits (and charge) wait for their end; at the cap the oldest is ended as is */
export const MAX_PENDING_REQUESTS = 4096;
/** identities credited per pending request (a route and its re-routes name a few) */
export const MAX_REQUEST_IDENTITIES = 256;

interface Credit {
  units: bigint;
  layerSteps: number;
  met: number;
  missed: number;
  /** compute µs per layer-token, summed, and how many steps */
  usPerLayerToken: number;
  steps: number;
}

/** One request's credits and charges while it runs (lower-case keys). */
interface PendingRequest {
  credits: Map<string, Credit>;
  charges: Map<string, bigint>;
}

export class GatewaySettlement {
  readonly submitted: SubmittedEvidence[] = [];
  readonly settled: EpochOutcome[] = [];
  /** settlement or reputation writes the ledger refused (the most recent MAX_REFUSALS) */
  readonly refusals: string[] = [];
  /** identities or accounts whose unsettled amounts were dropped because the kept batch (or a request) was full */
  dropped = 0;
  /** pending requests ended early because MAX_PENDING_REQUESTS were pending */
  evicted = 0;
  /** steps whose receipts came with no request (credited to the open epoch's batch directly) */
  unkeyedSteps = 0;
  /** the open epoch's batch: what the requests that ended in it (and unkeyed receipts and charges) bring */
  private credits = new Map<string, Credit>();
  private charges = new Map<string, bigint>();
  /** requests not ended yet, oldest first */
  private pending = new Map<string, PendingRequest>();
  private lastSettledAt = Date.now();
  private lane: Promise<unknown> = Promise.resolve();
  private timer?: NodeJS.Timeout;

  constructor(private readonly o: GatewaySettlementOptions) {}

  /** Starts draining evidence (and the epoch timer). */
  start(): void {
    this.o.evidence?.start(
      (ev) => this.submit(ev),
      (e) => this.o.log?.warn({ err: (e as Error).message }, 'ledger: evidence submission failed'),
    );
    if (this.o.epochMs) {
      this.timer = setInterval(() => void this.settle().catch(() => undefined), this.o.epochMs);
      this.timer.unref();
    }
  }

  private async submit(ev: Evidence): Promise<void> {
    const rec: SubmittedEvidence = { kind: ev.kind, at: Date.now() };
    const r = await this.o.ledger.submitEvidence(this.o.signer, ev);
    if (r.ok) {
      rec.outcome = r.outcome;
      rec.accused = r.outcome === 'slashed' ? r.slash.accused : r.accused;
      if (r.outcome === 'slashed') await this.o.stake?.refresh();
    } else rec.rejected = { code: r.code, reason: r.reason };
    this.submitted.push(rec);
    if (this.submitted.length > 1000) this.submitted.shift();
    this.o.log?.info({ kind: ev.kind, outcome: rec.outcome, rejected: rec.rejected?.code }, 'ledger: evidence submitted');
  }

  /**
   * The receipts of one step the gateway accepted (one per hop): credits to their signers, kept
   * with `request` until it ends (no request: into the open epoch's batch).
   */
  addReceipts(receipts: readonly SignedReceipt[], request?: string): void {
    if (!receipts.length) return;
    if (request === undefined) this.unkeyedSteps++;
    const credits = request === undefined ? this.credits : this.request(request).credits;
    const cap = request === undefined ? MAX_KEPT_KEYS : MAX_REQUEST_IDENTITIES;
    let maxCompute = -1;
    let bottleneck = -1;
    let budgets = 0;
    receipts.forEach((r, i) => {
      budgets += r.record.budgetUs;
      if (r.record.computeUs > maxCompute) [maxCompute, bottleneck] = [r.record.computeUs, i];
    });
    const reference = Math.round(budgets / receipts.length);
    receipts.forEach((s, i) => {
      const r = s.record;
      const layers = r.layerEnd - r.layerStart;
      const met = r.budgetUs === 0 || r.recvUs + r.computeUs <= r.budgetUs;
      const k = r.signer.toLowerCase();
      let c = credits.get(k);
      if (!c) {
        if (credits.size >= cap) {
          this.dropped++;
          return;
        }
        c = { units: 0n, layerSteps: 0, met: 0, missed: 0, usPerLayerToken: 0, steps: 0 };
        credits.set(k, c);
      }
      c.units += stepUnits({ layers, deadlineMet: met, budgetUs: r.budgetUs, referenceBudgetUs: reference, bottleneck: receipts.length > 1 && i === bottleneck });
      c.layerSteps += layers;
      if (met) c.met++;
      else c.missed++;
      c.usPerLayerToken += r.computeUs / Math.max(1, layers * r.nTokens);
      c.steps++;
    });
  }

  /**
   * A request's usage (prompt + completion tokens, as the API reported it) charged to
   * `account`: kept with `request` until it ends (no request: into the open epoch's batch).
   */
  charge(account: Address, tokens: number, request?: string): void {
    const amount = chargeFor(tokens, this.o.ledger.params);
    const charges = request === undefined ? this.charges : this.request(request).charges;
    const k = account.toLowerCase();
    charges.set(k, (charges.get(k) ?? 0n) + amount);
  }

  /**
   * `request` is over (no more receipts or charges of it will come): its credits and its charge
   * join the open epoch's batch. Unknown requests (none of their work was credited or charged,
   * or they were ended already) are ignored.
   */
  end(request: string): void {
    const r = this.pending.get(request);
    if (!r) return;
    this.pending.delete(request);
    this.fold(r.credits, r.charges);
  }

  /** requests waiting for their end (tests, status) */
  get pendingRequests(): number {
    return this.pending.size;
  }

  /** charges not settled yet, of the open epoch and of requests still pending (tests, status) */
  pendingCharge(account: Address): bigint {
    const k = account.toLowerCase();
    let sum = this.charges.get(k) ?? 0n;
    for (const r of this.pending.values()) sum += r.charges.get(k) ?? 0n;
    return sum;
  }

  /** the pending request `key`, created if new (at the cap, the oldest pending request is ended as is) */
  private request(key: string): PendingRequest {
    let r = this.pending.get(key);
    if (r) return r;
    if (this.pending.size >= MAX_PENDING_REQUESTS) {
      const oldest = this.pending.keys().next().value as string;
      this.end(oldest);
      this.evicted++;
      this.refuse(`${MAX_PENDING_REQUESTS} requests pending: the oldest settles with the open epoch, as it is`);
      this.o.log?.warn({ pending: MAX_PENDING_REQUESTS }, 'ledger: too many requests pending; the oldest settles now, as it is');
    }
    r = { credits: new Map(), charges: new Map() };
    this.pending.set(key, r);
    return r;
  }

  /**
   * Settles the open epoch (serialised with other settlements): the requests that ended in it
   * (with their charges), plus unkeyed receipts and charges; undefined when nothing was settled.
   * Requests still running stay pending; `final` (the last settlement, at shutdown) ends them all
   * first.
   */
  settle(o: { final?: boolean } = {}): Promise<EpochOutcome | undefined> {
    const run = this.lane.then(() => this.settleNow(!!o.final));
    this.lane = run.catch(() => undefined);
    return run;
  }

  private async settleNow(final: boolean): Promise<EpochOutcome | undefined> {
    if (final) for (const k of [...this.pending.keys()]) this.end(k);
    const credits = this.credits;
    const charges = this.charges;
    const since = this.lastSettledAt;
    this.credits = new Map();
    this.charges = new Map();
    this.lastSettledAt = Date.now();
    if (!credits.size && !charges.size) return undefined;
    const ledger = this.o.ledger;
    let batch: EpochBatch;
    let st: SettlementView;
    let r: LedgerResult<EpochOutcome>;
    try {
      // one bounded read per settlement: the epochs, and only the identities and accounts in the batch
      st = await viewOf(ledger, credits.keys(), charges.keys());
      batch = batchOf(st, credits, charges, (m) => this.refuse(m));
      r = await ledger.settleEpoch(this.o.signer, batch);
    } catch (e) {
      // the ledger failed (I/O, lock, RPC): nothing was written, so keep the epoch's batch and
      // fold it into the next one (bounded), which retries it
      this.keep(credits, charges, since);
      this.refuse(`settlement failed, kept for the next epoch: ${(e as Error).message}`);
      this.o.log?.warn({ err: (e as Error).message }, 'ledger: settlement failed; retried next epoch');
      return undefined;
    }
    if (!r.ok) {
      this.refuse(`settle epoch ${batch.epoch}: ${r.code}: ${r.reason}`);
      this.o.log?.warn({ code: r.code, reason: r.reason }, 'ledger: settlement refused');
      // another gateway settled this epoch number first: the batch itself is fine, retry it
      if (r.code === 'epoch_order') this.keep(credits, charges, since);
      return undefined;
    }
    this.settled.push(r);
    if (this.settled.length > 1000) this.settled.shift();
    // identities seen only in this epoch's audits: read each once (bounded by the audit record)
    const known = new Map(st.identities);
    const tried = new Set<string>();
    for (const a of this.o.audits?.() ?? []) {
      const k = a.accused.toLowerCase();
      if (known.has(k) || tried.has(k) || a.at < since) continue;
      tried.add(k);
      const i = await ledger.identity(a.accused as Address).catch(() => undefined);
      if (i) known.set(k, i.address);
    }
    await this.publishReputation(st.reputationEpoch + 1, credits, known, since).catch((e: Error) =>
      this.refuse(`reputation: ${e.message}`),
    );
    return r;
  }

  private refuse(m: string): void {
    this.refusals.push(m);
    if (this.refusals.length > MAX_REFUSALS) this.refusals.shift();
  }

  /** Folds an unsettled batch back into the open epoch. */
  private keep(credits: Map<string, Credit>, charges: Map<string, bigint>, since: number): void {
    this.fold(credits, charges);
    this.lastSettledAt = Math.min(this.lastSettledAt, since);
  }

  /** Adds credits and charges to the open epoch's batch, at most MAX_KEPT_KEYS accounts and identities each. */
  private fold(credits: Map<string, Credit>, charges: Map<string, bigint>): void {
    for (const [k, c] of credits) {
      const cur = this.credits.get(k);
      if (cur) {
        cur.units += c.units;
        cur.layerSteps += c.layerSteps;
        cur.met += c.met;
        cur.missed += c.missed;
        cur.usPerLayerToken += c.usPerLayerToken;
        cur.steps += c.steps;
      } else if (this.credits.size < MAX_KEPT_KEYS) this.credits.set(k, c);
      else this.dropped++;
    }
    for (const [k, amount] of charges) {
      if (this.charges.has(k) || this.charges.size < MAX_KEPT_KEYS) this.charges.set(k, (this.charges.get(k) ?? 0n) + amount);
      else this.dropped++;
    }
  }

  private async publishReputation(epoch: number, credits: Map<string, Credit>, known: Map<string, Address>, since: number): Promise<void> {
    const audits = new Map<string, { passed: number; failed: number }>();
    for (const a of this.o.audits?.() ?? []) {
      if (a.at < since || a.incomplete) continue;
      const k = a.accused.toLowerCase();
      const t = audits.get(k) ?? { passed: 0, failed: 0 };
      if (a.pass) t.passed++;
      else t.failed++;
      audits.set(k, t);
    }
    const speed = [...credits.values()].map((c) => c.usPerLayerToken / Math.max(1, c.steps)).filter((x) => x > 0);
    const best = speed.length ? Math.min(...speed) : 0;
    const reports: ReputationReport[] = [];
    for (const k of new Set([...credits.keys(), ...audits.keys()])) {
      const address = known.get(k);
      if (!address) continue;
      const c = credits.get(k);
      const a = audits.get(k) ?? { passed: 0, failed: 0 };
      const own = c && c.steps ? c.usPerLayerToken / c.steps : 0;
      reports.push({
        identity: address,
        deadlinesMet: c?.met ?? 0,
        deadlinesMissed: c?.missed ?? 0,
        auditsPassed: a.passed,
        auditsFailed: a.failed,
        // it served this epoch (an identity seen only in audits was at least reachable)
        availabilityPpm: c ? PPM : PPM / 2,
        throughputPpm: own > 0 && best > 0 ? Math.min(PPM, Math.floor((best / own) * PPM)) : PPM,
      });
    }
    if (!reports.length) return;
    const r = await this.o.ledger.publishReputation(this.o.signer, epoch, reports);
    if (!r.ok) this.refuse(`reputation epoch ${epoch}: ${r.code}: ${r.reason}`);
  }

  /** Waits until the evidence queued so far is submitted. */
  async drained(): Promise<void> {
    await this.o.evidence?.idle();
  }

  /** Stops the timer and the drain loop (queued evidence stays queued); settle({ final: true }) first to keep the open epoch. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.o.evidence?.stop();
    await this.lane;
  }
}

/** What one settlement reads: the epochs, and the batch's own identities and accounts (lower-case keys). */
interface SettlementView {
  epoch: number;
  reputationEpoch: number;
  /** registered identities among the batch's credits → checksummed address */
  identities: Map<string, Address>;
  /** the batch's accounts that exist → balance */
  accounts: Map<string, { address: Address; balance: bigint }>;
}

/** reads in flight at once while building a settlement view */
const VIEW_READS_IN_FLIGHT = 16;

/**
 * Reads only what the batch needs: its size bounds the cost (at most MAX_KEPT_KEYS identities and
 * accounts), never the size of the registry, which anyone can grow by registering.
 */
async function viewOf(ledger: Ledger, identityKeys: Iterable<string>, accountKeys: Iterable<string>): Promise<SettlementView> {
  const view: SettlementView = { ...(await ledger.epochs()), identities: new Map(), accounts: new Map() };
  const jobs: (() => Promise<void>)[] = [];
  for (const k of identityKeys) {
    jobs.push(async () => {
      const i = await ledger.identity(k as Address);
      if (i) view.identities.set(k, i.address);
    });
  }
  for (const k of accountKeys) {
    jobs.push(async () => {
      const a = await ledger.account(k as Address);
      if (a) view.accounts.set(k, { address: a.address, balance: BigInt(a.balance) });
    });
  }
  let next = 0;
  const lane = async () => {
    while (next < jobs.length) await jobs[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(VIEW_READS_IN_FLIGHT, jobs.length) }, lane));
  return view;
}

/** The epoch's batch against one settlement view: charges capped at each balance, credits only to registered identities. */
function batchOf(st: SettlementView, credits: Map<string, Credit>, charges: Map<string, bigint>, refuse: (m: string) => void): EpochBatch {
  const known = st.identities;
  const balance = st.accounts;
  return {
    epoch: st.epoch + 1,
    charges: [...charges].flatMap(([k, amount]) => {
      const acct = balance.get(k);
      if (!acct || acct.balance <= 0n) {
        refuse(`account ${k} has no balance: ${amount} not charged`);
        return [];
      }
      // never more than the balance (an overdraft would refuse the whole batch)
      if (acct.balance < amount) refuse(`account ${k} holds ${acct.balance} < ${amount}: charged the balance`);
      return [{ account: acct.address, amount: acct.balance < amount ? acct.balance : amount }];
    }),
    // only registered identities can be paid (unstaked ones are not routed to with a ledger anyway)
    credits: [...credits].filter(([k]) => known.has(k)).map(([k, c]) => ({ identity: known.get(k)!, units: c.units, layerSteps: c.layerSteps })),
  };
}
