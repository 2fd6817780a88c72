// Signed OPENs already used to open a session here, remembered until they expire, so that a
// peer that saw one (the gateway's previous hop in the route) cannot present it again to
// re-open the session once it has closed. A signed OPEN is valid for at most OPEN_TTL_MS, so
// each entry lives at most that long; the table is bounded, and when it is full of unexpired
// entries new OPENs are refused (busy) rather than an entry forgotten early.

export class UsedOpens {
  /** signature → expiresAt (unix ms); insertion order ≈ expiry order */
  private readonly used = new Map<string, number>();

  constructor(private readonly max = 65_536) {}

  get size(): number {
    return this.used.size;
  }

  /** Whether this signed OPEN already opened a session here. */
  has(signature: string, now = Date.now()): boolean {
    const exp = this.used.get(signature);
    return exp !== undefined && exp >= now;
  }

  /** Whether there is room for one more (expired entries are dropped first). */
  hasRoom(now = Date.now()): boolean {
    this.expire(now);
    return this.used.size < this.max;
  }

  /** Records that this signed OPEN opened a session. */
  add(signature: string, expiresAt: number): void {
    this.used.set(signature, expiresAt);
  }

  private expire(now: number): void {
    for (const [sig, exp] of this.used) {
      if (exp >= now) return;
      this.used.delete(sig);
    }
  }
}
