// The ledger's events: what each write records, how it is signed and how the log is chained.
//
//   event   = { v: 1, ledger, seq-free fields: kind, submitter, nonce, time, body }
//   digest  = keccak256(utf8("\x19odsi ledger event\n") ‖ utf8(canonicalJson(event)))
//   signed  with the submitter's secp256k1 key (accountability/records/receipts.ts signDigest:
//           RFC 6979, low-s, r ‖ s ‖ v) — the same key that is the node's peer id
//   chain_i = keccak256(chain_{i−1} ‖ digest_i ‖ signature_i), chain_0 = 32 zero bytes
//
// `ledger` is the chain hash after the genesis event (zero in the genesis itself), so an event
// signed for one ledger never verifies in another; `nonce` is the submitter's count of events
// (1, 2, …), so a signed event cannot be replayed within one. Canonical JSON: object keys
// sorted, no spaces, amounts as decimal strings (no numbers beyond 2^53).

import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import type { Evidence } from '../accountability/records/evidence.js';
import { ZERO_HASH, type Hex } from '../accountability/records/eip712.js';
import { recoverSigner, signDigest, type SignedVerdict } from '../accountability/records/receipts.js';
import type { Address, LedgerSigner, ReputationReport } from './ledger.js';

export const EVENT_PREFIX = '\x19odsi ledger event\n';

/** Bodies per kind; amounts are decimal strings of the smallest unit. */
export interface EventBodies {
  genesis: { params: Record<string, string | number>; chainId: number; operator: Address };
  register: { role: 'node' | 'gateway' };
  authorize: { gateway: Address };
  mint: { to: Address; amount: string };
  stake: { amount: string };
  unstake: { amount: string };
  /** amount: what to withdraw; absent = all matured at the event's time */
  withdraw: { amount?: string };
  /** faucet: the operator mints it for the account; else it comes from the submitter's wallet */
  deposit: { account: Address; amount: string; faucet: boolean };
  evidence: { evidence: Evidence };
  verdicts: { dispute: Hex; verdicts: SignedVerdict[] };
  settle: {
    epoch: number;
    charges: { account: Address; amount: string }[];
    credits: { identity: Address; units: string; layerSteps: number }[];
  };
  reputation: { epoch: number; reports: ReputationReport[] };
}
export type EventKind = keyof EventBodies;
export const EVENT_KINDS: readonly EventKind[] = [
  'genesis',
  'register',
  'authorize',
  'mint',
  'stake',
  'unstake',
  'withdraw',
  'deposit',
  'evidence',
  'verdicts',
  'settle',
  'reputation',
];

/** Events that move stake, slashes or payments: written with synchronous=FULL. */
export const DURABLE_KINDS: ReadonlySet<EventKind> = new Set(['genesis', 'mint', 'stake', 'unstake', 'withdraw', 'deposit', 'evidence', 'verdicts', 'settle']);

export interface LedgerEvent<K extends EventKind = EventKind> {
  v: 1;
  ledger: Hex;
  kind: K;
  submitter: Address;
  nonce: number;
  /** unix seconds (the ledger's clock when it was written) */
  time: number;
  body: EventBodies[K];
}

export interface SignedEvent<K extends EventKind = EventKind> {
  event: LedgerEvent<K>;
  signature: Hex;
}

/** JSON with object keys sorted (recursively) and bigints as decimal strings. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') {
    if (typeof v === 'bigint') return JSON.stringify(v.toString());
    if (typeof v === 'number' && !Number.isFinite(v)) throw new RangeError('non-finite number in a ledger event');
    if (v === undefined) return 'null';
    return JSON.stringify(v);
  }
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
}

const UTF8 = new TextEncoder();

export function eventDigest(e: LedgerEvent): Uint8Array {
  return keccak_256(UTF8.encode(EVENT_PREFIX + canonicalJson(e)));
}

export function signEvent<K extends EventKind>(e: LedgerEvent<K>, signer: LedgerSigner): SignedEvent<K> {
  return { event: e, signature: signDigest(eventDigest(e), signer.secret) };
}

/** The address that signed the event, or why it does not verify (malformed, high-s, wrong signer). */
export function checkEventSignature(s: SignedEvent): string | undefined {
  const r = recoverSigner(eventDigest(s.event), s.signature);
  if ('error' in r) return r.error;
  if (r.address.toLowerCase() !== String(s.event.submitter).toLowerCase()) return `event signed by ${r.address}, claims ${s.event.submitter}`;
  return undefined;
}

export function chainHash(prev: Hex, digest: Uint8Array, signature: Hex): Hex {
  const buf = new Uint8Array(32 + 32 + 65);
  buf.set(hexToBytes(prev.slice(2)), 0);
  buf.set(digest, 32);
  buf.set(hexToBytes(signature.slice(2)), 64);
  return `0x${bytesToHex(keccak_256(buf))}`;
}

export const GENESIS_PREV: Hex = ZERO_HASH;

/** keccak256 of a UTF-8 string as 0x-hex (evidence ids, dispute ids). */
export function keccakText(s: string): Hex {
  return `0x${bytesToHex(keccak_256(UTF8.encode(s)))}`;
}
