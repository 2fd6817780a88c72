// A RoutePlanner over a fixed list of nodes (benchmarks, tests, a gateway configured with a
// static peer list): the router's cost model without discovery. Bans are honoured.

import { selectRoute, type Route, type RouteCandidate } from './router.js';
import type { RoutePlanner } from '../route/resilient-route.js';

export class StaticPlanner implements RoutePlanner {
  constructor(
    private readonly candidates: RouteCandidate[],
    private readonly nLayers: number,
    private readonly bans?: { active(): Set<string> },
    private readonly rttMs?: ReadonlyMap<string, number>,
  ) {}

  route(opts: { exclude?: Set<string>; needKvTokens?: number } = {}): Route {
    const exclude = new Set([...(this.bans?.active() ?? []), ...(opts.exclude ?? [])]);
    return selectRoute(this.candidates, {
      nLayers: this.nLayers,
      exclude,
      needKvTokens: opts.needKvTokens,
      rttMs: this.rttMs,
      tieJitter: 0,
    });
  }
}
