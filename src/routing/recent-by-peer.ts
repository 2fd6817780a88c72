// What each peer was recently part of (disputes, unexplained failures): bounded in time (entries
// older than the window are forgotten), per peer (the newest `perPeer` kept) and in peers (past
// `maxPeers`, the peer longest unheard of is forgotten first), so strangers cannot grow it.

export interface RecentByPeerOptions {
  /** entries older than this are forgotten, ms */
  windowMs: number;
  /** peers remembered at most */
  maxPeers: number;
  /** entries remembered per peer at most, the newest */
  perPeer: number;
}

export class RecentByPeer<T> {
  private readonly byPeer = new Map<string, { at: number; value: T }[]>();

  constructor(private readonly o: RecentByPeerOptions) {}

  /** `peer` was part of `value` at `now`; an earlier entry for which `replaces` holds is dropped first */
  add(peer: string, value: T, now: number, replaces?: (earlier: T) => boolean): void {
    const list = (this.byPeer.get(peer) ?? []).filter((e) => now - e.at <= this.o.windowMs && !replaces?.(e.value));
    list.push({ at: now, value });
    if (list.length > this.o.perPeer) list.shift();
    this.byPeer.delete(peer); // re-inserted last: the longest unheard of is dropped first
    this.byPeer.set(peer, list);
    if (this.byPeer.size > this.o.maxPeers) this.byPeer.delete(this.byPeer.keys().next().value as string);
  }

  /** what `peer` was part of within the window, oldest first */
  recent(peer: string, now: number): T[] {
    return (this.byPeer.get(peer) ?? []).filter((e) => now - e.at <= this.o.windowMs).map((e) => e.value);
  }
}
