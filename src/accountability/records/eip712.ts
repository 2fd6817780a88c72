// Canonical EIP-712 typed data for odsi's signed records. Hashing is viem's hashTypedData
// (the reference implementation Solidity contracts are tested against), so the digest a
// node signs here is the digest a contract recomputes before ecrecover.
//
// Field order is part of the protocol: changing it changes every type hash. Integers are
// JS numbers (all fit in 2^53); bytes32/address are 0x-hex strings.

import { hashStruct, hashTypedData } from 'viem';
import { keccak256 } from '../../util/keccak.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';

export type Hex = `0x${string}`;

// viem's signatures are generic over literal type maps; our maps are fixed, so a plain view is enough
type Fields = Record<string, readonly { name: string; type: string }[]>;
const hashStructPlain = hashStruct as unknown as (p: { data: Record<string, unknown>; primaryType: string; types: Fields }) => Hex;
const hashTypedDataPlain = hashTypedData as unknown as (p: {
  domain: Record<string, unknown>;
  types: Fields;
  primaryType: string;
  message: Record<string, unknown>;
}) => Hex;

export const DOMAIN_NAME = 'odsi';
export const DOMAIN_VERSION = '1';
/** anvil's / hardhat's chain id: the default for local runs without a chain */
export const DEV_CHAIN_ID = 31337;
export const ZERO_HASH: Hex = `0x${'00'.repeat(32)}`;
/** in a record's profile: the output is the last position's row alone (a lastRow STEP at the last hop) */
export const LAST_ROW_PROFILE = '+last';
/** whether a profile carries LAST_ROW_PROFILE as one of its "+" parts (before "+act-…" or at the end) */
export const isLastRowProfile = (profile: string): boolean => profile.split('+').includes(LAST_ROW_PROFILE.slice(1));
/** the rows a record's output holds: nTokens, or 1 when its profile says "+last" */
export const outputRows = (r: { profile: string; nTokens: number }): number => (isLastRowProfile(r.profile) ? 1 : r.nTokens);

/** The EIP-712 domain odsi signs under. verifyingContract is omitted from the domain type when absent. */
export interface OdsiDomain {
  chainId: number | bigint;
  verifyingContract?: Hex;
}

export const COMMITMENT_FIELDS = [
  { name: 'requestId', type: 'bytes32' },
  { name: 'sessionId', type: 'bytes32' },
  { name: 'step', type: 'uint64' },
  { name: 'pos', type: 'uint32' },
  { name: 'nTokens', type: 'uint32' },
  { name: 'layerStart', type: 'uint32' },
  { name: 'layerEnd', type: 'uint32' },
  { name: 'modelId', type: 'bytes32' },
  { name: 'profile', type: 'string' },
  { name: 'inputHash', type: 'bytes32' },
  { name: 'budgetUs', type: 'uint64' },
  { name: 'signer', type: 'address' },
] as const;

export const RECEIPT_FIELDS = [
  ...COMMITMENT_FIELDS,
  { name: 'outputHash', type: 'bytes32' },
  { name: 'recvUs', type: 'uint64' },
  { name: 'computeUs', type: 'uint64' },
  { name: 'sendUs', type: 'uint64' },
  { name: 'upstreamReceiptHash', type: 'bytes32' },
  { name: 'prevReceiptHash', type: 'bytes32' },
  { name: 'commitmentHash', type: 'bytes32' },
] as const;

/** An auditor's signed result of re-executing the work behind one receipt. */
export const VERDICT_FIELDS = [
  { name: 'receiptHash', type: 'bytes32' },
  { name: 'auditOutputHash', type: 'bytes32' },
  { name: 'profilePair', type: 'string' },
  { name: 'distancePpb', type: 'uint64' },
  { name: 'tolerancePpb', type: 'uint64' },
  { name: 'pass', type: 'bool' },
  { name: 'auditor', type: 'address' },
] as const;

/**
 * A gateway's permission for one auditor to fetch a session's committed inputs (steps
 * [fromStep, toStep]) from a node: signed by the gateway that owns the session.
 */
