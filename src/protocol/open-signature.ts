// The gateway's signature on an OPEN: it makes the session the gateway's (session ownership).
// The gateway named in `reply.peerId` signs the route description with its secp256k1 identity
// (the key its peer id embeds); every hop verifies it before opening the session, and a
// draining node presents the signed OPEN as the owner's invitation for a KV hand-over.
//
// Signed bytes: OPEN_DOMAIN || UTF-8 JSON of the body below, keys in this order, absent
// optional members as null, hop objects as {peerId, addrs, start, end}:
//   sessionId, modelId, route, reply {peerId, addrs}, dtype, hidden, maxTokens, idleTimeoutMs,
//   resumeFrom, spares, issuedAt, expiresAt
// Signature: 64-byte compact ECDSA (r||s, low-s, RFC 6979) over sha256(signed bytes), hex,
// in the OPEN header's `signature`. `hop` is not signed (each hop changes it).

import type { Identity } from '../identity/identity.js';
import { peerSignatureProblem, signAsPeer } from '../identity/peer-signature.js';
import type { OpenHeader } from './messages.js';

export const OPEN_DOMAIN = 'odsi/open/v1\n';
/** how long a signed OPEN may be presented to open a session */
export const OPEN_TTL_MS = 60_000;
/** OPENs issued further in the future than this (clock skew) are refused */
export const OPEN_MAX_SKEW_MS = 60_000;

interface SignedHop {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
}

/** The members of an OPEN the gateway signs (everything but `hop` and the signature). */
export interface OpenToSign {
  sessionId: string;
  modelId: string;
  route: SignedHop[];
  reply: { peerId: string; addrs: string[] };
  dtype: 'f32' | 'f16' | 'bf16';
  hidden?: number;
  maxTokens?: number;
  idleTimeoutMs?: number;
  resumeFrom?: unknown;
  spares?: unknown;
  issuedAt?: number;
  expiresAt?: number;
}

const enc = new TextEncoder();

const hopOf = (h: SignedHop): SignedHop => ({
  peerId: h.peerId,
  addrs: h.addrs,
  start: h.start,
  end: h.end,
});

/** The exact bytes an OPEN's signature covers. */
export function openSigningBytes(h: OpenToSign): Uint8Array {
  const spares = Array.isArray(h.spares) ? (h.spares as SignedHop[]).map(hopOf) : null;
  const body = {
    sessionId: h.sessionId,
    modelId: h.modelId,
    route: h.route.map(hopOf),
    reply: { peerId: h.reply.peerId, addrs: h.reply.addrs },
    dtype: h.dtype ?? 'f32',
    hidden: h.hidden ?? null,
    maxTokens: h.maxTokens ?? null,
    idleTimeoutMs: h.idleTimeoutMs ?? null,
    resumeFrom: typeof h.resumeFrom === 'string' ? h.resumeFrom : null,
    spares,
    issuedAt: h.issuedAt ?? null,
    expiresAt: h.expiresAt ?? null,
  };
  return enc.encode(OPEN_DOMAIN + JSON.stringify(body));
}

/** Signs an OPEN as its gateway; `identity` must be the key of `h.reply.peerId`. */
export function signOpen(identity: Identity, h: OpenToSign): string {
  if (identity.peerId.toString() !== h.reply.peerId) throw new Error('an OPEN is signed by the gateway its reply names');
  return signAsPeer(identity, openSigningBytes(h));
}

/**
 * Why an OPEN's signature does not make it its gateway's (undefined: it does). With `now`,
 * the OPEN must also be within [issuedAt − skew, expiresAt]; without, only the signature counts
 * (a KV hand-over presents the OPEN long after it was issued).
 */
export function checkOpenSignature(h: OpenHeader, now?: number): string | undefined {
  if (typeof h.signature !== 'string' || typeof h.issuedAt !== 'number' || typeof h.expiresAt !== 'number')
    return 'OPEN is not signed by its gateway (reply.peerId)';
  // the time window before the signature: an expired OPEN costs no verification
  if (now !== undefined) {
    if (h.issuedAt > now + OPEN_MAX_SKEW_MS) return 'OPEN issued in the future';
    if (h.expiresAt < now) return 'OPEN expired';
    if (h.expiresAt - h.issuedAt > OPEN_TTL_MS) return `OPEN valid for more than ${OPEN_TTL_MS} ms`;
  }
  // a malformed body (a hop that is not an object…) throws while its bytes are built: no match
  const why = peerSignatureProblem(h.reply.peerId, h.signature, () => openSigningBytes(h));
  if (why === 'does not match') return 'OPEN signature does not match its gateway (reply.peerId)';
  return why && `OPEN reply.peerId ${why}`;
}
