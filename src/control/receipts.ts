// Signing and verifying odsi records: secp256k1 ECDSA (RFC 6979, low-s) over the EIP-712
// digest, serialised as 65 bytes r ‖ s ‖ v with v ∈ {27, 28} — exactly what Solidity's
// ecrecover / OpenZeppelin ECDSA.recover accept. Not libp2p's DER-over-SHA-256 format.

import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { addressFromPublicKey, type Identity } from '../identity/identity.js';
import {
  assertWellFormed,
  MalformedRecordError,
  typedDigest,
  typedDigestBytes,
  type AuditVerdict,
  type ExecutionCommitment,
  type ExecutionReceipt,
  type Hex,
  type OdsiDomain,
  type PrimaryType,
  type RecordOf,
} from './eip712.js';

export interface Signed<T> {
  record: T;
  /** 0x + 130 hex: r ‖ s ‖ v */
  signature: Hex;
}
export type SignedCommitment = Signed<ExecutionCommitment>;
export type SignedReceipt = Signed<ExecutionReceipt>;
export type SignedVerdict = Signed<AuditVerdict>;

/** Signs a 32-byte digest; returns r ‖ s ‖ v (v = 27 + recovery id). */
export function signDigest(digest: Hex | Uint8Array, secret: Uint8Array): Hex {
  const d = typeof digest === 'string' ? hexToBytes(digest.slice(2)) : digest;
  // prehash: false — the EIP-712 digest is signed as is (no SHA-256 on top)
  const rec = secp256k1.sign(d, secret, { prehash: false, lowS: true, format: 'recovered' });
  // noble's "recovered" layout is recid ‖ r ‖ s; the EVM wants r ‖ s ‖ v
  const out = new Uint8Array(65);
  out.set(rec.subarray(1), 0);
  out[64] = 27 + rec[0]!;
  return `0x${bytesToHex(out)}`;
}

const HALF_N = secp256k1.Point.CURVE().n >> 1n;

/**
 * The address that signed `digest`, or a reason it cannot be recovered. Rejects high-s
 * (malleable) signatures and v outside {27, 28}, like OpenZeppelin's ECDSA.recover.
 */
export function recoverSigner(digest: Hex | Uint8Array, signature: string): { address: Hex } | { error: string } {
  if (typeof signature !== 'string' || !/^0x[0-9a-fA-F]{130}$/.test(signature)) return { error: 'signature must be 0x + 65 bytes hex' };
  const sig = hexToBytes(signature.slice(2));
  const v = sig[64]!;
  if (v !== 27 && v !== 28) return { error: `signature v must be 27 or 28, got ${v}` };
  const s = BigInt(`0x${bytesToHex(sig.subarray(32, 64))}`);
  if (s > HALF_N) return { error: 'signature s is in the upper half of the curve order (malleable)' };
  const nobleSig = new Uint8Array(65);
  nobleSig[0] = v - 27;
  nobleSig.set(sig.subarray(0, 64), 1);
  try {
    const d = typeof digest === 'string' ? hexToBytes(digest.slice(2)) : digest;
    const pub = secp256k1.recoverPublicKey(nobleSig, d, { prehash: false });
    return { address: addressFromPublicKey(pub) };
  } catch (e) {
    return { error: `signature does not recover: ${(e as Error).message}` };
  }
}

// Verifying against a known key. recoverPublicKey costs a square root plus an un-cached
// double multiplication per signature; a node checks the same upstream signer every step
// and a gateway the same few hops, so once a signer's key is known (recovered once) the
// check is u1·G + u2·Q with a precomputed window table for Q — ~3x cheaper. It proves the
// same thing as recovery: R.x = r exactly and R.y's parity = v − 27 means
// ecrecover(digest, v, r, s) returns Q, and Q hashes to the claimed address.
const Point = secp256k1.Point;
const Fn = Point.Fn;
const N = Point.CURVE().n;
interface KnownKey {
  point: InstanceType<typeof Point>;
  seen: number;
}
const KNOWN_KEYS = new Map<string, KnownKey>();
const MAX_KNOWN_KEYS = 32;

