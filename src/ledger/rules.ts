// The ledger's rules: parameters with their defaults and reasoning, and pure functions over
// integers (bigint amounts, parts-per-million ratios) so that the SQLite backend, the Solidity
// contract and routing compute exactly the same numbers. docs/control-plane.md has the prose.
//
// The incentive inequality (computation faults). A node that skips the work of one layer-step
// gains at most g (its compute cost for that step, which an honest market prices below the
// step's reward r). The step is audited with probability p (the audit rate in force for it);
// a caught fault slashes s_c of the stake S at risk, forfeits the identity's unsettled rewards
// and excludes it for good. Cheating on k steps of an epoch is worth, in expectation,
//     (1 − q_k)·(R + k·g) − q_k·s_c·S   against R for honesty,   q_k = 1 − (1 − p)^k,
// which is below R iff (1 − q_k)·k·g < q_k·(R + s_c·S). (1 − q_k)·k/q_k is largest at k = 1,
// where it is (1 − p)/p, so a sufficient condition for every k ≥ 1 — every cheating fraction
// f > 0 — is
//     p · s_c · S  ≥  g          (INEQUALITY 1: expected slash per cheated step ≥ its gain)
// At the defaults the lowest audit rate (a proven node: auditRateMinPpm = 2%) times the
// computation slash (20%) times the minimum stake (1000 ODSI) is 4 ODSI per cheated step,
// while a layer-step earns about pricePerToken·(1 − fee)/(layer count) ≈ 10^-6 ODSI: the
// margin is six orders of magnitude, so the inequality holds for any gateway price below
// maxGainPerStep(params) (checked by `computationDeterrence`). test/ledger/incentive.test.ts
// simulates it with these functions over a grid of f.

/** 1 ODSI in the smallest unit (18 decimals, like an ERC-20). */
export const UNIT = 10n ** 18n;
export const PPM = 1_000_000;
const PPMn = 1_000_000n;

export interface LedgerParams {
  /** stake below which an identity is not routed to nor chosen as auditor or referee */
  minStake: bigint;
  /** seconds between requestUnstake and withdraw; slashes reach unbonding stake meanwhile */
  unbondingSec: number;
  /** fraction of the stake at risk (stake + unbonding) taken for equivocation, ppm */
  equivocationSlashPpm: number;
  /** … for forged custody (a receipt contradicting the upstream receipt it names), ppm */
  custodySlashPpm: number;
  /** … for a computation fault proven by referee verdicts, ppm (INEQUALITY 1) */
  computationSlashPpm: number;
  /** share of each slash paid to whoever submitted the evidence, ppm; the rest is burned */
  reporterSharePpm: number;
  /** locked from the accuser's wallet per computation-fault accusation; lost if frivolous */
  accuserBond: bigint;
  /** failing verdicts from distinct staked identities needed to slash for a computation fault */
  verdictQuorum: number;
  /** seconds an accusation stays open for verdicts; then its bond goes to the accused */
  disputeWindowSec: number;
  /** protocol fee on every epoch's charges, ppm */
  feePpm: number;
  /** default price a gateway charges per token served (smallest units) */
  pricePerToken: bigint;
  /** probation: identities with fewer credited layer-steps are new */
  probationSteps: number;
  /** audit rate of a new identity (and the ceiling for a poor reputation), ppm */
  auditRateMaxPpm: number;
  /** audit rate of an identity with reputation 1, ppm (the "default audit rate" of INEQUALITY 1) */
  auditRateMinPpm: number;
  /** routing weight multiplier while on probation, ppm */
  probationWeightPpm: number;
  /** routing weight multiplier at reputation 0 (grows linearly to 1 at reputation 1), ppm */
  weightFloorPpm: number;
  /** reputation: weight of one epoch's score in the moving average, ppm */
  reputationAlphaPpm: number;
  /** reputation lost per epoch without a report, ppm of itself */
  reputationDecayPpm: number;
}

