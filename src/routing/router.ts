// Route selection: which nodes run which layers for one request. Pure: everything it needs
// (verified adverts, measured RTTs, exclusions) comes in as arguments, so it is cheap to
// test and re-run on every request or failover.
//
// Cost model (estimated per-token decode latency, ms):
//   Σ over hops of compute(hop)  +  Σ over links of one-way latency
// where the links are gateway→first, hop→hop and last→gateway, one-way latency = RTT/2,
// compute(hop) = advert.msPerToken × (layers served / layers advertised) × (1 + loadWeight·load),
// plus a fixed penalty for a node whose free KV cache cannot hold the request.
// The search is a shortest path over layer boundaries 0..L; its states are (boundary,
// previous peer) because the hop→hop link cost depends on which peer came before.

/** What the router needs from a verified advert (a subset of net/adverts NodeAdvert). */
import { Heap } from '../util/heap.js';
import { randomSeed, seededUniform } from '../util/rng.js';

export interface RouteCandidate {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
  /** measured decode ms per token for the whole advertised range */
  msPerToken: number;
  /** active sessions */
  load: number;
  freeKvTokens: number;
}

export interface RouteHop {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
  /** estimated compute for this hop, ms per token (penalties included) */
  computeMs: number;
  /** estimated one-way latency of the link into this hop, ms */
  linkInMs: number;
}

export interface Route {
  hops: RouteHop[];
  /** estimated per-token latency, ms (the minimised cost, without tie-breaking jitter) */
  estimatedMs: number;
  /** one-way latency estimate of the last hop → gateway link */
  linkOutMs: number;
}

export interface RouterOptions {
  /** number of decoder layers; the route must cover [0, nLayers) */
  nLayers: number;
  /** measured gateway↔peer round-trip times, ms */
  rttMs?: ReadonlyMap<string, number>;
  /** measured or estimated peer↔peer round-trip times; default: mean of the two gateway RTTs */
  pairRttMs?: (a: string, b: string) => number | undefined;
  /** RTT assumed for a peer the gateway could not measure (ms); default 150 */
  unknownRttMs?: number;
  /** peers not to use (banned after failures, or already tried) */
  exclude?: ReadonlySet<string>;
  /** may a node serve only part of its advertised range? default false (whole ranges) */
  allowSubRange?: boolean;
  /** relative compute increase per active session on a node; default 0.5 */
  loadWeight?: number;
  /** KV tokens the request will need; nodes with less free cache get the penalty below */
  needKvTokens?: number;
  /** added to a hop whose free KV cache is too small (ms); default 5000 */
  fullCachePenaltyMs?: number;
  /** near-tie spread: each hop's compute is scaled by a seeded random factor in
   *  [1, 1 + tieJitter]; default 0.05. 0 makes routing deterministic. */
  tieJitter?: number;
  /** seed for the tie-breaking jitter; default: a fresh random seed per call */
  seed?: number;
}

/** relative compute increase per active session, unless RouterOptions.loadWeight says otherwise */
export const DEFAULT_LOAD_WEIGHT = 0.5;
/** RTT assumed for a peer the gateway could not measure, unless RouterOptions.unknownRttMs says otherwise */
export const DEFAULT_UNKNOWN_RTT_MS = 150;

/** added to a hop whose free KV cache is too small, unless RouterOptions.fullCachePenaltyMs says otherwise */
export const DEFAULT_FULL_CACHE_PENALTY_MS = 5000;

/** No set of usable nodes covers every layer. `uncovered` lists half-open layer ranges. */
export class NoRouteError extends Error {
  constructor(
    message: string,
    readonly uncovered: [number, number][],
  ) {
    super(message);
    this.name = 'NoRouteError';
  }
}

/**
 * The router's estimate of one hop's compute, ms per token: the candidate's ms/token for the
 * `layers` of its range it runs, raised by its load, plus the full-cache penalty when it lacks
 * room for `needKvTokens`. (The planner ranks comparable candidates with the same estimate.)
 */
export function hopComputeMs(
  c: RouteCandidate,
  layers: number,
  o: { loadWeight?: number; needKvTokens?: number; fullCachePenaltyMs?: number } = {},
): number {
  let ms = c.msPerToken * (layers / (c.end - c.start)) * (1 + (o.loadWeight ?? DEFAULT_LOAD_WEIGHT) * Math.max(0, c.load));
  if (o.needKvTokens !== undefined && c.freeKvTokens < o.needKvTokens) ms += o.fullCachePenaltyMs ?? DEFAULT_FULL_CACHE_PENALTY_MS;
  return ms;
}

