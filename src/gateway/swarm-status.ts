// The swarm as one gateway sees it, for `odsi status`, the dashboard and GET /v1/odsi/status:
// every known node (its advert, measured speed and RTT, sessions, bans, convictions, audits)
// and per-layer coverage (how many usable nodes serve each layer, their combined throughput).
// Pure: built from snapshots the gateway hands in, so it is cheap to call on every poll, and it
// draws nothing (the gateway previews its planner's next route instead of drawing one).
// A node is routable when it is reachable, not banned, not convicted and, with a ledger,
// eligible; `unroutable` says why not. Coverage counts routable nodes only.
//
// The shape is a stable, versioned contract (SWARM_STATUS_VERSION): fields are only ever added.

import type { BanInfo } from '../routing/bans.js';
import { uncoveredRanges, type RouteCandidate } from '../routing/router.js';

export const SWARM_STATUS_VERSION = 1;

export interface SwarmNodeStatus {
  peerId: string;
  addrs: string[];
  /** decoder layers [start, end) */
  layers: [number, number];
  /** execution profile from the advert, e.g. 'reference', 'ort-f32', 'ort-q4' */
  engine: string;
  /** weight precision the profile implies ('f32' for the reference engine) */
  precision: string;
  /** decode ms per token for the node's whole range: measured by this gateway when it has
   *  routed decode steps through the node, else what the node advertised */
  msPerToken: number;
  /** where msPerToken comes from */
  msPerTokenSource: 'measured' | 'advertised';
  /** what the node advertised (its own benchmark / EWMA) */
  advertisedMsPerToken: number;
  /** smoothed gateway↔node ping, ms; null when the last ping failed or none was made */
  rttMs: number | null;
  /** sessions on the node: the larger of what it advertised and what this gateway holds there */
  sessions: number;
  freeKvTokens: number;
  /** answered the recent pings (a node failing two in a row is not routed to) */
  reachable: boolean;
  /** skipped by routing now */
  banned: boolean;
  /** why it was last banned (while banned) */
  banReason?: string;
  /** unix ms when the ban ends */
  bannedUntil?: number;
  /**
   * in a recent dispute (one hop's signed accusation against another, routing/disputes.ts) or
   * on the route of a step lost with every hop still answering (routing/unexplained.ts):
   * routing avoids it while another route exists, until `until`; present while it lasts
   */
  doubt?: { reason?: string; until: number };
  /** why it was convicted by an audit or other evidence, if it was */
  conviction?: string;
  /** routing may use it now: reachable, not banned, never convicted, eligible (with a ledger) */
  routable: boolean;
  /** why not, when not routable: 'convicted: …', 'banned: …', 'unreachable', 'not eligible: …' */
  unroutable?: string;
  /** audits of this node's steps: passed since its last conviction, and failed */
  audits: { passed: number; failed: number };
  /** unix ms when its advert was signed (absent with a fixed peer list) */
  advertIssuedAt?: number;
  version?: string;
}

export interface LayerCoverage {
  layer: number;
  /** routable nodes serving this layer (reachable, not banned, not convicted, eligible) */
  nodes: number;
  /** their peer ids */
  peers: string[];
  /** combined decode throughput of those nodes, tokens/s (Σ 1000 / msPerToken) */
  tokensPerSec: number;
}

export interface SwarmStatus {
  version: number;
  /** unix ms of this snapshot */
  at: number;
  model: { id: string; modelId: string; nLayers: number };
  gateway: { peerId: string };
  /** a route covers every layer now */
  ready: boolean;
  /** why not, when not ready */
  reason?: string;
  nodes: SwarmNodeStatus[];
  coverage: LayerCoverage[];
  /** half-open layer ranges no routable node serves */
  uncovered: [number, number][];
  /** the route the planner would pick next (previewed: looking does not change what it picks) */
  route?: { peerId: string; layers: [number, number] }[];
  estimatedMsPerToken?: number;
  /** recovery of failed routes since start, by method; requests that gave up */
  recoveries: { replay: number; transfer: number; gaveUp: number };
  /** accountability totals, when receipts are checked */
  accountability?: { steps: number; audited: number; failed: number; convicted: number; evidence: number };
  /** cloud fallback, when configured */
  fallback?: { url: string; model?: string; when: string[]; served: number };
}

/** What the gateway knows, handed to swarmStatus() as plain snapshots. */
export interface SwarmSnapshot {
  model: { id: string; modelId: string; nLayers: number };
  gatewayPeerId: string;
  candidates: readonly RouteCandidate[];
  adverts?: readonly { peerId: string; engine: string; version: string; issuedAt: number }[];
  rttMs: ReadonlyMap<string, number>;
  unreachable: ReadonlySet<string>;
  bans: readonly BanInfo[];
  /** peers doubted after disputes or unexplained failures (routing/disputes.ts, routing/unexplained.ts) */
  doubts?: readonly BanInfo[];
  measuredMsPerToken: ReadonlyMap<string, number>;
  convictionOf(peerId: string): string | undefined;
  /** with a ledger: why the peer may not be routed to (undefined: it may) */
  ineligible?(peerId: string): string | undefined;
  audits?: readonly { peerId: string; pass: boolean; incomplete?: boolean }[];
  route?: { hops: { peerId: string; start: number; end: number }[]; estimatedMs: number };
  noRouteReason?: string;
  recoveries: SwarmStatus['recoveries'];
  accountability?: SwarmStatus['accountability'];
  fallback?: SwarmStatus['fallback'];
  now?: number;
}