export const DEFAULT_PARAMS: Readonly<LedgerParams> = Object.freeze({
  // Large enough that INEQUALITY 1 holds with a wide margin at the lowest audit rate, small
  // enough for a hobbyist operator; 10 identities need 10× it, so splitting stake buys nothing.
  minStake: 1000n * UNIT,
  // EigenLayer's escrow period (7 days): longer than any challenge (disputeWindowSec) so every
  // fault committed while staked can still be slashed before the stake leaves.
  unbondingSec: 7 * 24 * 3600,
  // Self-proving faults that no honest node commits (slashing protection makes them
  // impossible by accident): most of the stake, like Ethereum's correlated slashing at scale.
  equivocationSlashPpm: 800_000,
  custodySlashPpm: 800_000,
  // Sized by INEQUALITY 1: p·s_c·S = 0.02·0.2·1000 ODSI = 4 ODSI ≥ any per-step gain. Lower
  // than the self-proving faults because a computation verdict rests on referees and tolerances.
  computationSlashPpm: 200_000,
  // Ethereum pays the whistleblower a small part; 10 % rewards watching without making
  // self-reporting (through a sock puppet) worthwhile: the accused still loses 90 % of the slash.
  reporterSharePpm: 100_000,
  // Costs a spammer one bond per false accusation; far below a real slash, so honest accusers
  // with a quorum are never deterred.
  accuserBond: 10n * UNIT,
  verdictQuorum: 1,
  disputeWindowSec: 24 * 3600,
  feePpm: 20_000,
  // 10^-6 ODSI per token: a million tokens cost one ODSI
  pricePerToken: 10n ** 12n,
  probationSteps: 10_000,
  // match accountability/checks/audit.ts auditRate(): p0 = 0.25 for the unknown, pMin = 0.02
  auditRateMaxPpm: 250_000,
  auditRateMinPpm: 20_000,
  probationWeightPpm: 250_000,
  weightFloorPpm: 200_000,
  // ~10 epochs of memory; a week of silence (168 hourly epochs at 2 %) leaves ~3 % of it
  reputationAlphaPpm: 100_000,
  reputationDecayPpm: 20_000,
});

/** Params with overrides; throws RangeError for values outside their meaning. */
export function makeParams(over: Partial<LedgerParams> = {}): LedgerParams {
  const p: LedgerParams = { ...DEFAULT_PARAMS, ...over };
  const ppm = (k: keyof LedgerParams): void => {
    const v = p[k] as number;
    if (!Number.isInteger(v) || v < 0 || v > PPM) throw new RangeError(`${k} must be an integer ppm in [0, 1e6]`);
  };
  for (const k of [
    'equivocationSlashPpm',
    'custodySlashPpm',
    'computationSlashPpm',
    'reporterSharePpm',
    'feePpm',
    'auditRateMaxPpm',
    'auditRateMinPpm',
    'probationWeightPpm',
    'weightFloorPpm',
    'reputationAlphaPpm',
    'reputationDecayPpm',
  ] as const)
    ppm(k);
  for (const k of ['unbondingSec', 'disputeWindowSec', 'probationSteps', 'verdictQuorum'] as const)
    if (!Number.isSafeInteger(p[k]) || p[k] < 0) throw new RangeError(`${k} must be a non-negative integer`);
  if (p.verdictQuorum < 1) throw new RangeError('verdictQuorum must be ≥ 1');
  for (const k of ['minStake', 'accuserBond', 'pricePerToken'] as const)
    if (typeof p[k] !== 'bigint' || p[k] < 0n) throw new RangeError(`${k} must be a non-negative bigint`);
  if (p.auditRateMinPpm > p.auditRateMaxPpm) throw new RangeError('auditRateMinPpm must be ≤ auditRateMaxPpm');
  return p;
}

/** The params as JSON (bigints as decimal strings), for status and the event log's genesis. */
export function paramsJson(p: LedgerParams): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(p)) out[k] = typeof v === 'bigint' ? v.toString() : (v as number);
  return out;
}

export function paramsFromJson(j: Record<string, string | number>): LedgerParams {
  const over: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(j))
    over[k] = typeof (DEFAULT_PARAMS as unknown as Record<string, unknown>)[k] === 'bigint' ? BigInt(v) : v;
  return makeParams(over as Partial<LedgerParams>);
}

// ---------------------------------------------------------------- stake and slashing

export type SlashKind = 'equivocation' | 'custody' | 'computation';