function bytesToBig(b: Uint8Array): bigint {
  return BigInt(`0x${bytesToHex(b)}`);
}

/** ECDSA check of r ‖ s ‖ v against a known point; the caller has checked format, v and low s. */
function verifyWithKey(point: InstanceType<typeof Point>, digest: Uint8Array, sig: Uint8Array): boolean {
  const r = bytesToBig(sig.subarray(0, 32));
  const s = bytesToBig(sig.subarray(32, 64));
  if (r <= 0n || r >= N || s <= 0n || s >= N) return false;
  const z = bytesToBig(digest) % N;
  const sInv = Fn.inv(s);
  const R = Point.BASE.multiplyUnsafe(Fn.mul(z, sInv)).add(point.multiplyUnsafe(Fn.mul(r, sInv)));
  if (R.is0()) return false;
  const a = R.toAffine();
  return a.x === r && Number(a.y & 1n) === sig[64]! - 27;
}

/**
 * Whether `signature` over `digest` is by `claimed` (an address), with the same rules as
 * recoverSigner. Returns an error string, or undefined when it is.
 */
export function checkSignature(digest: Uint8Array, signature: string, claimed: string): string | undefined {
  const key = claimed.toLowerCase();
  const known = KNOWN_KEYS.get(key);
  if (known && typeof signature === 'string' && /^0x[0-9a-fA-F]{130}$/.test(signature)) {
    const sig = hexToBytes(signature.slice(2));
    const v = sig[64]!;
    if (v !== 27 && v !== 28) return `signature v must be 27 or 28, got ${v}`;
    if (bytesToBig(sig.subarray(32, 64)) > HALF_N) return 'signature s is in the upper half of the curve order (malleable)';
    if (verifyWithKey(known.point, digest, sig)) {
      if (++known.seen === 2) known.point.precompute(8, false); // a repeat signer: worth the table
      return undefined;
    }
    // fall through: recovery names the actual signer in the error
  }
  const rec = recoverSigner(digest, signature);
  if ('error' in rec) return rec.error;
  if (rec.address.toLowerCase() !== key) return `signed by ${rec.address}, claims ${claimed}`;
  if (!known) {
    const nobleSig = new Uint8Array(65);
    const sig = hexToBytes(signature.slice(2));
    nobleSig[0] = sig[64]! - 27;
    nobleSig.set(sig.subarray(0, 64), 1);
    const point = Point.fromBytes(secp256k1.recoverPublicKey(nobleSig, digest, { prehash: false }));
    if (KNOWN_KEYS.size >= MAX_KNOWN_KEYS) KNOWN_KEYS.delete(KNOWN_KEYS.keys().next().value as string);
    KNOWN_KEYS.set(key, { point, seen: 1 });
  }
  return undefined;
}

function sign<P extends PrimaryType>(
  primary: P,
  identity: Identity,
  rec: RecordOf<P>,
  domain: OdsiDomain,
  signerField: string,
): Signed<RecordOf<P>> {
  const record = { ...rec, [signerField]: identity.address } as RecordOf<P>;
  const claimed = (rec as unknown as Record<string, unknown>)[signerField];
  if (typeof claimed === 'string' && claimed.toLowerCase() !== identity.address.toLowerCase())
    throw new MalformedRecordError(`${primary}.${signerField} ${claimed} is not this identity (${identity.address})`);
  assertWellFormed(primary, record);
  return { record, signature: signDigest(typedDigestBytes(primary, record, domain), identity.secret) };
}

type Unsigned<T, K extends keyof T> = Omit<T, K> & Partial<Pick<T, K>>;

/** Signs a commitment; `signer` is filled in from the identity (or must match it). */
export function signCommitment(identity: Identity, c: Unsigned<ExecutionCommitment, 'signer'>, domain: OdsiDomain): SignedCommitment {
  return sign('ExecutionCommitment', identity, c as ExecutionCommitment, domain, 'signer');
}