/** 'reference' → 'f32'; 'ort-q4' → 'q4'; 'ort-f16-acc2' → 'f16' */
export function precisionOf(engine: string): string {
  if (engine === 'reference') return 'f32';
  const m = /^[a-z]+-([a-z0-9]+)/i.exec(engine);
  return m?.[1] ?? 'unknown';
}

export function swarmStatus(s: SwarmSnapshot): SwarmStatus {
  const now = s.now ?? Date.now();
  const advert = new Map((s.adverts ?? []).map((a) => [a.peerId, a]));
  const ban = new Map(s.bans.map((b) => [b.peerId, b]));
  const doubt = new Map((s.doubts ?? []).filter((d) => d.until > now).map((d) => [d.peerId, d]));
  const audits = new Map<string, { passed: number; failed: number }>();
  for (const a of s.audits ?? []) {
    if (a.incomplete) continue;
    const c = audits.get(a.peerId) ?? { passed: 0, failed: 0 };
    if (a.pass) c.passed++;
    else c.failed++;
    audits.set(a.peerId, c);
  }
  const nodes: SwarmNodeStatus[] = s.candidates.map((c) => {
    const ad = advert.get(c.peerId);
    const b = ban.get(c.peerId);
    const d = doubt.get(c.peerId);
    const banned = (b?.until ?? 0) > now;
    const measured = s.measuredMsPerToken.get(c.peerId);
    const rtt = s.rttMs.get(c.peerId);
    const conviction = s.convictionOf(c.peerId);
    const engine = ad?.engine ?? 'unknown';
    const reachable = !s.unreachable.has(c.peerId);
    // a conviction is for good, whatever the ban list says now (a ban can be cleared or lapse)
    const unroutable = conviction
      ? `convicted: ${conviction}`
      : banned
        ? `banned: ${b?.reason ?? 'failures'}`
        : !reachable
          ? 'unreachable'
          : s.ineligible?.(c.peerId) && `not eligible: ${s.ineligible(c.peerId)}`;
    return {
      peerId: c.peerId,
      addrs: [...c.addrs],
      layers: [c.start, c.end],
      engine,
      precision: ad ? precisionOf(engine) : 'unknown',
      msPerToken: round3(measured ?? c.msPerToken),
      msPerTokenSource: measured !== undefined ? 'measured' : 'advertised',
      advertisedMsPerToken: c.msPerToken,
      rttMs: rtt === undefined ? null : round3(rtt),
      sessions: c.load,
      freeKvTokens: c.freeKvTokens,
      reachable,
      banned,
      ...(banned ? { banReason: b?.reason, bannedUntil: b?.until } : {}),
      ...(d ? { doubt: { reason: d.reason, until: d.until } } : {}),
      ...(conviction ? { conviction } : {}),
      routable: !unroutable,
      ...(unroutable ? { unroutable } : {}),
      audits: audits.get(c.peerId) ?? { passed: 0, failed: 0 },
      ...(ad ? { advertIssuedAt: ad.issuedAt, version: ad.version } : {}),
    };
  });
  const coverage: LayerCoverage[] = [];
  for (let layer = 0; layer < s.model.nLayers; layer++) {
    const here = nodes.filter((n) => n.routable && n.layers[0] <= layer && layer < n.layers[1]);
    const tps = here.reduce((a, n) => a + (n.msPerToken > 0 ? 1000 / n.msPerToken : 0), 0);
    coverage.push({ layer, nodes: here.length, peers: here.map((n) => n.peerId), tokensPerSec: round3(tps) });
  }
  const uncovered = uncoveredRanges(
    nodes.filter((n) => n.routable).map((n) => ({ start: n.layers[0], end: n.layers[1] })),
    s.model.nLayers,
  );
  return {
    version: SWARM_STATUS_VERSION,
    at: now,
    model: s.model,
    gateway: { peerId: s.gatewayPeerId },
    ready: s.route !== undefined,
    ...(s.route ? {} : { reason: s.noRouteReason ?? 'no route' }),
    nodes,
    coverage,
    uncovered,
    ...(s.route
      ? {
          route: s.route.hops.map((h) => ({ peerId: h.peerId, layers: [h.start, h.end] as [number, number] })),
          estimatedMsPerToken: round3(s.route.estimatedMs),
        }
      : {}),
    recoveries: s.recoveries,
    ...(s.accountability ? { accountability: s.accountability } : {}),
    ...(s.fallback ? { fallback: s.fallback } : {}),
  };
}

/** Per-peer decode speed as this gateway measures it: EWMA of each hop's compute per token. */
export class MeasuredSpeed {
  private readonly ms = new Map<string, number>();
  constructor(private readonly alpha = 0.2) {}

  /** one decode step's hop timings (one token each) */
  observe(hops: readonly { peerId: string; computeMs: number }[]): void {
    for (const h of hops) {
      if (!(h.computeMs >= 0) || !Number.isFinite(h.computeMs)) continue;
      const prev = this.ms.get(h.peerId);
      this.ms.set(h.peerId, prev === undefined ? h.computeMs : (1 - this.alpha) * prev + this.alpha * h.computeMs);
    }
    // bounded: a gateway that has seen many peers keeps the most recent ones
    while (this.ms.size > 4096) this.ms.delete(this.ms.keys().next().value as string);
  }

  snapshot(): ReadonlyMap<string, number> {
    return this.ms;
  }
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;