export function slashPpm(kind: SlashKind, p: LedgerParams): number {
  return kind === 'equivocation' ? p.equivocationSlashPpm : kind === 'custody' ? p.custodySlashPpm : p.computationSlashPpm;
}

/** floor(atRisk · fraction): atRisk is stake + all unbonding entries. */
export function slashAmount(kind: SlashKind, atRisk: bigint, p: LedgerParams): bigint {
  return (atRisk * BigInt(slashPpm(kind, p))) / PPMn;
}

/** reporter's part (floor) and the burned rest: reporterReward + burned = amount. */
export function splitSlash(amount: bigint, p: LedgerParams): { reporterReward: bigint; burned: bigint } {
  const reporterReward = (amount * BigInt(p.reporterSharePpm)) / PPMn;
  return { reporterReward, burned: amount - reporterReward };
}

export interface Unbonding {
  amount: bigint;
  releaseAt: number;
}

/**
 * Takes `amount` from bonded stake first, then from unbonding entries, latest release first
 * (the stake that would leave last is the one least likely to have been withdrawn). Entries
 * left at zero are dropped. Pure: returns the new state. amount must be ≤ stake + Σ entries.
 */
export function takeSlash(stake: bigint, entries: readonly Unbonding[], amount: bigint): { stake: bigint; entries: Unbonding[] } {
  let left = amount;
  const fromStake = left < stake ? left : stake;
  left -= fromStake;
  const order = entries.map((e, i) => ({ ...e, i })).sort((a, b) => b.releaseAt - a.releaseAt || b.i - a.i);
  const taken = new Map<number, bigint>();
  for (const e of order) {
    if (left === 0n) break;
    const t = left < e.amount ? left : e.amount;
    taken.set(e.i, t);
    left -= t;
  }
  if (left !== 0n) throw new RangeError('slash exceeds the stake at risk');
  const out = entries.map((e, i) => ({ amount: e.amount - (taken.get(i) ?? 0n), releaseAt: e.releaseAt })).filter((e) => e.amount > 0n);
  return { stake: stake - fromStake, entries: out };
}

/** Matured unbonding at `now`, and what remains. */
export function matured(entries: readonly Unbonding[], now: number): { ready: bigint; pending: bigint } {
  let ready = 0n;
  let pending = 0n;
  for (const e of entries)
    if (e.releaseAt <= now) ready += e.amount;
    else pending += e.amount;
  return { ready, pending };
}

/**
 * Removes `amount` of matured unbonding, oldest release first; returns the remaining entries.
 * amount must be ≤ matured(entries, now).ready.
 */
export function takeMatured(entries: readonly Unbonding[], now: number, amount: bigint): Unbonding[] {
  let left = amount;
  const order = entries.map((e, i) => ({ ...e, i })).sort((a, b) => a.releaseAt - b.releaseAt || a.i - b.i);
  const taken = new Map<number, bigint>();
  for (const e of order) {
    if (left === 0n || e.releaseAt > now) break;
    const t = left < e.amount ? left : e.amount;
    taken.set(e.i, t);
    left -= t;
  }
  if (left !== 0n) throw new RangeError('withdrawal exceeds matured unbonding');
  return entries.map((e, i) => ({ amount: e.amount - (taken.get(i) ?? 0n), releaseAt: e.releaseAt })).filter((e) => e.amount > 0n);
}

/** Routable, auditor- and referee-eligible: enough bonded stake and never slashed. */
export function isEligible(stake: bigint, slashed: boolean, p: LedgerParams): boolean {
  return !slashed && stake >= p.minStake;
}

/**
 * INEQUALITY 1 at given numbers: the expected slash per cheated step p·s_c·S (smallest units)
 * and whether it covers `gainPerStep`.
 */
export function computationDeterrence(
  p: LedgerParams,
  o: { auditRatePpm?: number; stake?: bigint; gainPerStep: bigint },
): { expectedSlashPerStep: bigint; deters: boolean } {
  const rate = BigInt(o.auditRatePpm ?? p.auditRateMinPpm);
  const S = o.stake ?? p.minStake;
  const expectedSlashPerStep = (rate * BigInt(p.computationSlashPpm) * S) / (PPMn * PPMn);
  return { expectedSlashPerStep, deters: expectedSlashPerStep >= o.gainPerStep };
}

