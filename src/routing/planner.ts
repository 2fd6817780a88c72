// Route planning: the router's cost model over whatever nodes a candidate source knows, minus
// banned and otherwise unavailable peers. The source is chosen at start-up: DHT discovery
// (src/gateway/discovery.ts) or a fixed list (tests, benchmarks, a statically configured
// gateway). The planner itself is pure: it reads the source and the ban list on every call.
// Peers in a recent dispute (disputes.ts) are left out while a route without them exists (all
// of them, else all but one: the one whose range has no other node).
// With a StakeView (stake.ts) it routes only to eligible, not excluded identities, and for each
// layer range draws one of the comparable candidates (cost within comparableSpread of the
// cheapest) with probability proportional to its stake weight; the others sit this call out.

import { DEFAULT_UNKNOWN_RTT_MS, NoRouteError, hopComputeMs, selectRoute, type Route, type RouteCandidate } from './router.js';
import { addressOfPeerId, peerEligible, pickByWeight, uniformSource, type StakeView } from './stake.js';

/** Where routes come from: the gateway's planner, for first routes and replacements alike. */
export interface RoutePlanner {
  route(opts?: { exclude?: Set<string>; needKvTokens?: number }): Route;
}

/** The nodes a planner may use, and what is known about the links to them. */
export interface CandidateSource {
  /** nodes that may serve part of a route now */
  candidates(): readonly RouteCandidate[];
  /** measured gateway↔peer RTTs, ms (a peer without one is assumed to be far) */
  rttMs(): ReadonlyMap<string, number>;
  /** peers not to route to now although they are candidates (e.g. silent on recent pings) */
  unavailable(): ReadonlySet<string>;
}

/** A fixed list of nodes: no discovery, no RTT measurements. */
export class StaticCandidates implements CandidateSource {
  private readonly list: readonly RouteCandidate[];
  private readonly none = new Map<string, number>();

  constructor(list: readonly RouteCandidate[]) {
    this.list = list.map((c) => ({ ...c }));
  }

  candidates(): readonly RouteCandidate[] {
    return this.list;
  }
  rttMs(): ReadonlyMap<string, number> {
    return this.none;
  }
  unavailable(): ReadonlySet<string> {
    return new Set();
  }
}

export interface CostPlannerOptions {
  /** decoder layers every route must cover */
  nLayers: number;
  /** peers banned after failures are skipped while their ban lasts */
  bans?: { active(): Set<string> };
  /** peers in a recent dispute (disputes.ts): skipped while a route without them exists */
  doubts?: { active(): Set<string> };
  /** seed for the router's tie-breaking, advanced per call (default: random per call) */
  seed?: number;
  /** the router's near-tie spread (default: the router's) */
  tieJitter?: number;
  /** stake and reputation: eligibility and weights (absent: every candidate may serve, cost alone decides) */
  stake?: StakeView;
  /** candidates of one range within this relative cost of its cheapest are drawn by weight (default 0.5) */
  comparableSpread?: number;
}

/** doubted peers each tried as the one let back in when no route avoids them all */
const MAX_DOUBT_TRIES = 8;

/** The least-cost route over a candidate source, skipping banned and unavailable peers. */
export class CostPlanner implements RoutePlanner {
  private calls = 0;

  constructor(
    private readonly source: CandidateSource,
    private readonly o: CostPlannerOptions,
  ) {}

  route(opts: { exclude?: Set<string>; needKvTokens?: number } = {}): Route {
    const seed = this.o.seed === undefined ? undefined : this.o.seed + this.calls++;
    return this.plan(opts, seed);
  }

  /**
   * The route the next route() call would draw, without drawing it: the seeded counter stays
   * where it is, so status pages and scrapes calling this as often as they like leave the
   * sequence of routes requests get unchanged. (Unseeded, it is one fresh draw like route().)
   */
  preview(opts: { exclude?: Set<string>; needKvTokens?: number } = {}): Route {
    return this.plan(opts, this.o.seed === undefined ? undefined : this.o.seed + this.calls);
  }

  private plan(opts: { exclude?: Set<string>; needKvTokens?: number }, seed: number | undefined): Route {
    // doubted peers: all left out if a route remains, else all but one (each in turn, for at
    // most MAX_DOUBT_TRIES of them: bounded work per call), else none
    const doubted = [...(this.o.doubts?.active() ?? [])];
    const allButOne = doubted.length > 1 ? doubted.slice(0, MAX_DOUBT_TRIES).map((d) => doubted.filter((x) => x !== d)) : [];
    const tries = doubted.length ? [doubted, ...allButOne] : [];
    for (const avoid of tries) {
      try {
        return this.planAvoiding(opts, seed, avoid);
      } catch (e) {
        if (!(e instanceof NoRouteError)) throw e;
      }
    }
    return this.planAvoiding(opts, seed);
  }

  private planAvoiding(
    opts: { exclude?: Set<string>; needKvTokens?: number },
    seed: number | undefined,
    doubted: readonly string[] = [],
  ): Route {
    const exclude = new Set([...(this.o.bans?.active() ?? []), ...this.source.unavailable(), ...(opts.exclude ?? []), ...doubted]);
    const candidates = this.source.candidates();
    const rttMs = this.source.rttMs();
    if (this.o.stake) this.drawByStake(this.o.stake, candidates, rttMs, exclude, opts.needKvTokens, seed);
    return selectRoute(candidates, {
      nLayers: this.o.nLayers,
      rttMs,
      exclude,
      needKvTokens: opts.needKvTokens,
      tieJitter: this.o.tieJitter,
      seed,
    });
  }

  /**
   * Adds to `exclude` every identity that may not serve, and, per layer range, all comparable
   * candidates but one drawn with probability ∝ stake weight.
   */
  private drawByStake(
    stake: StakeView,
    candidates: readonly RouteCandidate[],
    rttMs: ReadonlyMap<string, number>,
    exclude: Set<string>,
    needKvTokens: number | undefined,
    seed: number | undefined,
  ): void {
    const groups = new Map<string, RouteCandidate[]>();
    for (const c of candidates) {
      if (exclude.has(c.peerId)) continue;
      if (!peerEligible(stake, c.peerId)) {
        exclude.add(c.peerId);
        continue;
      }
      const k = `${c.start}:${c.end}`;
      groups.set(k, [...(groups.get(k) ?? []), c]);
    }
    // the router's own estimate of a hop (compute with load, link in, full-cache penalty)
    const cost = (c: RouteCandidate) =>
      hopComputeMs(c, c.end - c.start, { needKvTokens }) + (rttMs.get(c.peerId) ?? DEFAULT_UNKNOWN_RTT_MS) / 2;
    const spread = this.o.comparableSpread ?? 0.5;
    const u = uniformSource(seed === undefined ? undefined : seed ^ 0x5bd1e995);
    for (const group of groups.values()) {
      if (group.length < 2) continue;
      const best = Math.min(...group.map(cost));
      const comparable = group.filter((c) => cost(c) <= best * (1 + spread) + 1e-9);
      const chosen = pickByWeight(comparable, (c) => stake.weight(addressOfPeerId(c.peerId)!), u());
      for (const c of comparable) if (c !== chosen) exclude.add(c.peerId);
    }
  }
}
