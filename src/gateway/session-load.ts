// The sessions this gateway has open per peer, laid over a candidate source: a node's load as
// the planner sees it is the larger of what the node reported and what this gateway knows it
// sent there (fresher than an advert).

import type { CandidateSource } from '../routing/planner.js';
import type { RouteCandidate } from '../routing/router.js';

export class SessionLoad implements CandidateSource {
  private readonly open = new Map<string, number>();

  constructor(private readonly inner: CandidateSource) {}

  candidates(): readonly RouteCandidate[] {
    return this.inner.candidates().map((c) => ({ ...c, load: Math.max(c.load, this.open.get(c.peerId) ?? 0) }));
  }
  rttMs(): ReadonlyMap<string, number> {
    return this.inner.rttMs();
  }
  unavailable(): ReadonlySet<string> {
    return this.inner.unavailable();
  }

  /** a session now runs through these peers; returns its release (idempotent) */
  hold(peers: readonly string[]): () => void {
    for (const p of peers) this.open.set(p, (this.open.get(p) ?? 0) + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      for (const p of peers) this.open.set(p, Math.max(0, (this.open.get(p) ?? 1) - 1));
    };
  }
}