/** The largest per-step gain the defaults deter at the lowest audit rate and minimum stake. */
export function maxGainPerStep(p: LedgerParams): bigint {
  return computationDeterrence(p, { gainPerStep: 0n }).expectedSlashPerStep;
}

// ---------------------------------------------------------------- payments

/** What a request costs its account: tokens (prompt + completion, as the API's usage reports) × price. */
export function chargeFor(tokens: number, p: LedgerParams, pricePerToken = p.pricePerToken): bigint {
  if (!Number.isSafeInteger(tokens) || tokens < 0) throw new RangeError('tokens must be a non-negative integer');
  return BigInt(tokens) * pricePerToken;
}

export interface StepShape {
  /** layers the hop ran in this step */
  layers: number;
  /** did the hop meet its deadline budget? a miss earns nothing (and costs reputation) */
  deadlineMet: boolean;
  /** the hop's deadline budget and the route's reference budget per hop, µs: tighter pays more */
  budgetUs: number;
  referenceBudgetUs: number;
  /** the hop had the largest compute time of its route (the bottleneck) */
  bottleneck: boolean;
}

/** base units per layer of a step */
export const UNITS_PER_LAYER = 1000n;

/**
 * Credit units of one layer-step: layers × 1000, plus up to +50 % for a deadline tighter than
 * the reference (linear in reference/budget − 1, capped) and +25 % at the bottleneck position;
 * 0 for a missed deadline. Integers only.
 */
export function stepUnits(s: StepShape): bigint {
  if (!s.deadlineMet || s.layers <= 0) return 0n;
  const base = BigInt(s.layers) * UNITS_PER_LAYER;
  let bonusPpm = 0;
  if (s.budgetUs > 0 && s.referenceBudgetUs > s.budgetUs)
    bonusPpm += Math.min(500_000, Math.floor(((s.referenceBudgetUs - s.budgetUs) * PPM) / s.budgetUs));
  if (s.bottleneck) bonusPpm += 250_000;
  return base + (base * BigInt(bonusPpm)) / PPMn;
}

export interface PaymentSplit {
  charged: bigint;
  fees: bigint;
  rewards: bigint;
  /** per credit, in input order (0 for forfeited credits) */
  paid: bigint[];
}

/**
 * Splits an epoch's charges: fee = floor(charged · feePpm), the rest pro rata over credit
 * units (floor); rounding dust and the shares of forfeited credits (slashed identities) go to
 * fees. rewards + fees = charged exactly. No credits at all: everything is fee.
 */
export function splitPayments(charged: bigint, credits: readonly { units: bigint; forfeited: boolean }[], p: LedgerParams): PaymentSplit {
  let fees = (charged * BigInt(p.feePpm)) / PPMn;
  const pool = charged - fees;
  const total = credits.reduce((s, c) => s + c.units, 0n);
  const paid = credits.map((c) => (total === 0n || c.forfeited ? 0n : (pool * c.units) / total));
  const rewards = paid.reduce((s, x) => s + x, 0n);
  fees += pool - rewards;
  return { charged, fees, rewards, paid };
}

// ---------------------------------------------------------------- reputation

export interface ConductReport {
  deadlinesMet: number;
  deadlinesMissed: number;
  auditsPassed: number;
  auditsFailed: number;
  availabilityPpm: number;
  throughputPpm: number;
}

/** component weights of an epoch's score, ppm; a component without data is left out and the rest renormalised */
export const SCORE_WEIGHTS = { deadlines: 350_000, audits: 350_000, availability: 200_000, throughput: 100_000 } as const;

const ratioPpm = (good: number, bad: number): number | undefined => (good + bad > 0 ? Math.floor((good * PPM) / (good + bad)) : undefined);
const clampPpm = (x: number): number => Math.max(0, Math.min(PPM, Math.floor(x)));

/** One epoch's score in ppm from a report (integers only). */
export function conductScore(r: ConductReport): number {
  const parts: [number, number | undefined][] = [
    [SCORE_WEIGHTS.deadlines, ratioPpm(r.deadlinesMet, r.deadlinesMissed)],
    [SCORE_WEIGHTS.audits, ratioPpm(r.auditsPassed, r.auditsFailed)],
    [SCORE_WEIGHTS.availability, clampPpm(r.availabilityPpm)],
    [SCORE_WEIGHTS.throughput, clampPpm(r.throughputPpm)],
  ];
  let num = 0;
  let den = 0;
  for (const [w, v] of parts)
    if (v !== undefined) {
      num += w * v;
      den += w;
    }
  return den === 0 ? 0 : Math.floor(num / den);
}

