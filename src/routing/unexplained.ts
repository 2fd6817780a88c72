// Step failures nobody explains. A step that never came back on a route whose hops all still
// answer a ping and a probe step (route/diagnose.ts) has a culprit the gateway cannot name: a
// hop that drops running sessions' steps while it serves fresh ones (a probe is one), a link
// between two hops, or a passing stall. One request avoids the whole route (its suspects); this
// is what the gateway keeps of it: every hop of the route is doubted (the doubts disputes.ts
// keeps: avoided while a route without them exists, 5 s, doubling with each repeat up to 2 min),
// and a peer is banned only once it alone explains `threshold` such failures within `windowMs`:
// it was on the route of each, and no other peer was on all of them. A failure whose route
// holds a peer banned now is explained by that peer and does not count against the others.
// So a lone selective staller is banned once its failures ran through different peers, and
// they are not; peers that always failed together (the same route, chosen again) are doubted
// alike, as the gateway cannot tell them apart.

import { RecentByPeer } from './recent-by-peer.js';

export interface UnexplainedOptions {
  /** the gateway's ban list: consulted (a banned peer explains the failures it was in) and told */
  bans: { ban(peerId: string, reason?: string, now?: number): number; isBanned(peerId: string, now?: number): boolean };
  /** where the route's peers are doubted (the disputes' doubts: one list the planner reads) */
  doubts: { ban(peerId: string, reason?: string, now?: number): number };
  /** failures a peer must alone explain to be banned (default 3) */
  threshold?: number;
  /** failures older than this are forgotten, ms (default 10 min, as long as a ban's record) */
  windowMs?: number;
  /** peers remembered at most, the longest unheard of dropped first (default 4096) */
  maxPeers?: number;
}

/** failures remembered per peer (the newest) */
const MAX_FAILURES_PER_PEER = 16;

export class UnexplainedFailures {
  /** since start: failures heard, and peers they got banned */
  readonly stats = { failures: 0, banned: 0 };
  /** peer → the routes of the unexplained failures it was on */
  private readonly seen: RecentByPeer<readonly string[]>;
  private readonly threshold: number;

  constructor(private readonly o: UnexplainedOptions) {
    this.threshold = o.threshold ?? 3;
    this.seen = new RecentByPeer({ windowMs: o.windowMs ?? 600_000, maxPeers: o.maxPeers ?? 4096, perPeer: MAX_FAILURES_PER_PEER });
  }

  /**
   * A step on `route` (its hops' peer ids) was lost and nobody explains why (`reason`): every hop
   * is doubted, and each that now alone explains `threshold` failures is banned. Returns the
   * peers banned by this failure.
   */
  failed(route: readonly string[], reason: string, now = Date.now()): string[] {
    const hops = [...new Set(route)];
    if (!hops.length) return [];
    this.stats.failures++;
    for (const p of hops) {
      this.seen.add(p, hops, now);
      this.o.doubts.ban(p, `unexplained failure: ${reason}`, now);
    }
    const banned: string[] = [];
    for (const p of hops) {
      if (this.o.bans.isBanned(p, now)) continue;
      const n = this.explainedBy(p, now);
      if (n < this.threshold) continue;
      this.o.bans.ban(p, `alone on the routes of ${n} unexplained failures: ${reason}`, now);
      banned.push(p);
    }
    this.stats.banned += banned.length;
    return banned;
  }

  /**
   * How many of the failures `peerId` was in within the window it alone explains: 0 unless no
   * other peer was on all of them (those with a peer banned now left out).
   */
  explainedBy(peerId: string, now = Date.now()): number {
    const routes = this.seen.recent(peerId, now).filter((r) => !r.some((q) => q !== peerId && this.o.bans.isBanned(q, now)));
    if (!routes.length) return 0;
    const common = routes.reduce((c, r) => c.filter((q) => r.includes(q)), routes[0]!);
    return common.length === 1 ? routes.length : 0;
  }
}
