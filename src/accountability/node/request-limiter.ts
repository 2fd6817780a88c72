// Per-peer bounds on the audit protocols' work: requests per remote peer per minute and in
// flight at once. A peer over either limit is refused with `limit: …`; other peers are not
// affected. Memory is bounded: at most `maxPeers` peers are tracked, idle ones are forgotten first.

/** How much one remote peer may ask of one audit protocol. */
export interface PeerLimits {
  /** requests accepted per peer per (fixed) minute */
  perMinute: number;
  /** requests of one peer being served at once */
  inFlight: number;
}

interface PeerUse {
  windowStart: number;
  count: number;
  inFlight: number;
}

const WINDOW_MS = 60_000;

export class PeerLimiter {
  private readonly peers = new Map<string, PeerUse>();

  constructor(
    readonly limits: PeerLimits,
    /** what is limited, for the refusal text, e.g. "audit fetches" */
    private readonly what: string,
    private readonly maxPeers = 4096,
  ) {}

  /** Admits one request of `peer`: a release function to call when it is done, or the refusal. */
  acquire(peer: string, now = Date.now()): { release: () => void } | { refusal: string } {
    let u = this.peers.get(peer);
    if (!u) {
      if (this.peers.size >= this.maxPeers) this.forgetIdle(now);
      if (this.peers.size >= this.maxPeers) return { refusal: `limit: this node is serving ${this.what} to too many peers` };
      u = { windowStart: now, count: 0, inFlight: 0 };
      this.peers.set(peer, u);
    }
    if (now - u.windowStart >= WINDOW_MS) {
      u.windowStart = now;
      u.count = 0;
    }
    if (u.inFlight >= this.limits.inFlight)
      return { refusal: `limit: ${u.inFlight} ${this.what} of this peer in flight (at most ${this.limits.inFlight})` };
    if (u.count >= this.limits.perMinute)
      return { refusal: `limit: ${u.count} ${this.what} of this peer this minute (at most ${this.limits.perMinute})` };
    u.count++;
    u.inFlight++;
    let released = false;
    const use = u;
    return {
      release: () => {
        if (released) return;
        released = true;
        use.inFlight--;
      },
    };
  }

  private forgetIdle(now: number): void {
    for (const [k, u] of this.peers) if (u.inFlight === 0 && now - u.windowStart >= WINDOW_MS) this.peers.delete(k);
  }
}