export const AUDIT_REQUEST_FIELDS = [
  { name: 'gateway', type: 'address' },
  { name: 'auditor', type: 'address' },
  { name: 'requestId', type: 'bytes32' },
  { name: 'sessionId', type: 'bytes32' },
  { name: 'fromStep', type: 'uint64' },
  { name: 'toStep', type: 'uint64' },
  { name: 'expiresAt', type: 'uint64' },
] as const;

/** A gateway's request that `executor` re-execute the committed prefix of one audited step. */
export const REEXECUTION_REQUEST_FIELDS = [
  { name: 'gateway', type: 'address' },
  { name: 'executor', type: 'address' },
  { name: 'requestId', type: 'bytes32' },
  { name: 'sessionId', type: 'bytes32' },
  { name: 'step', type: 'uint64' },
  { name: 'auditedReceiptHash', type: 'bytes32' },
  { name: 'expiresAt', type: 'uint64' },
] as const;

/**
 * ReexecutionReceipt has the fields of ExecutionReceipt under its own type name, hence its own
 * type hash: a re-execution's signature never verifies as a token-path receipt, so the two can
 * never form an equivocation pair or join a custody chain.
 */
export const TYPES = {
  ExecutionCommitment: COMMITMENT_FIELDS,
  ExecutionReceipt: RECEIPT_FIELDS,
  AuditVerdict: VERDICT_FIELDS,
  ReexecutionReceipt: RECEIPT_FIELDS,
  AuditRequest: AUDIT_REQUEST_FIELDS,
  ReexecutionRequest: REEXECUTION_REQUEST_FIELDS,
} as const;
export type PrimaryType = keyof typeof TYPES;

/** encodeType(T) per EIP-712: "Name(type1 name1,type2 name2,...)" (no referenced structs here). */
export function encodeType(primary: PrimaryType): string {
  return `${primary}(${TYPES[primary].map((f) => `${f.type} ${f.name}`).join(',')})`;
}
export function typeHash(primary: PrimaryType): Hex {
  return `0x${bytesToHex(keccak256(new TextEncoder().encode(encodeType(primary))))}`;
}

/**
 * What a node promises when it accepts a step: it received `inputHash` for tokens
 * [pos, pos+nTokens) of session `sessionId` and will run layers [layerStart, layerEnd) of
 * `modelId` under execution profile `profile` within `budgetUs`.
 */
export interface ExecutionCommitment {
  requestId: Hex;
  sessionId: Hex;
  /** index of the forward call within the session (0 = first prefill chunk) */
  step: number;
  /** absolute position of the first token of this step */
  pos: number;
  nTokens: number;
  layerStart: number;
  /** exclusive */
  layerEnd: number;
  modelId: Hex;
  /**
   * execution profile, e.g. "reference" or "ort-f32+act-f16"; keys the tolerance table. With
   * "+last" (LAST_ROW_PROFILE) the output is the last position's row alone, [1, dim].
   */
  profile: string;
  /** hashTensor of the activation bytes as received */
  inputHash: Hex;
  /** deadline budget granted to this hop, microseconds */
  budgetUs: number;
  signer: Hex;
}

/** What a node signs after forwarding its output. */
export interface ExecutionReceipt extends ExecutionCommitment {
  /** hashTensor of the activation bytes as sent */
  outputHash: Hex;
  /** microseconds spent receiving / computing / sending */
  recvUs: number;
  computeUs: number;
  sendUs: number;
  /** digest of the upstream hop's receipt for this step (ZERO_HASH at the first hop) */
  upstreamReceiptHash: Hex;
  /** digest of this signer's previous receipt in this session (ZERO_HASH for its first) */
  prevReceiptHash: Hex;
  /** digest of this signer's commitment for this step (ZERO_HASH if none was issued) */
  commitmentHash: Hex;
}

export interface AuditVerdict {
  receiptHash: Hex;
  auditOutputHash: Hex;
  /** "<worker profile>|<auditor profile>" */
  profilePair: string;
  /** worst per-token relative L2 distance, parts per billion (rounded up) */
  distancePpb: number;
  tolerancePpb: number;
  pass: boolean;
  auditor: Hex;
}

