// Which route failures get the named peer banned, which are one hop's word against another's
// (a dispute: routing/disputes.ts), and which are worth one more try as they were: the rules
// the gateway's first open and a resilient route's re-opens share.

import { RouteError } from './route-stage.js';

/**
 * Whether a failure says the peer is broken. A node at capacity ('busy') is healthy, a node
 * that is leaving ('draining') is not at fault, and a missed deadline may be the client's
 * budget being too tight: none of these is banned; the request just does not use that peer again.
 */
export function banWorthy(e: RouteError): boolean {
  return e.code !== 'deadline' && e.remoteCode !== 'busy' && e.remoteCode !== 'draining' && e.remoteCode !== 'deadline';
}

/** One route hop's signed word that its neighbour failed it. */
export interface Accusation {
  accuser: string;
  accused: string;
  /** the route session and step it is about, when the ERROR answered a step in flight */
  about?: { sessionId: string; step: number };
}

/** Where a dispute happened: the route session, the step, and the route's hops (to fetch a hop's signed record of it). */
export interface DisputeSite {
  sessionId: string;
  step: number;
  hops: readonly { peerId: string; addrs: string[]; start: number; end: number }[];
}

/**
 * The accusation `e` makes, if it is one: an ERROR signed by a hop of the route (`from`, kept
 * only when error-blame.ts verified it) naming another peer, for a fault that would get that
 * peer banned (banWorthy). The gateway cannot tell which of the two lies, so it bans neither
 * on this alone (routing/disputes.ts). `unreachable` and `timeout` are not accusations of this
 * kind: the gateway pings and probes the route to check them. An ERROR a hop signed about
 * itself, or one the gateway restated as its deliverer's, is that peer's own failure.
 */
export function accusation(e: RouteError): Accusation | undefined {
  if (e.code !== 'remote_error' || !banWorthy(e) || !e.peerId) return undefined;
  const from = e.detail?.from;
  if (typeof from !== 'string' || from === e.peerId) return undefined;
  const sessionId = e.detail?.sessionId;
  const about = typeof sessionId === 'string' && e.step !== undefined ? { sessionId, step: e.step } : undefined;
  return { accuser: from, accused: e.peerId, ...(about ? { about } : {}) };
}

/** Where accusation `a` was made on a route of `hops`, when it says which step (for DisputeJudge.dispute). */
export function siteOf(a: Accusation, hops: DisputeSite['hops']): DisputeSite | undefined {
  return a.about ? { ...a.about, hops } : undefined;
}

/**
 * Whether an open failed on a spare stream the peer had just closed as idle: a sessionless ERROR
 * `timeout`, which a node sends only when it closes a fresh stream that carried no complete
 * message (docs/protocol.md §4.4; every error about a session names it), or a hop's account of
 * one its next hop sent it (`stream`: node/error-relay.ts). Our OPEN crossed the
 * close, so the peer is not at fault, and the pool has already replaced the spare: the open is
 * worth one more try as it was (once per peer and request: a peer that answers every OPEN so
 * is then treated as failing it).
 */
export function staleSpare(e: RouteError): boolean {
  return e.remoteCode === 'timeout' && e.detail !== undefined && (e.detail.sessionId === undefined || e.detail.stream === true);
}

/** What the gateway decides on one hop's accusation of another (the gateway's Disputes). */
export interface DisputeJudge {
  /**
   * both are doubted; returns the peers now banned (in disputes with too many peers). With
   * `site`, the accused's own signed record of that step may settle it later (the gateway's
   * DisputeEvidence, with accountability on).
   */
  dispute(accuser: string, accused: string, reason: string, site?: DisputeSite): string[];
}

/** What the gateway keeps of a step lost on a route whose hops all still answer (the gateway's UnexplainedFailures). */
export interface UnexplainedJudge {
  /** every hop is doubted; returns the peers now banned (each alone explains too many such failures) */
  failed(route: readonly string[], reason: string): string[];
}

/** What excludeAfterOpenFailure decided, as a failure event tells it (route/events.ts). */
export interface OpenFailureVerdict {
  /** peers held at fault: the one named (banned when ban-worthy), or those the disputes' rule banned */
  culprits: string[];
  /** 'error_reply' (a peer named), 'dispute', 'stale_spare' (tried again as it was), 'unknown' (none named) */
  diagnosis: 'error_reply' | 'dispute' | 'stale_spare' | 'unknown';
  disputed?: [accuser: string, accused: string];
}

/**
 * A route that failed to open: its culprit goes to `into.named` (banned when ban-worthy), or, none
 * named, all its hops to `into.unnamed` (the first route excludes both; a re-route avoids the
 * unnamed ones only if it can). A culprit whose spare stream was closed under the OPEN
 * (staleSpare) is neither, the first time: it goes to `into.stale` and the same hops are tried again.
 * An accusation puts both peers in `into.unnamed` and goes to `disputes`; whom that bans goes to
 * `into.named`. One naming no hop names the gateway itself, which knows it is false: the accuser
 * is named and banned. Returns what it decided.
 */
export function excludeAfterOpenFailure(
  e: unknown,
  hops: DisputeSite['hops'],
  into: { named: Set<string>; unnamed: Set<string>; stale: Set<string> },
  bans?: { ban(peerId: string): number },
  disputes?: DisputeJudge,
): OpenFailureVerdict {
  if (!(e instanceof RouteError) || !e.peerId) {
    hops.forEach((h) => into.unnamed.add(h.peerId));
    return { culprits: [], diagnosis: 'unknown' };
  }
  // a spare the peer closed as idle under our OPEN: tried again as it was, once per peer
  if (staleSpare(e) && !into.stale.has(e.peerId)) {
    into.stale.add(e.peerId);
    return { culprits: [], diagnosis: 'stale_spare' };
  }
  const a = accusation(e);
  if (a && !hops.some((h) => h.peerId === a.accused)) {
    // it names no hop, so it names this gateway, which knows better: the accuser's own fault
    into.named.add(a.accuser);
    bans?.ban(a.accuser);
    return { culprits: [a.accuser], diagnosis: 'error_reply' };
  }
  if (a) {
    into.unnamed.add(a.accuser).add(a.accused);
    const banned = disputes?.dispute(a.accuser, a.accused, e.message, siteOf(a, hops)) ?? [];
    for (const p of banned) into.named.add(p);
    return { culprits: banned, diagnosis: 'dispute', disputed: [a.accuser, a.accused] };
  }
  into.named.add(e.peerId);
  if (banWorthy(e)) bans?.ban(e.peerId);
  return { culprits: [e.peerId], diagnosis: 'error_reply' };
}
