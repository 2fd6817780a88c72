// Compact binary receipts (docs/protocol.md §4.3, act 1.3.0): the payload of a RECEIPTS message.
//
// A hop forwards its STEP (or RESULT) as soon as compute ends, then — once the upstream chain
// has verified — signs its ExecutionReceipt and sends the chain so far as a RECEIPTS message on
// the same stream. The signed content is the EIP-712 struct of docs/signatures.md, unchanged;
// this file only fixes how it travels. Every integer little-endian, hashes and addresses raw:
//
//   payload  = count (1 byte, 1..MAX_ROUTE_HOPS) ‖ receipt × count       (route order: hop 0 first)
//   receipt  = 399 fixed bytes ‖ profile (L bytes UTF-8)
//     0  32 requestId            120 32 inputHash            236 32 upstreamReceiptHash
//    32  32 sessionId            152  8 budgetUs             268 32 prevReceiptHash
//    64   8 step                 160 20 signer               300 32 commitmentHash
//    72   4 pos                  180 32 outputHash           332 65 signature r ‖ s ‖ v
//    76   4 nTokens              212  8 recvUs               397  2 L (≤ MAX_PROFILE_BYTES)
//    80   4 layerStart           220  8 computeUs
//    84   4 layerEnd             228  8 sendUs
//    88  32 modelId
// The signer's address travels (20 bytes) so a verifier checks "does this signature recover to
// it" with the signer's cached key instead of a full recovery. Decoding checks sizes only; the
// record's well-formedness and signature are the accountability layer's checks, as before.

import { toChecksumAddress } from '../identity/identity.js';
import { MAX_ROUTE_HOPS, MessageError } from './messages.js';

/** A signed receipt as it travels: the EIP-712 record's fields and the 0x-hex 65-byte signature. */
export interface WireReceipt {
  record: {
    requestId: string;
    sessionId: string;
    step: number;
    pos: number;
    nTokens: number;
    layerStart: number;
    layerEnd: number;
    modelId: string;
    profile: string;
    inputHash: string;
    budgetUs: number;
    signer: string;
    outputHash: string;
    recvUs: number;
    computeUs: number;
    sendUs: number;
    upstreamReceiptHash: string;
    prevReceiptHash: string;
    commitmentHash: string;
  };
  signature: string;
}

export const RECEIPT_FIXED_BYTES = 399;
/** the EIP-712 records allow profiles of ≤ 256 characters; 768 bytes hold any of them in UTF-8 */
export const MAX_PROFILE_BYTES = 768;
/** largest RECEIPTS payload a stream accepts */
export const MAX_RECEIPTS_BYTES = 1 + MAX_ROUTE_HOPS * (RECEIPT_FIXED_BYTES + MAX_PROFILE_BYTES);

type Field = readonly [name: keyof WireReceipt['record'], offset: number, kind: 'b32' | 'u64' | 'u32' | 'addr'];
const FIELDS: readonly Field[] = [
  ['requestId', 0, 'b32'],
  ['sessionId', 32, 'b32'],
  ['step', 64, 'u64'],
  ['pos', 72, 'u32'],
  ['nTokens', 76, 'u32'],
  ['layerStart', 80, 'u32'],
  ['layerEnd', 84, 'u32'],
  ['modelId', 88, 'b32'],
  ['inputHash', 120, 'b32'],
  ['budgetUs', 152, 'u64'],
  ['signer', 160, 'addr'],
  ['outputHash', 180, 'b32'],
  ['recvUs', 212, 'u64'],
  ['computeUs', 220, 'u64'],
  ['sendUs', 228, 'u64'],
  ['upstreamReceiptHash', 236, 'b32'],
  ['prevReceiptHash', 268, 'b32'],
  ['commitmentHash', 300, 'b32'],
];
const SIG_AT = 332;
const PROFILE_LEN_AT = 397;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

function bad(why: string): never {
  throw new MessageError(`RECEIPTS payload invalid: ${why}`);
}

function putHex(out: Uint8Array, at: number, hex: unknown, bytes: number, name: string): void {
  if (typeof hex !== 'string' || hex.length !== 2 + 2 * bytes || !/^0x[0-9a-fA-F]*$/.test(hex))
    throw new TypeError(`receipt ${name}: expected 0x + ${2 * bytes} hex digits`);
  out.set(Buffer.from(hex.slice(2), 'hex'), at);
}

/** Bytes of one receipt (throws TypeError for a record that has no wire form). */
export function encodeReceipt(r: WireReceipt): Uint8Array {
  const profile = utf8.encode(String(r.record.profile));
  if (profile.length > MAX_PROFILE_BYTES) throw new TypeError(`receipt profile of ${profile.length} bytes exceeds ${MAX_PROFILE_BYTES}`);
  const out = new Uint8Array(RECEIPT_FIXED_BYTES + profile.length);
  const dv = new DataView(out.buffer);
  for (const [name, at, kind] of FIELDS) {
    const v = r.record[name];
    if (kind === 'b32') putHex(out, at, v, 32, name);
    else if (kind === 'addr') putHex(out, at, v, 20, name);
    else {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || (kind === 'u32' && v > 0xffffffff))
        throw new TypeError(`receipt ${name}: expected a ${kind === 'u32' ? '32' : '53'}-bit unsigned integer`);
      if (kind === 'u32') dv.setUint32(at, v, true);
      else dv.setBigUint64(at, BigInt(v), true);
    }
  }
  putHex(out, SIG_AT, r.signature, 65, 'signature');
  dv.setUint16(PROFILE_LEN_AT, profile.length, true);
  out.set(profile, RECEIPT_FIXED_BYTES);
  return out;
}

