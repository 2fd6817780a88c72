// Canonical EIP-712 typed data for odsi's signed records. Hashing is viem's hashTypedData
// (the reference implementation Solidity contracts are tested against), so the digest a
// node signs here is the digest a contract recomputes before ecrecover.
//
// Field order is part of the protocol: changing it changes every type hash. Integers are
// JS numbers (all fit in 2^53); bytes32/address are 0x-hex strings.

import { hashStruct, hashTypedData } from 'viem';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex } from '@noble/hashes/utils.js';

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

export const TYPES = {
  ExecutionCommitment: COMMITMENT_FIELDS,
  ExecutionReceipt: RECEIPT_FIELDS,
  AuditVerdict: VERDICT_FIELDS,
} as const;
export type PrimaryType = keyof typeof TYPES;

/** encodeType(T) per EIP-712: "Name(type1 name1,type2 name2,...)" (no referenced structs here). */
export function encodeType(primary: PrimaryType): string {
  return `${primary}(${TYPES[primary].map((f) => `${f.type} ${f.name}`).join(',')})`;
}
export function typeHash(primary: PrimaryType): Hex {
  return `0x${bytesToHex(keccak_256(new TextEncoder().encode(encodeType(primary))))}`;
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
  /** execution profile, e.g. "reference/f32" or "ort-f32/act-f16"; keys the tolerance table */
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

export type RecordOf<P extends PrimaryType> = P extends 'ExecutionCommitment'
  ? ExecutionCommitment
  : P extends 'ExecutionReceipt'
    ? ExecutionReceipt
    : AuditVerdict;

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
  if (primary !== 'AuditVerdict') {
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

/** hashStruct(message) per EIP-712. */
export function structHash<P extends PrimaryType>(primary: P, rec: RecordOf<P>): Hex {
  return hashStructPlain({ data: plain(primary, rec), primaryType: primary, types: TYPES });
}

/** keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message)): the bytes that get signed. */
export function typedDigest<P extends PrimaryType>(primary: P, rec: RecordOf<P>, domain: OdsiDomain): Hex {
  return hashTypedDataPlain({ domain: viemDomain(domain), types: TYPES, primaryType: primary, message: plain(primary, rec) });
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
  return `0x${bytesToHex(keccak_256(new TextEncoder().encode(id)))}`;
}