/** Signs a receipt; `signer` is filled in from the identity (or must match it). */
export function signReceipt(identity: Identity, r: Unsigned<ExecutionReceipt, 'signer'>, domain: OdsiDomain): SignedReceipt {
  return sign('ExecutionReceipt', identity, r as ExecutionReceipt, domain, 'signer');
}

export function signVerdict(identity: Identity, v: Unsigned<AuditVerdict, 'auditor'>, domain: OdsiDomain): SignedVerdict {
  return sign('AuditVerdict', identity, v as AuditVerdict, domain, 'auditor');
}

export type VerifyResult = { ok: true; digest: Hex } | { ok: false; reason: string; malformed: boolean };

/** Full check of one signed record: well-formed, signature recovers, recovered == claimed signer. */
export function checkSigned<P extends PrimaryType>(primary: P, signed: unknown, domain: OdsiDomain): VerifyResult {
  const s = signed as Partial<Signed<unknown>> | null;
  if (!s || typeof s !== 'object' || typeof s.signature !== 'string')
    return { ok: false, reason: `${primary}: missing signature`, malformed: true };
  try {
    assertWellFormed(primary, s.record);
  } catch (e) {
    return { ok: false, reason: (e as Error).message, malformed: true };
  }
  const digestBytes = typedDigestBytes(primary, s.record, domain);
  const digest: Hex = `0x${bytesToHex(digestBytes)}`;
  const claimed = primary === 'AuditVerdict' ? (s.record as AuditVerdict).auditor : (s.record as ExecutionCommitment).signer;
  const err = checkSignature(digestBytes, s.signature, claimed);
  if (err !== undefined) return { ok: false, reason: `${primary}: ${err}`, malformed: false };
  return { ok: true, digest };
}

/** True iff the receipt is well formed and its signature recovers to its claimed signer. */
export function verifyReceipt(signed: SignedReceipt, domain: OdsiDomain): boolean {
  return checkSigned('ExecutionReceipt', signed, domain).ok;
}
export function verifyCommitment(signed: SignedCommitment, domain: OdsiDomain): boolean {
  return checkSigned('ExecutionCommitment', signed, domain).ok;
}
export function verifyVerdict(signed: SignedVerdict, domain: OdsiDomain): boolean {
  return checkSigned('AuditVerdict', signed, domain).ok;
}

/** EIP-712 digest of a receipt: its identity in prevReceiptHash / upstreamReceiptHash links. */
export function receiptHash(r: ExecutionReceipt, domain: OdsiDomain): Hex {
  return typedDigest('ExecutionReceipt', r, domain);
}
export function commitmentHash(c: ExecutionCommitment, domain: OdsiDomain): Hex {
  return typedDigest('ExecutionCommitment', c, domain);
}

const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * SHA-256 over the tensor's little-endian bytes, as 0x-hex bytes32. SHA-256 rather than
 * keccak because activations are large (MBs per prefill) and node:crypto hashes at GB/s
 * while pure-JS keccak manages tens of MB/s. The shape is not hashed: the receipt carries
 * nTokens and the model fixes the width. Float32Array hashes the f32 bytes; pass a
 * Uint16Array (f16/bf16 transport) or Uint8Array to hash exactly what went on the wire.
 */
export function hashTensor(t: Float32Array | Uint16Array | Uint8Array): Hex {
  let bytes = new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
  if (!LITTLE_ENDIAN && !(t instanceof Uint8Array)) {
    const dv = new DataView(new ArrayBuffer(t.byteLength));
    if (t instanceof Float32Array) t.forEach((v, i) => dv.setFloat32(i * 4, v, true));
    else t.forEach((v, i) => dv.setUint16(i * 2, v, true));
    bytes = new Uint8Array(dv.buffer);
  }
  return `0x${createHash('sha256').update(bytes).digest('hex')}`;
}