/** A RECEIPTS payload carrying `chain` (route order). */
export function encodeReceipts(chain: readonly WireReceipt[]): Uint8Array {
  if (chain.length < 1 || chain.length > MAX_ROUTE_HOPS)
    throw new TypeError(`a RECEIPTS message carries 1..${MAX_ROUTE_HOPS} receipts, not ${chain.length}`);
  const parts = chain.map(encodeReceipt);
  const out = new Uint8Array(1 + parts.reduce((s, p) => s + p.length, 0));
  out[0] = chain.length;
  let o = 1;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Appends one receipt's bytes to an already encoded RECEIPTS payload (or starts one). */
export function appendReceipt(payload: Uint8Array | undefined, r: WireReceipt): Uint8Array {
  const n = payload ? payload[0]! : 0;
  if (n >= MAX_ROUTE_HOPS) throw new TypeError(`a RECEIPTS message carries at most ${MAX_ROUTE_HOPS} receipts`);
  const one = encodeReceipt(r);
  const body = payload ? payload.subarray(1) : new Uint8Array(0);
  const out = new Uint8Array(1 + body.length + one.length);
  out[0] = n + 1;
  out.set(body, 1);
  out.set(one, 1 + body.length);
  return out;
}

const hex = (b: Uint8Array, at: number, n: number): string => `0x${Buffer.from(b.buffer, b.byteOffset + at, n).toString('hex')}`;

/** The receipts of a RECEIPTS payload; MessageError when its sizes are wrong (the stream stays usable). */
export function decodeReceipts(p: Uint8Array): WireReceipt[] {
  if (p.length < 1) bad('empty');
  if (p.length > MAX_RECEIPTS_BYTES) bad(`${p.length} bytes exceed ${MAX_RECEIPTS_BYTES}`);
  const n = p[0]!;
  if (n < 1 || n > MAX_ROUTE_HOPS) bad(`count ${n} not in 1..${MAX_ROUTE_HOPS}`);
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const out: WireReceipt[] = [];
  let o = 1;
  for (let i = 0; i < n; i++) {
    if (p.length - o < RECEIPT_FIXED_BYTES) bad(`receipt ${i} is cut short`);
    const len = dv.getUint16(o + PROFILE_LEN_AT, true);
    if (len > MAX_PROFILE_BYTES) bad(`receipt ${i}: profile of ${len} bytes exceeds ${MAX_PROFILE_BYTES}`);
    if (p.length - o < RECEIPT_FIXED_BYTES + len) bad(`receipt ${i} is cut short`);
    const rec: Record<string, string | number> = {};
    for (const [name, at, kind] of FIELDS) {
      if (kind === 'b32') rec[name] = hex(p, o + at, 32);
      else if (kind === 'addr') rec[name] = toChecksumAddress(hex(p, o + at, 20));
      else if (kind === 'u32') rec[name] = dv.getUint32(o + at, true);
      else {
        const v = dv.getBigUint64(o + at, true);
        if (v > BigInt(Number.MAX_SAFE_INTEGER)) bad(`receipt ${i}: ${name} exceeds 2^53 - 1`);
        rec[name] = Number(v);
      }
    }
    let profile: string;
    try {
      profile = fromUtf8.decode(p.subarray(o + RECEIPT_FIXED_BYTES, o + RECEIPT_FIXED_BYTES + len));
    } catch {
      bad(`receipt ${i}: profile is not UTF-8`);
    }
    // the record in the EIP-712 field order (docs/signatures.md), as a JSON receipt would list it
    const record = {
      requestId: rec.requestId,
      sessionId: rec.sessionId,
      step: rec.step,
      pos: rec.pos,
      nTokens: rec.nTokens,
      layerStart: rec.layerStart,
      layerEnd: rec.layerEnd,
      modelId: rec.modelId,
      profile,
      inputHash: rec.inputHash,
      budgetUs: rec.budgetUs,
      signer: rec.signer,
      outputHash: rec.outputHash,
      recvUs: rec.recvUs,
      computeUs: rec.computeUs,
      sendUs: rec.sendUs,
      upstreamReceiptHash: rec.upstreamReceiptHash,
      prevReceiptHash: rec.prevReceiptHash,
      commitmentHash: rec.commitmentHash,
    } as WireReceipt['record'];
    out.push({ record, signature: hex(p, o + SIG_AT, 65) });
    o += RECEIPT_FIXED_BYTES + len;
  }
  if (o !== p.length) bad(`${p.length - o} bytes after the last receipt`);
  return out;
}