export interface AuditRequest {
  /** the session's owner, who signs */
  gateway: Hex;
  /** the peer allowed to fetch (its libp2p key's address) */
  auditor: Hex;
  requestId: Hex;
  sessionId: Hex;
  fromStep: number;
  toStep: number;
  /** unix time, seconds: the node refuses the request from then on */
  expiresAt: number;
}

export interface ReexecutionRequest {
  /** the requesting gateway, who signs (and must be the peer that sends the request) */
  gateway: Hex;
  /** the node asked to re-execute */
  executor: Hex;
  /** the audited route session's ids */
  requestId: Hex;
  sessionId: Hex;
  step: number;
  auditedReceiptHash: Hex;
  /** unix time, seconds */
  expiresAt: number;
}

export type RecordOf<P extends PrimaryType> = P extends 'ExecutionCommitment'
  ? ExecutionCommitment
  : P extends 'ExecutionReceipt' | 'ReexecutionReceipt'
    ? ExecutionReceipt
    : P extends 'AuditRequest'
      ? AuditRequest
      : P extends 'ReexecutionRequest'
        ? ReexecutionRequest
        : AuditVerdict;

/** The field that names a record type's signer. */
export function signerField(primary: PrimaryType): string {
  switch (primary) {
    case 'AuditVerdict':
      return 'auditor';
    case 'AuditRequest':
    case 'ReexecutionRequest':
      return 'gateway';
    default:
      return 'signer';
  }
}

export class MalformedRecordError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MalformedRecordError';
  }
}

const RANGES: Record<string, number> = { uint32: 2 ** 32 - 1, uint64: Number.MAX_SAFE_INTEGER };

/** Throws MalformedRecordError unless `rec` has exactly the fields of `primary` with valid values. */
export function assertWellFormed<P extends PrimaryType>(primary: P, rec: unknown): asserts rec is RecordOf<P> {
  if (!rec || typeof rec !== 'object') throw new MalformedRecordError(`${primary}: not an object`);
  const r = rec as Record<string, unknown>;
  const fields = TYPES[primary];
  for (const f of fields) {
    const v = r[f.name];
    const where = `${primary}.${f.name}`;
    switch (f.type) {
      case 'bytes32':
        if (typeof v !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(v))
          throw new MalformedRecordError(`${where}: expected 0x + 64 hex digits`);
        break;
      case 'address':
        if (typeof v !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(v))
          throw new MalformedRecordError(`${where}: expected a 0x-prefixed 20-byte address`);
        break;
      case 'string':
        if (typeof v !== 'string' || v.length > 256) throw new MalformedRecordError(`${where}: expected a string of ≤ 256 characters`);
        break;
      case 'bool':
        if (typeof v !== 'boolean') throw new MalformedRecordError(`${where}: expected a boolean`);
        break;
      default:
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > RANGES[f.type]!)
          throw new MalformedRecordError(`${where}: expected an integer in [0, ${RANGES[f.type]}]`);
    }
  }
  const extra = Object.keys(r).filter((k) => !fields.some((f) => f.name === k));
  if (extra.length) throw new MalformedRecordError(`${primary}: unknown field(s) ${extra.join(', ')}`);
  if (primary === 'ExecutionCommitment' || primary === 'ExecutionReceipt' || primary === 'ReexecutionReceipt') {
    const c = r as unknown as ExecutionCommitment;
    if (c.layerEnd < c.layerStart) throw new MalformedRecordError(`${primary}: layerEnd ${c.layerEnd} < layerStart ${c.layerStart}`);
    if (c.nTokens < 1) throw new MalformedRecordError(`${primary}: nTokens must be ≥ 1`);
  }
}

