// The ledger as routing and auditing read it: a StakeView (routing/stake.ts) over a snapshot of
// the ledger's identities, refreshed in the background (reads are synchronous and never touch
// the ledger on the token path). What one refresh reads is bounded:
//   - a ledger that reports its changes (the EVM backend's identityChanges: the registry's event
//     logs from the last block read) is followed incrementally: only identities named by new
//     events are re-read (all tracked ones after an epoch settlement, whose reputation moved),
//     at most `readsPerRefresh` per refresh, and at most `maxTracked` identities are kept —
//     eligible or slashed ones; when full, a newcomer displaces the smallest stake (anyone can
//     register, but crowding out the view costs minStake per identity);
//   - otherwise (the embedded ledger, a local file read in its worker) the status snapshot.
// Eligibility, weights and audit rates are the rules' own
// functions (rules.ts: isEligible via the ledger, routingWeight, auditRate), so routing, the
// SQLite backend and the contract agree. An identity convicted here but not yet slashed on the
// ledger can be excluded at once (exclude()).

import type { Address, IdentityStatus, Ledger } from './ledger.js';
import { UNIT, auditRate, routingWeight } from './rules.js';
import type { StakeView } from '../routing/stake.js';

export interface LedgerStakeViewOptions {
  /** how often the snapshot is re-read (default 5 s; 0: only on refresh()) */
  refreshMs?: number;
  /** identities kept at most (incremental mode; default 1024) */
  maxTracked?: number;
  /** identity reads per refresh at most (incremental mode; default 256; the rest wait for the next) */
  readsPerRefresh?: number;
  /** blocks of events read per call (incremental mode; default 5000; at most 20 calls per refresh) */
  blocksPerRead?: number;
  onError?: (e: Error) => void;
}

export class LedgerStakeView implements StakeView {
  private snapshot = new Map<string, IdentityStatus>();
  private readonly excludedHere = new Set<string>();
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<void>;
  /** incremental mode: the last block read, and identities waiting to be re-read */
  private cursor = -1n;
  private readonly due = new Set<string>();

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
    this.refreshing ??= (this.ledger.identityChanges ? this.follow() : this.readAll()).finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  /** how many identities the view holds */
  get size(): number {
    return this.snapshot.size;
  }

  private async readAll(): Promise<void> {
    const st = await this.ledger.status();
    this.snapshot = new Map(st.identities.map((i) => [i.address.toLowerCase(), i]));
  }

  private async follow(): Promise<void> {
    const max = this.o.maxTracked ?? 1024;
    for (let calls = 0; calls < 20; calls++) {
      const c = await this.ledger.identityChanges!(this.cursor, this.o.blocksPerRead ?? 5000);
      this.cursor = c.upTo;
      if (c.epochs) for (const k of this.snapshot.keys()) this.due.add(k);
      for (const a of c.addresses) {
        const k = a.toLowerCase();
        // tracked identities are always re-read; newcomers wait in a queue as long as the view
        if (this.snapshot.has(k) || this.due.size < 2 * max) this.due.add(k);
      }
      if (c.upTo >= c.head) break;
    }
    const batch = [...this.due].slice(0, this.o.readsPerRefresh ?? 256);
    // 16 reads in flight at most (each is a few RPC calls)
    for (let i = 0; i < batch.length; i += 16) {
      const part = batch.slice(i, i + 16);
      const read = await Promise.all(part.map((k) => this.ledger.identity(k as Address)));
      part.forEach((k, j) => {
        this.due.delete(k);
        this.admit(k, read[j], max);
      });
    }
  }

  /** Keeps `st` if it matters to routing (eligible or slashed), within `max` identities. */
  private admit(k: string, st: IdentityStatus | undefined, max: number): void {
    if (!st || !(st.eligible || st.slashes.length > 0)) {
      this.snapshot.delete(k);
      return;
    }
    if (!this.snapshot.has(k) && this.snapshot.size >= max) {
      // full: displace the smallest unslashed stake, if the newcomer's is larger (or it is slashed)
      let low: [string, bigint] | undefined;
      for (const [a, v] of this.snapshot)
        if (!v.slashes.length && (!low || BigInt(v.stake) < low[1])) low = [a, BigInt(v.stake)];
      if (!low || (!st.slashes.length && BigInt(st.stake) <= low[1])) return;
      this.snapshot.delete(low[0]);
    }
    this.snapshot.set(k, st);
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
