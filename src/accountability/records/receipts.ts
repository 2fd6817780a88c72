// Signing and verifying odsi records: secp256k1 ECDSA (RFC 6979, low-s) over the EIP-712
// digest, serialised as 65 bytes r ‖ s ‖ v with v ∈ {27, 28} — exactly what Solidity's
// ecrecover / OpenZeppelin ECDSA.recover accept. Not libp2p's DER-over-SHA-256 format.

import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { addressFromPublicKey, type Identity } from '../../identity/identity.js';
import { ecdsa, isHighS } from '../../identity/ecdsa.js';
import {
  assertWellFormed,
  MalformedRecordError,
  typedDigest,
  typedDigestBytes,
  signerField,
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
  const { rs, recovery } = ecdsa().sign(d, secret);
  // the EVM wants r ‖ s ‖ v
  const out = new Uint8Array(65);
  out.set(rs, 0);
  out[64] = 27 + recovery;
  return `0x${bytesToHex(out)}`;
}

const SIGNATURE_HEX = /^0x[0-9a-fA-F]{130}$/;

/** r ‖ s ‖ v bytes of a well-formed, low-s, v ∈ {27, 28} signature, or why it is not one. */
function parseSignature(signature: unknown): { sig: Uint8Array } | { error: string } {
  if (typeof signature !== 'string' || !SIGNATURE_HEX.test(signature)) return { error: 'signature must be 0x + 65 bytes hex' };
  const sig = hexToBytes(signature.slice(2));
  const v = sig[64]!;
  if (v !== 27 && v !== 28) return { error: `signature v must be 27 or 28, got ${v}` };
  if (isHighS(sig.subarray(32, 64))) return { error: 'signature s is in the upper half of the curve order (malleable)' };
  return { sig };
}

/** The uncompressed public key ecrecover returns for a parsed signature, or why there is none. */
function recoverKey(digest: Uint8Array, sig: Uint8Array): { pub: Uint8Array } | { error: string } {
  try {
    return { pub: ecdsa().recover(digest, sig.subarray(0, 64), (sig[64]! - 27) as 0 | 1) };
  } catch (e) {
    return { error: `signature does not recover: ${(e as Error).message}` };
  }
}

/**
 * The address that signed `digest`, or a reason it cannot be recovered. Rejects high-s
 * (malleable) signatures and v outside {27, 28}, like OpenZeppelin's ECDSA.recover.
 */
export function recoverSigner(digest: Hex | Uint8Array, signature: string): { address: Hex } | { error: string } {
  const p = parseSignature(signature);
  if ('error' in p) return p;
  const d = typeof digest === 'string' ? hexToBytes(digest.slice(2)) : digest;
  const k = recoverKey(d, p.sig);
  if ('error' in k) return k;
  return { address: addressFromPublicKey(k.pub) };
}

// Public keys of recently seen signers, by lower-case address. A node checks the same upstream
// signer every step and a gateway the same few hops: once a signer's key is known (recovered
// once), "does ecrecover give this key" skips the address derivation (a point decode and two
// keccaks) and lets the backend use per-key tables (ecdsa.ts recoversTo). A mismatch falls
// back to recovery, so the error still names the actual signer.
const KNOWN_KEYS = new Map<string, Uint8Array>();
const MAX_KNOWN_KEYS = 32;

/**
 * Whether `signature` over `digest` is by `claimed` (an address), with the same rules as
 * recoverSigner. Returns an error string, or undefined when it is.
 */
export function checkSignature(digest: Uint8Array, signature: string, claimed: string): string | undefined {
  const p = parseSignature(signature);
  if ('error' in p) return p.error;
  const key = typeof claimed === 'string' ? claimed.toLowerCase() : String(claimed);
  const known = KNOWN_KEYS.get(key);
  if (known && ecdsa().recoversTo(digest, p.sig.subarray(0, 64), (p.sig[64]! - 27) as 0 | 1, known)) return undefined;
  const k = recoverKey(digest, p.sig);
  if ('error' in k) return k.error;
  const address = addressFromPublicKey(k.pub);
  if (address.toLowerCase() !== key) return `signed by ${address}, claims ${claimed}`;
  if (KNOWN_KEYS.size >= MAX_KNOWN_KEYS) KNOWN_KEYS.delete(KNOWN_KEYS.keys().next().value as string);
  KNOWN_KEYS.set(key, k.pub);
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
  const claimed = String((s.record as unknown as Record<string, unknown>)[signerField(primary)]);
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
