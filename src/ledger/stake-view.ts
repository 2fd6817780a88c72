// The ledger as routing and auditing read it: a StakeView (routing/stake.ts) over a snapshot of
// the ledger's identities, refreshed in the background (reads are synchronous and never touch
// the ledger on the token path). Eligibility, weights and audit rates are the rules' own
// functions (rules.ts: isEligible via the ledger, routingWeight, auditRate), so routing, the
// SQLite backend and the contract agree. An identity convicted here but not yet slashed on the
// ledger can be excluded at once (exclude()).

import type { Address, IdentityStatus, Ledger } from './ledger.js';
import { UNIT, auditRate, routingWeight } from './rules.js';
import type { StakeView } from '../routing/stake.js';

export interface LedgerStakeViewOptions {
  /** how often the snapshot is re-read (default 5 s; 0: only on refresh()) */
  refreshMs?: number;
  onError?: (e: Error) => void;
}

export class LedgerStakeView implements StakeView {
  private snapshot = new Map<string, IdentityStatus>();
  private readonly excludedHere = new Set<string>();
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<void>;

  private constructor(
    private readonly ledger: Ledger,
    private readonly o: LedgerStakeViewOptions,
  ) {}

  /** A view with its first snapshot read. */
  static async open(ledger: Ledger, o: LedgerStakeViewOptions = {}): Promise<LedgerStakeView> {
    const v = new LedgerStakeView(ledger, o);
    await v.refresh();
    if ((o.refreshMs ?? 5000) > 0) {
      v.timer = setInterval(() => void v.refresh().catch((e: Error) => o.onError?.(e)), o.refreshMs ?? 5000);
      v.timer.unref();
    }
    return v;
  }

  /** Re-reads the ledger (one read at a time; concurrent callers share it). */
  refresh(): Promise<void> {
    this.refreshing ??= this.ledger
      .status()
      .then((st) => {
        this.snapshot = new Map(st.identities.map((i) => [i.address.toLowerCase(), i]));
      })
      .finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** what the snapshot says of one identity */
  get(address: string): IdentityStatus | undefined {
    return this.snapshot.get(address.toLowerCase());
  }

  /** excluded from now on (a conviction here, before the ledger's slash lands) */
  exclude(address: Address): void {
    this.excludedHere.add(address.toLowerCase());
  }

  eligible(address: string): boolean {
    const r = this.get(address);
    return !!r && r.eligible && !this.excluded(address);
  }

  weight(address: string): number {
    const r = this.get(address);
    if (!r || this.excluded(address)) return 0;
    const w = routingWeight(
      { stake: BigInt(r.stake), slashed: r.slashes.length > 0, reputationPpm: r.reputationPpm, layerSteps: r.layerSteps },
      this.ledger.params,
    );
    return Number(w) / Number(UNIT);
  }

  excluded(address: string): boolean {
    return this.excludedHere.has(address.toLowerCase()) || (this.get(address)?.slashes.length ?? 0) > 0;
  }

  auditRate(address: string): number | undefined {
    const r = this.get(address);
    return r ? auditRate(r.reputationPpm, r.layerSteps, this.ledger.params) : undefined;
  }
}
