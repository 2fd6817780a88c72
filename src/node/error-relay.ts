// What a hop passes upstream of an ERROR its next hop sent back (docs/protocol.md §5, "Signed
// ERRORs"). The stream it came on is the next hop's (Noise-authenticated), so this hop knows who
// handed it over, but not who wrote it: it passes on, unchanged, only an ERROR signed by a hop
// after it on the session's route, about this session. Anything else (unsigned, a signature that
// does not verify, another session's, one claiming to come from this hop or from before it) is
// the next hop's statement and nothing more: this hop re-issues it as its own ERROR, naming the
// next hop, under its own signature (with `stream` when the next hop's ERROR was about their
// stream rather than a session: a spare stream it closed as idle under the OPEN, say). So by induction an ERROR reaching the gateway either is
// verifiably its issuer's or names the hop that handed over what could not be verified.

import { MAX_ERROR_REASON, type ErrorHeader, type OpenHeader } from '../protocol/messages.js';
import { checkErrorSignature } from '../protocol/error-signature.js';

/** ERRORs one session's next hop may hand back; beyond this they are dropped unread (each costs a signature check). */
export const MAX_RELAYED_ERRORS = 16;

/**
 * The ERROR to send upstream for `h`, which the next hop `nextPeer` sent on session `sessionId`
 * (opened by `open`, this hop being `open.hop`): `h` itself when it is verifiably a downstream
 * hop's, else this hop's own account of it (unsigned here; the upstream channel signs it).
 */
export function relayedError(h: ErrorHeader, sessionId: string, open: OpenHeader, nextPeer: string): ErrorHeader {
  const downstream = open.route.slice(open.hop + 1).some((hop) => hop.peerId === h.from);
  if (h.sessionId === sessionId && downstream && checkErrorSignature(h) === undefined) return h;
  // re-issued: the next hop said so, nothing more is known (a hand-over's replacement is not passed on)
  const reason = `${nextPeer} sent ${h.code}: ${h.reason}`.slice(0, MAX_ERROR_REASON);
  return {
    code: h.code,
    reason,
    peerId: nextPeer,
    sessionId,
    ...(typeof h.requestId === 'number' ? { requestId: h.requestId } : {}),
    hop: open.hop,
    ...(h.sessionId === undefined ? { stream: true as const } : {}),
  };
}