/** Moving average: prev·(1 − α) + score·α, floor, ppm. */
export function updateReputation(prevPpm: number, scorePpm: number, p: LedgerParams): number {
  const a = p.reputationAlphaPpm;
  return clampPpm(Math.floor((prevPpm * (PPM - a) + scorePpm * a) / PPM));
}

/** An epoch without a report: prev·(1 − decay), floor. */
export function decayReputation(prevPpm: number, p: LedgerParams): number {
  return clampPpm(Math.floor((prevPpm * (PPM - p.reputationDecayPpm)) / PPM));
}

/**
 * Reputation as of reputation epoch `epoch` of one last set in epoch `ownEpoch` to `ppm`:
 * decayed once per epoch in between (lazy decay, the same in both backends; 0 after 10,000).
 */
export function reputationAt(ppm: number, ownEpoch: number, epoch: number, p: LedgerParams): number {
  const n = epoch - ownEpoch;
  if (n <= 0) return ppm;
  if (n > 10_000) return 0;
  let v = ppm;
  for (let i = 0; i < n && v > 0; i++) {
    const next = decayReputation(v, p);
    if (next === v) break;
    v = next;
  }
  return v;
}

// ---------------------------------------------------------------- probation and routing

export function onProbation(layerSteps: number, p: LedgerParams): boolean {
  return layerSteps < p.probationSteps;
}

/**
 * Audit rate (ppm) an identity should get: auditRateMaxPpm on probation; after it,
 * max − (max − min)·reputation, so a proven node is audited at auditRateMinPpm.
 */
export function auditRatePpm(reputationPpm: number, layerSteps: number, p: LedgerParams): number {
  if (onProbation(layerSteps, p)) return p.auditRateMaxPpm;
  const span = p.auditRateMaxPpm - p.auditRateMinPpm;
  return p.auditRateMaxPpm - Math.floor((span * clampPpm(reputationPpm)) / PPM);
}

/** auditRatePpm as a probability in [0, 1]. */
export function auditRate(reputationPpm: number, layerSteps: number, p: LedgerParams): number {
  return auditRatePpm(reputationPpm, layerSteps, p) / PPM;
}

/**
 * Routing weight: bonded stake × (floor + (1 − floor)·reputation) × (probation multiplier
 * while on probation); 0 when not eligible. Linear in stake, so 10 identities with S/10
 * each weigh what one identity with S weighs (with the same record): no Sybil gain.
 */
export function routingWeight(o: { stake: bigint; slashed: boolean; reputationPpm: number; layerSteps: number }, p: LedgerParams): bigint {
  if (!isEligible(o.stake, o.slashed, p)) return 0n;
  const repFactor = BigInt(p.weightFloorPpm) + (BigInt(PPM - p.weightFloorPpm) * BigInt(clampPpm(o.reputationPpm))) / PPMn;
  let w = (o.stake * repFactor) / PPMn;
  if (onProbation(o.layerSteps, p)) w = (w * BigInt(p.probationWeightPpm)) / PPMn;
  return w;
}

// ---------------------------------------------------------------- amounts as text

/** "12.5" ODSI (or a plain integer of smallest units with `units`) → bigint smallest units. */
export function parseAmount(text: string): bigint {
  const t = text.trim();
  const m = /^(\d+)(?:\.(\d{1,18}))?$/.exec(t);
  if (!m) throw new RangeError(`not an amount: ${JSON.stringify(text)} (ODSI, up to 18 decimals)`);
  return BigInt(m[1]!) * UNIT + BigInt((m[2] ?? '').padEnd(18, '0') || '0');
}

/** bigint smallest units → ODSI decimal text without trailing zeros. */
export function formatAmount(v: bigint): string {
  const neg = v < 0n;
  const a = neg ? -v : v;
  const frac = (a % UNIT).toString().padStart(18, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${a / UNIT}${frac ? `.${frac}` : ''}`;
}
