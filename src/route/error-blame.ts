// Whom a gateway holds to an ERROR about one of its routes (docs/protocol.md §5, "Signed
// ERRORs"). ERRORs reach the gateway relayed hop by hop, so the `peerId` they name counts only
// when the ERROR is verifiably signed by a hop of the route (`from`), and only as far as that
// hop can know: itself, the hop before it (whose input or receipts it refused; the gateway
// before hop 0) or the hop after it (which it could not reach; the gateway after the last hop).
// Anything else is the word of the peer that handed the ERROR over (hop 0 on the activation
// stream, the last hop on the result stream), and that peer is held to it. Honest hops pass on
// only what they can verify and re-issue the rest in their own name (node/error-relay.ts), so
// an honest route never has its ERRORs re-attributed.

import type { ErrorHeader } from '../protocol/messages.js';
import { checkErrorSignature } from '../protocol/error-signature.js';

export interface ErrorContext {
  sessionId: string;
  /** the route's peer ids, hop 0 first */
  route: readonly string[];
  /** this gateway (the OPEN's reply.peerId) */
  owner: string;
  /** the peer whose stream the ERROR came on */
  deliverer: string;
}

/**
 * `h` as the gateway should act on it: unchanged when its issuer signed it and names a peer it
 * can know about; otherwise naming the peer accountable for it (the deliverer, or the signer
 * naming a peer beyond its neighbours), with a `reason` that says so, no KV `replacement` and
 * no `from`/`signature` (it is no longer the signer's statement).
 * ERRORs about no session (a stream's own framing, idle or limit errors) are the deliverer's.
 */
export function blameFor(h: ErrorHeader, c: ErrorContext): ErrorHeader {
  if (h.sessionId === undefined) return h.peerId === c.deliverer ? h : restated(h, c.deliverer, `from ${c.deliverer}`);
  const j = typeof h.from === 'string' ? c.route.indexOf(h.from) : -1;
  const why = h.sessionId !== c.sessionId ? 'about another session' : j < 0 ? 'not from a hop of the route' : checkErrorSignature(h);
  if (why !== undefined) return restated(h, c.deliverer, `unverifiable ERROR (${why}) handed over by ${c.deliverer}`);
  const neighbours = [c.route[j], j > 0 ? c.route[j - 1] : c.owner, j + 1 < c.route.length ? c.route[j + 1] : c.owner];
  if (neighbours.includes(h.peerId)) return h;
  return restated(h, c.route[j]!, `${c.route[j]} named ${h.peerId}, which is not its neighbour on the route`);
}

/** `h` as the statement of `peerId`: no longer its issuer's (no `from`/`signature`), no KV hand-over. */
function restated(h: ErrorHeader, peerId: string, why: string): ErrorHeader {
  const { replacement: _r, resumeFrom: _f, from: _i, signature: _s, ...rest } = h;
  return { ...rest, peerId, reason: `${why}: ${h.reason}` };
}
