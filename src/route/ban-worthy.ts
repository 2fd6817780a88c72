// Which route failures get the named peer banned, and which are worth one more try as they
// were: the rules the gateway's first open and a resilient route's re-opens share.

import { RouteError } from './route-stage.js';

/**
 * Whether a failure says the peer is broken. A node at capacity ('busy') is healthy, a node
 * that is leaving ('draining') is not at fault, and a missed deadline may be the client's
 * budget being too tight: none of these is banned; the request just does not use that peer again.
 */
export function banWorthy(e: RouteError): boolean {
  return e.code !== 'deadline' && e.remoteCode !== 'busy' && e.remoteCode !== 'draining' && e.remoteCode !== 'deadline';
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

/**
 * A route that failed to open: its culprit goes to `into.named` (banned when ban-worthy), or, none
 * named, all its hops to `into.unnamed` (the first route excludes both; a re-route avoids the
 * unnamed ones only if it can). A culprit whose spare stream was closed under the OPEN
 * (staleSpare) is neither, the first time: it goes to `into.stale` and the same hops are tried again.
 */
export function excludeAfterOpenFailure(
  e: unknown,
  hops: readonly { peerId: string }[],
  into: { named: Set<string>; unnamed: Set<string>; stale: Set<string> },
  bans?: { ban(peerId: string): number },
): void {
  if (e instanceof RouteError && e.peerId) {
    // a spare the peer closed as idle under our OPEN: tried again as it was, once per peer
    if (staleSpare(e) && !into.stale.has(e.peerId)) return void into.stale.add(e.peerId);
    into.named.add(e.peerId);
    if (banWorthy(e)) bans?.ban(e.peerId);
  } else hops.forEach((h) => into.unnamed.add(h.peerId));
}
