// Peers that failed recently, skipped by routing for a while. Each new failure doubles the
// ban (base·2^(failures-1), capped), so a flapping node costs less and less; a peer that
// stays healthy for `forgetMs` after its ban ends starts again from the base. A record that old
// counts for nothing, so past `maxEntries` records such records are dropped: the list holds the
// peers that failed within a ban plus `forgetMs`, however many identities ever failed.

export interface BanInfo {
  peerId: string;
  until: number;
  failures: number;
  reason?: string;
}

export interface BanListOptions {
  /** first ban, ms (default 5 s) */
  baseMs?: number;
  /** longest ban, ms (default 2 min) */
  maxMs?: number;
  /** a failure this long after the last ban ended counts as the first again (default 10 min) */
  forgetMs?: number;
  /** past this many records, those forgotten (`forgetMs` after their ban ended) are dropped (default 4096) */
  maxEntries?: number;
}

/** `until` of a peer barred for good: the last instant a Date can hold (a number, so that it survives JSON) */
export const FOREVER = 8.64e15;

export class BanList {
  private bans = new Map<string, BanInfo>();
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly forgetMs: number;
  private readonly maxEntries: number;

  constructor(o: BanListOptions = {}) {
    this.baseMs = o.baseMs ?? 5_000;
    this.maxMs = o.maxMs ?? 120_000;
    this.forgetMs = o.forgetMs ?? 600_000;
    this.maxEntries = o.maxEntries ?? 4096;
  }

  /** Ban a peer after a failure; returns the ban length in ms. */
  ban(peerId: string, reason?: string, now = Date.now()): number {
    const prev = this.bans.get(peerId);
    if (prev?.until === FOREVER) return FOREVER - now; // barred for good stays barred
    const failures = prev && now - prev.until < this.forgetMs ? prev.failures + 1 : 1;
    const ms = Math.min(this.maxMs, this.baseMs * 2 ** (failures - 1));
    this.bans.set(peerId, { peerId, until: now + ms, failures, reason });
    if (this.bans.size > this.maxEntries) this.forget(now);
    return ms;
  }

  /** drops the records that no longer count (`forgetMs` after their ban ended; never a bar for good) */
  private forget(now: number): void {
    for (const [p, b] of this.bans) if (b.until !== FOREVER && now - b.until >= this.forgetMs) this.bans.delete(p);
  }

  /**
   * Bars a peer for good: there is signed evidence of its misbehaviour (a conviction), so unlike
   * a failure it is not retried once a ban runs out. Kept as long as this list lives.
   */
  banForGood(peerId: string, reason?: string): void {
    this.bans.set(peerId, { peerId, until: FOREVER, failures: (this.bans.get(peerId)?.failures ?? 0) + 1, reason });
  }

  isBanned(peerId: string, now = Date.now()): boolean {
    return (this.bans.get(peerId)?.until ?? 0) > now;
  }

  /** peers banned right now */
  active(now = Date.now()): Set<string> {
    const out = new Set<string>();
    for (const [p, b] of this.bans) if (b.until > now) out.add(p);
    return out;
  }

  /** current and past bans (for status pages) */
  list(): BanInfo[] {
    return [...this.bans.values()].map((b) => ({ ...b }));
  }

  /** forget a peer's record (an operator restarted it) */
  clear(peerId: string): void {
    this.bans.delete(peerId);
  }
}
