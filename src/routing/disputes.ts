// One hop's word against its route neighbour's. A hop that refuses its input or the receipts
// that came with it (`custody`, `bad_message`, …) names the hop before it, and one that re-issues
// what its next hop sent back names that hop (node/error-relay.ts); the gateway verifies who
// said so (route/error-blame.ts) but cannot tell which of the two lies: the link between them
// is theirs alone. So such an accusation bans nobody on its own. It is a dispute: both peers
// are doubted (avoided while another route exists, 5 s, doubling with each repeat up to 2 min),
// and a peer is banned only once it is in disputes with `threshold` distinct peers, none of
// them banned themselves, within `windowMs`. The fewest liars that explain every dispute are
// the ones banned: a lone liar, whoever it accuses or whoever accuses it, is banned at its second
// victim, and its first victim is not; framing an honest peer takes `threshold` identities
// (stake, not this rule, is what makes identities dear: docs/threat-model.md). An honest hop
// that was right about two liars is spared once either is banned, and cleared (its ban undone)
// when one is later proven to have lied (absolve).

import { BanList, type BanInfo } from './bans.js';
import { RecentByPeer } from './recent-by-peer.js';

export interface DisputesOptions {
  /** the gateway's ban list: consulted (a banned counterparty does not count) and told */
  bans: {
    ban(peerId: string, reason?: string, now?: number): number;
    isBanned(peerId: string, now?: number): boolean;
    clear(peerId: string): void;
  };
  /** distinct counterparties that get a peer banned (default 2) */
  threshold?: number;
  /** disputes older than this are forgotten, ms (default 10 min, as long as a ban's record) */
  windowMs?: number;
  /** peers remembered at most, the longest unheard of dropped first (default 4096) */
  maxPeers?: number;
}

/** counterparties remembered per peer: a peer reaching `threshold` is banned anyway */
const MAX_COUNTERPARTIES = 64;

export class Disputes {
  /** peers in a recent dispute: the planner avoids them while it can (they are not banned) */
  readonly doubts = new BanList();
  /** since start: disputes heard, and peers they got banned */
  readonly stats = { disputes: 0, banned: 0 };
  /** peer → the peers it recently disputed with (each once, at the latest dispute) */
  private readonly parties: RecentByPeer<string>;
  private readonly threshold: number;
  private readonly maxPeers: number;
  /** peers this rule banned (their ban may be undone: absolve) */
  private readonly bannedHere = new Set<string>();

  constructor(private readonly o: DisputesOptions) {
    this.threshold = o.threshold ?? 2;
    this.maxPeers = o.maxPeers ?? 4096;
    this.parties = new RecentByPeer({ windowMs: o.windowMs ?? 600_000, maxPeers: this.maxPeers, perPeer: MAX_COUNTERPARTIES });
  }

  /**
   * `accuser` says `accused` failed it (`reason`): both are doubted, and each that is now in
   * disputes with `threshold` distinct peers not banned themselves is banned. Returns the
   * peers banned by this dispute (the accused is judged first).
   */
  dispute(accuser: string, accused: string, reason: string, now = Date.now()): string[] {
    if (accuser === accused) return [];
    this.stats.disputes++;
    this.parties.add(accuser, accused, now, (q) => q === accused);
    this.parties.add(accused, accuser, now, (q) => q === accuser);
    const banned: string[] = [];
    for (const p of [accused, accuser]) {
      this.doubts.ban(p, `dispute: ${reason}`, now);
      if (this.o.bans.isBanned(p, now)) continue;
      const against = this.counterparties(p, now);
      if (against.length < this.threshold) continue;
      this.o.bans.ban(p, `in disputes with ${against.length} peers (${against.join(', ')}): ${reason}`, now);
      banned.push(p);
      this.bannedHere.add(p);
      if (this.bannedHere.size > this.maxPeers) this.bannedHere.delete(this.bannedHere.values().next().value as string);
    }
    this.stats.banned += banned.length;
    return banned;
  }

  /** the peers `peerId` disputed with within the window, those banned now left out */
  counterparties(peerId: string, now = Date.now()): string[] {
    return this.parties.recent(peerId, now).filter((q) => !this.o.bans.isBanned(q, now));
  }

  /**
   * `liar` is proven to have lied (its own signed record: accountability/gateway/dispute-evidence.ts)
   * and is barred: the peers it disputed with are cleared. Their doubt is lifted, and a ban this
   * rule gave one is undone when its disputes with peers not banned no longer reach the
   * threshold. Returns the peers whose ban was undone.
   */
  absolve(liar: string, now = Date.now()): string[] {
    const undone: string[] = [];
    for (const q of this.parties.recent(liar, now)) {
      this.doubts.clear(q);
      if (!this.bannedHere.has(q) || this.counterparties(q, now).length >= this.threshold) continue;
      this.bannedHere.delete(q);
      this.o.bans.clear(q);
      undone.push(q);
    }
    return undone;
  }

  /** peers doubted now and past (status pages) */
  list(): BanInfo[] {
    return this.doubts.list();
  }
}