/** Pick the route covering layers [0, nLayers) with the least estimated per-token latency. */
export function selectRoute(candidates: readonly RouteCandidate[], opts: RouterOptions): Route {
  const L = opts.nLayers;
  if (!Number.isInteger(L) || L <= 0) throw new RangeError(`nLayers must be a positive integer, got ${L}`);
  const exclude = opts.exclude ?? new Set<string>();
  const usable = candidates.filter(
    (c) =>
      !exclude.has(c.peerId) &&
      Number.isInteger(c.start) &&
      Number.isInteger(c.end) &&
      c.start >= 0 &&
      c.end <= L &&
      c.start < c.end &&
      Number.isFinite(c.msPerToken) &&
      c.msPerToken >= 0,
  );
  const uncovered = uncoveredRanges(usable, L);
  if (uncovered.length) {
    const why = exclude.size ? ` (${exclude.size} peer(s) excluded)` : '';
    throw new NoRouteError(
      `no node serves layers ${uncovered.map(fmtRange).join(', ')} of ${L}${why}; ` + `${usable.length} usable node(s)`,
      uncovered,
    );
  }

  const unknownRtt = opts.unknownRttMs ?? DEFAULT_UNKNOWN_RTT_MS;
  const rtt = (p: string) => opts.rttMs?.get(p) ?? unknownRtt;
  const pairRtt = (a: string, b: string) => opts.pairRttMs?.(a, b) ?? (rtt(a) + rtt(b)) / 2;
  const loadWeight = opts.loadWeight ?? DEFAULT_LOAD_WEIGHT;
  const penalty = opts.fullCachePenaltyMs ?? DEFAULT_FULL_CACHE_PENALTY_MS;
  const jitter = opts.tieJitter ?? 0.05;
  const rand = seededUniform(opts.seed ?? randomSeed());
  // one jitter factor per candidate and call: near-equal routes are picked at random
  const jitterOf = usable.map(() => 1 + jitter * rand());

  const computeOf = (i: number, start: number, end: number): number =>
    hopComputeMs(usable[i]!, end - start, { loadWeight, needKvTokens: opts.needKvTokens, fullCachePenaltyMs: penalty });

  // Dijkstra over states (boundary b, index of the candidate whose hop ended at b; -1 = gateway).
  type State = { b: number; prev: number; cost: number; real: number; from?: State; hopStart: number };
  const best = new Map<string, number>();
  const key = (b: number, prev: number) => `${b}:${prev}`;
  const heap = new Heap<State>((a, b) => a.cost < b.cost);
  heap.push({ b: 0, prev: -1, cost: 0, real: 0, hopStart: 0 });
  best.set(key(0, -1), 0);
  let done: State | undefined;
  let doneCost = Infinity;

  while (heap.size) {
    const s = heap.pop()!;
    if (s.cost > (best.get(key(s.b, s.prev)) ?? Infinity)) continue;
    if (s.cost >= doneCost) break;
    if (s.b === L) {
      const out = s.prev >= 0 ? rtt(usable[s.prev]!.peerId) / 2 : 0;
      if (s.cost + out < doneCost) {
        doneCost = s.cost + out;
        done = s;
      }
      continue;
    }
    for (let i = 0; i < usable.length; i++) {
      const c = usable[i]!;
      if (i === s.prev) continue; // a node never follows itself: that would be one longer hop
      const canStart = opts.allowSubRange ? c.start <= s.b && s.b < c.end : c.start === s.b;
      if (!canStart) continue;
      const link = s.prev < 0 ? rtt(c.peerId) / 2 : pairRtt(usable[s.prev]!.peerId, c.peerId) / 2;
      const ends = opts.allowSubRange ? range(s.b + 1, c.end + 1) : [c.end];
      for (const e of ends) {
        const comp = computeOf(i, s.b, e);
        const real = s.real + link + comp;
        const cost = s.cost + link + comp * jitterOf[i]!;
        const k = key(e, i);
        if (cost < (best.get(k) ?? Infinity)) {
          best.set(k, cost);
          heap.push({ b: e, prev: i, cost, real, from: s, hopStart: s.b });
        }
      }
    }
  }

  if (!done) {
    // Every layer is served, but whole ranges do not chain (e.g. [0,3) and [2,5)).
    throw new NoRouteError(
      `layers 0-${L - 1} are all served, but no chain of whole advertised ranges joins them ` +
        `(${usable.map((c) => fmtRange([c.start, c.end])).join(', ')})`,
      [],
    );
  }

  const hops: RouteHop[] = [];
  for (let s: State | undefined = done; s && s.prev >= 0; s = s.from) {
    const c = usable[s.prev]!;
    const prevState = s.from!;
    const linkInMs = prevState.prev < 0 ? rtt(c.peerId) / 2 : pairRtt(usable[prevState.prev]!.peerId, c.peerId) / 2;
    hops.unshift({
      peerId: c.peerId,
      addrs: c.addrs,
      start: s.hopStart,
      end: s.b,
      computeMs: computeOf(s.prev, s.hopStart, s.b),
      linkInMs,
    });
  }
  const linkOutMs = rtt(hops[hops.length - 1]!.peerId) / 2;
  return { hops, estimatedMs: done.real + linkOutMs, linkOutMs };
}

/** Half-open layer ranges in [0, L) that no candidate covers. */
export function uncoveredRanges(cands: readonly { start: number; end: number }[], L: number): [number, number][] {
  const covered = new Uint8Array(L);
  for (const c of cands) for (let l = Math.max(0, c.start); l < Math.min(L, c.end); l++) covered[l] = 1;
  const out: [number, number][] = [];
  for (let l = 0; l < L; l++) {
    if (covered[l]) continue;
    const a = l;
    while (l < L && !covered[l]) l++;
    out.push([a, l]);
  }
  return out;
}

/** true when the candidates' union covers [0, L). */
export function covers(cands: readonly { start: number; end: number }[], L: number): boolean {
  return uncoveredRanges(cands, L).length === 0;
}

function fmtRange([a, b]: [number, number]): string {
  return b - a === 1 ? `${a}` : `${a}-${b - 1}`;
}

function range(a: number, b: number): number[] {
  const out: number[] = [];
  for (let i = a; i < b; i++) out.push(i);
  return out;
}
