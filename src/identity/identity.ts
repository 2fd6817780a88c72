// One secp256k1 key per participant: it signs odsi records (RFC 6979 deterministic ECDSA),
// it is the libp2p peer id, and its keccak hash is the participant's EVM address.

import { secp256k1 } from '@noble/curves/secp256k1.js';
import { keccak256 } from '../util/keccak.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { privateKeyFromRaw } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PeerId, PrivateKey } from '@libp2p/interface';

export interface Identity {
  /** 32-byte secp256k1 secret */
  readonly secret: Uint8Array;
  /** 33-byte compressed public key */
  readonly publicKey: Uint8Array;
  /** 0x-prefixed EIP-55 checksummed address */
  readonly address: `0x${string}`;
  /** libp2p key and peer id derived from the same secret */
  readonly libp2pKey: PrivateKey;
  readonly peerId: PeerId;
}

export function identityFromSecret(secret: Uint8Array): Identity {
  if (secret.length !== 32 || !secp256k1.utils.isValidSecretKey(secret)) throw new Error('invalid secp256k1 secret key');
  const publicKey = secp256k1.getPublicKey(secret, true);
  const libp2pKey = privateKeyFromRaw(secret);
  return { secret, publicKey, address: addressFromPublicKey(publicKey), libp2pKey, peerId: peerIdFromPrivateKey(libp2pKey) };
}

export function generateIdentity(): Identity {
  return identityFromSecret(secp256k1.utils.randomSecretKey());
}

/** EVM address of a compressed or uncompressed secp256k1 public key. */
export function addressFromPublicKey(pub: Uint8Array): `0x${string}` {
  const uncompressed = secp256k1.Point.fromBytes(pub).toBytes(false);
  const hash = keccak256(uncompressed.subarray(1));
  return toChecksumAddress(bytesToHex(hash.subarray(12)));
}

export function toChecksumAddress(hex40: string): `0x${string}` {
  const lower = hex40.toLowerCase().replace(/^0x/, '');
  const h = bytesToHex(keccak256(new TextEncoder().encode(lower)));
  let out = '0x';
  for (let i = 0; i < 40; i++) out += parseInt(h[i]!, 16) >= 8 ? lower[i]!.toUpperCase() : lower[i]!;
  return out as `0x${string}`;
}

export { bytesToHex, hexToBytes };
