// A peer's plain signature over bytes: 64-byte compact ECDSA (r ‖ s, low-s, RFC 6979) over
// sha256, hex, checked against the secp256k1 key its peer id embeds. The signed OPEN and the
// signed ERROR (src/protocol) use it; EIP-712 records have their own (accountability/records).

import { createHash } from 'node:crypto';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { ecdsa } from './ecdsa.js';
import type { Identity } from './identity.js';
import { parsePeerId } from './peer-id.js';

/** Why a signature is not a peer's. */
export type PeerSignatureProblem = 'is not a valid peer id' | 'does not embed a secp256k1 key' | 'does not match';

/** `identity`'s signature over sha256(bytes), hex r ‖ s. */
export function signAsPeer(identity: Identity, bytes: Uint8Array): string {
  return bytesToHex(ecdsa().sign(sha256(bytes), identity.secret).rs);
}

/**
 * Why `signature` is not `peerId`'s over sha256(bytes()) (undefined: it is). `bytes` is built
 * only once the peer id holds a key; a body it cannot build (it throws) does not match.
 */
export function peerSignatureProblem(peerId: string, signature: string, bytes: () => Uint8Array): PeerSignatureProblem | undefined {
  let pub: Uint8Array | undefined;
  try {
    pub = parsePeerId(peerId).publicKey?.raw;
  } catch {
    return 'is not a valid peer id';
  }
  if (!pub || pub.length !== 33) return 'does not embed a secp256k1 key';
  try {
    if (/^[0-9a-f]{128}$/.test(signature) && ecdsa().verify(sha256(bytes()), hexToBytes(signature), pub)) return undefined;
  } catch {
    /* a malformed body: no match */
  }
  return 'does not match';
}

const sha256 = (b: Uint8Array): Uint8Array => createHash('sha256').update(b).digest();
