// The one-way delay from this node to each next hop (half a libp2p ping's RTT), which a session's
// deadline slack accounts for. Measured at most once per LINK_REFRESH_MS per peer and shared by
// every session forwarding to that peer, instead of a ping stream per session open: a session
// gets the known delay at once, and a fresh measurement when one was due.

import type { OdsiHost } from '../p2p/host.js';

/** how long a measured delay is used before it is measured again */
export const LINK_REFRESH_MS = 10_000;
/** peers remembered; the least recently measured goes first */
const MAX_PEERS = 256;

interface Link {
  ms: number;
  at: number;
  measuring: boolean;
}

export class LinkDelays {
  private readonly links = new Map<string, Link>();

  constructor(private readonly host: OdsiHost) {}

  /** Calls `set` with the known delay to `peerId` now (if any), and with a new one when a due measurement arrives. */
  apply(peerId: string, set: (ms: number) => void): void {
    const now = Date.now();
    let l = this.links.get(peerId);
    if (l) set(l.ms);
    if (l && (l.measuring || now - l.at < LINK_REFRESH_MS)) return;
    if (!l) {
      if (this.links.size >= MAX_PEERS) this.links.delete(this.links.keys().next().value!);
      l = { ms: 0, at: 0, measuring: false };
      this.links.set(peerId, l);
    }
    const link = l;
    link.measuring = true;
    void this.host.ping(peerId).then(
      (rtt) => {
        Object.assign(link, { ms: rtt / 2, at: Date.now(), measuring: false });
        // most recently measured last: eviction takes the stalest
        this.links.delete(peerId);
        this.links.set(peerId, link);
        set(link.ms);
      },
      () => Object.assign(link, { at: Date.now(), measuring: false }), // tried: not again before the refresh
    );
  }
}
