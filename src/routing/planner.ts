// Route planning: the router's cost model over whatever nodes a candidate source knows, minus
// banned and otherwise unavailable peers. The source is chosen at start-up: DHT discovery
// (src/gateway/discovery.ts) or a fixed list (tests, benchmarks, a statically configured
// gateway). The planner itself is pure: it reads the source and the ban list on every call.

import { selectRoute, type Route, type RouteCandidate } from './router.js';

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
  /** seed for the router's tie-breaking, advanced per call (default: random per call) */
  seed?: number;
  /** the router's near-tie spread (default: the router's) */
  tieJitter?: number;
}

/** The least-cost route over a candidate source, skipping banned and unavailable peers. */
export class CostPlanner implements RoutePlanner {
  private calls = 0;

  constructor(
    private readonly source: CandidateSource,
    private readonly o: CostPlannerOptions,
  ) {}

  route(opts: { exclude?: Set<string>; needKvTokens?: number } = {}): Route {
    const exclude = new Set([...(this.o.bans?.active() ?? []), ...this.source.unavailable(), ...(opts.exclude ?? [])]);
    return selectRoute(this.source.candidates(), {
      nLayers: this.o.nLayers,
      rttMs: this.source.rttMs(),
      exclude,
      needKvTokens: opts.needKvTokens,
      tieJitter: this.o.tieJitter,
      seed: this.o.seed === undefined ? undefined : this.o.seed + this.calls++,
    });
  }
}
