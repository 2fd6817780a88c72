// The issuer's signature on an ERROR about a session (docs/protocol.md §5, docs/signatures.md).
// ERRORs travel upstream relayed hop by hop, so without it any hop could fabricate one naming
// a peer after it. The hop that issues an ERROR naming a `sessionId` signs it with its
// secp256k1 identity (the key its peer id embeds) and names itself in `from`; a relaying hop
// passes on only ERRORs it can verify as a downstream hop's, and the gateway holds an ERROR it
// cannot verify against the peer that handed it over (route/error-blame.ts).
//
// Signed bytes: ERROR_DOMAIN || UTF-8 JSON of the body below, keys in this order, absent
// optional members as null, `replacement` as {peerId, addrs}:
//   from, sessionId, requestId, hop, code, reason, peerId, stream, replacement, resumeFrom
// Signature: 64-byte compact ECDSA (r||s, low-s, RFC 6979) over sha256(signed bytes), hex,
// in the ERROR header's `signature`.

import type { Identity } from '../identity/identity.js';
import { peerSignatureProblem, signAsPeer } from '../identity/peer-signature.js';
import type { ErrorHeader, OpenHeader } from './messages.js';

export const ERROR_DOMAIN = 'odsi/error/v1\n';

/**
 * Adds `from` and `signature` to an ERROR header about a session: a node's signer. `open` is
 * that session's OPEN once the stream carries one; the signer itself does not need it, a wrapper
 * around it (fault injection) may.
 */
export type ErrorSigner = (h: ErrorHeader, open?: OpenHeader) => ErrorHeader;

const enc = new TextEncoder();

const strOrNull = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const numOrNull = (v: unknown): number | null => (typeof v === 'number' ? v : null);

/** The exact bytes an ERROR's signature covers. Throws on a `replacement` that is not {peerId, addrs}. */
export function errorSigningBytes(h: ErrorHeader): Uint8Array {
  const r = h.replacement as { peerId?: unknown; addrs?: unknown } | undefined;
  if (r !== undefined && (typeof r !== 'object' || r === null || typeof r.peerId !== 'string' || !Array.isArray(r.addrs)))
    throw new Error('ERROR replacement is not {peerId, addrs}');
  const body = {
    from: strOrNull(h.from),
    sessionId: strOrNull(h.sessionId),
    requestId: numOrNull(h.requestId),
    hop: numOrNull(h.hop),
    code: h.code,
    reason: h.reason,
    peerId: h.peerId,
    stream: h.stream === true ? true : null,
    replacement: r ? { peerId: r.peerId, addrs: r.addrs } : null,
    resumeFrom: strOrNull(h.resumeFrom),
  };
  return enc.encode(ERROR_DOMAIN + JSON.stringify(body));
}

/** An ERROR signer for `identity`: names it in `from` and signs (any earlier `from`/`signature` replaced). */
export function errorSigner(identity: Identity): ErrorSigner {
  const from = identity.peerId.toString();
  return (h) => {
    const { signature: _old, ...rest } = h;
    const body: ErrorHeader = { ...rest, from };
    return { ...body, signature: signAsPeer(identity, errorSigningBytes(body)) };
  };
}

/** Why an ERROR's signature does not make it `from`'s (undefined: it does). */
export function checkErrorSignature(h: ErrorHeader): string | undefined {
  if (typeof h.from !== 'string' || typeof h.signature !== 'string') return 'ERROR is not signed';
  const why = peerSignatureProblem(h.from, h.signature, () => errorSigningBytes(h));
  if (why === 'does not match') return 'ERROR signature does not match its issuer (from)';
  return why && `ERROR from ${why}`;
}