function viemDomain(d: OdsiDomain) {
  const dom: { name: string; version: string; chainId: bigint; verifyingContract?: Hex } = {
    name: DOMAIN_NAME,
    version: DOMAIN_VERSION,
    chainId: BigInt(d.chainId),
  };
  if (d.verifyingContract !== undefined) {
    if (!/^0x[0-9a-fA-F]{40}$/.test(d.verifyingContract))
      throw new MalformedRecordError('domain.verifyingContract must be a 20-byte address');
    dom.verifyingContract = d.verifyingContract;
  }
  return dom;
}

function plain<P extends PrimaryType>(primary: P, rec: RecordOf<P>): Record<string, unknown> {
  // copy only the typed fields so stray properties can never change what gets hashed
  const out: Record<string, unknown> = {};
  for (const f of TYPES[primary]) out[f.name] = (rec as unknown as Record<string, unknown>)[f.name];
  return out;
}

// Direct EIP-712 encoding. Every field of odsi's types is a static 32-byte word (bytes32,
// address, uintN, bool) except `string`, which is encoded as keccak256(utf8). So
// encodeData is a fixed-size buffer of 32-byte words and hashStruct is one keccak over
// typeHash ‖ words — no generic ABI encoder per call. Byte-identical to viem's
// hashStruct / hashTypedData (test/accountability/records/eip712.test.ts checks both against each other
// and against the vectors in docs/signatures.md); this path is ~50x cheaper.

const TYPE_HASH_BYTES = new Map<PrimaryType, Uint8Array>();
function typeHashBytes(primary: PrimaryType): Uint8Array {
  let t = TYPE_HASH_BYTES.get(primary);
  if (!t) TYPE_HASH_BYTES.set(primary, (t = keccak256(new TextEncoder().encode(encodeType(primary)))));
  return t;
}

const HEX_VAL = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX_VAL[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_VAL[65 + i] = HEX_VAL[97 + i] = 10 + i;

/** writes 0x-hex `h` right-aligned into the 32-byte word at `off` (caller checked the format) */
function putHex(buf: Uint8Array, off: number, h: string): void {
  const n = (h.length - 2) >> 1;
  const base = off + 32 - n;
  for (let i = 0; i < n; i++) {
    const hi = HEX_VAL[h.charCodeAt(2 + 2 * i)]!;
    const lo = HEX_VAL[h.charCodeAt(3 + 2 * i)]!;
    if (hi < 0 || lo < 0) throw new MalformedRecordError(`not hex: ${h.slice(0, 20)}`);
    buf[base + i] = (hi << 4) | lo;
  }
}

/** writes a non-negative safe integer big-endian into the 32-byte word at `off` */
function putUint(buf: Uint8Array, off: number, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new MalformedRecordError(`expected a non-negative safe integer, got ${v}`);
  let x = v;
  for (let i = 31; x > 0 && i >= 24; i--) {
    buf[off + i] = x % 256;
    x = Math.floor(x / 256);
  }
}

const UTF8 = new TextEncoder();
/** the last few distinct strings (profiles) and their keccak: a step's profile rarely changes */
const STRING_HASHES = new Map<string, Uint8Array>();
function stringHash(s: string): Uint8Array {
  let h = STRING_HASHES.get(s);
  if (!h) {
    h = keccak256(UTF8.encode(s));
    if (STRING_HASHES.size >= 64) STRING_HASHES.delete(STRING_HASHES.keys().next().value as string);
    STRING_HASHES.set(s, h);
  }
  return h;
}

function structHashBytes(primary: PrimaryType, rec: Record<string, unknown>): Uint8Array {
  const fields = TYPES[primary];
  const buf = new Uint8Array(32 * (fields.length + 1));
  buf.set(typeHashBytes(primary), 0);
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    const off = 32 * (i + 1);
    const v = rec[f.name];
    switch (f.type) {
      case 'bytes32':
      case 'address':
        if (typeof v !== 'string' || v.length !== (f.type === 'address' ? 42 : 66) || v[0] !== '0x'[0] || (v[1] !== 'x' && v[1] !== 'X'))
          throw new MalformedRecordError(`${primary}.${f.name}: expected 0x-hex ${f.type}`);
        putHex(buf, off, v);
        break;
      case 'string':
        if (typeof v !== 'string') throw new MalformedRecordError(`${primary}.${f.name}: expected a string`);
        buf.set(stringHash(v), off);
        break;
      case 'bool':
        buf[off + 31] = v ? 1 : 0;
        break;
      default:
        if (typeof v !== 'number' || v > RANGES[f.type]!)
          throw new MalformedRecordError(`${primary}.${f.name}: out of range for ${f.type}`);
        putUint(buf, off, v);
    }
  }
  return keccak256(buf);
}

const hex0x = (b: Uint8Array): Hex => `0x${bytesToHex(b)}`;

/** hashStruct(message) per EIP-712. */
export function structHash<P extends PrimaryType>(primary: P, rec: RecordOf<P>): Hex {
  return hex0x(structHashBytes(primary, rec as unknown as Record<string, unknown>));
}

/** hashStruct via viem's generic encoder: the reference the fast path is tested against. */
export function structHashReference<P extends PrimaryType>(primary: P, rec: RecordOf<P>): Hex {
  return hashStructPlain({ data: plain(primary, rec), primaryType: primary, types: TYPES });
}

/** keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message)) as raw bytes: what gets signed. */
export function typedDigestBytes<P extends PrimaryType>(primary: P, rec: RecordOf<P>, domain: OdsiDomain): Uint8Array {
  const buf = new Uint8Array(66);
  buf[0] = 0x19;
  buf[1] = 0x01;
  buf.set(domainSeparatorBytes(domain), 2);
  buf.set(structHashBytes(primary, rec as unknown as Record<string, unknown>), 34);
  return keccak256(buf);
}

/** keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message)): the bytes that get signed. */
export function typedDigest<P extends PrimaryType>(primary: P, rec: RecordOf<P>, domain: OdsiDomain): Hex {
  return hex0x(typedDigestBytes(primary, rec, domain));
}

/** viem's hashTypedData: the reference the fast path is tested against. */
export function typedDigestReference<P extends PrimaryType>(primary: P, rec: RecordOf<P>, domain: OdsiDomain): Hex {
  return hashTypedDataPlain({ domain: viemDomain(domain), types: TYPES, primaryType: primary, message: plain(primary, rec) });
}

// domain separators are a handful per process (one deployment); cache by (chainId, contract)
const DOMAIN_SEPARATORS = new Map<string, Uint8Array>();
function domainSeparatorBytes(domain: OdsiDomain): Uint8Array {
  const key = `${String(domain.chainId)}|${domain.verifyingContract ?? ''}`;
  let d = DOMAIN_SEPARATORS.get(key);
  if (!d) {
    d = hexToBytes(domainSeparator(domain).slice(2));
    if (DOMAIN_SEPARATORS.size >= 16) DOMAIN_SEPARATORS.clear();
    DOMAIN_SEPARATORS.set(key, d);
  }
  return d;
}

/** EIP-712 domain separator for `domain`. */
export function domainSeparator(domain: OdsiDomain): Hex {
  const dom = viemDomain(domain);
  const fields = [
    { name: 'name', type: 'string' },
    { name: 'version', type: 'string' },
    { name: 'chainId', type: 'uint256' },
    ...(dom.verifyingContract ? [{ name: 'verifyingContract', type: 'address' }] : []),
  ];
  return hashStructPlain({ data: dom, primaryType: 'EIP712Domain', types: { EIP712Domain: fields } });
}

/**
 * A 32-byte protocol id from an application id: 0x-hex of 32 bytes (or 64 bare hex digits)
 * is taken as is, anything else is keccak256 of its UTF-8 bytes (e.g. "chatcmpl-abc").
 */
export function toBytes32(id: string): Hex {
  if (/^0x[0-9a-fA-F]{64}$/.test(id)) return id.toLowerCase() as Hex;
  if (/^[0-9a-fA-F]{64}$/.test(id)) return `0x${id.toLowerCase()}`;
  return `0x${bytesToHex(keccak256(new TextEncoder().encode(id)))}`;
}
