// Signed node adverts: the record format (signed body, DHT key, model CID), its verification,
// and the DHT validator/selector hooks that createHost installs. Pure: no networking here
// (adverts.ts publishes, serves and finds records over a host).
//
// Every record is signed by the node's secp256k1 key (the key its peer id embeds) and expires
// after ttlMs unless re-announced; the validators reject unsigned, mismatched or expired
// records on put and on get.

import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { parsePeerId } from '../identity/peer-id.js';
import { CID } from 'multiformats/cid';
import { create as createDigest } from 'multiformats/hashes/digest';
import type { Identity } from '../identity/identity.js';
import { ecdsa } from '../identity/ecdsa.js';

export interface NodeAdvert {
  peerId: string;
  addrs: string[];
  modelId: string;
  /** decoder layers [start, end) */
  start: number;
  end: number;
  /** measured decode ms per token for its whole range */
  msPerToken: number;
  prefillMsPerToken: number;
  /** active sessions */
  load: number;
  freeKvTokens: number;
  engine: string;
  version: string;
  /** unix ms when signed (signer's clock) */
  issuedAt: number;
  ttlMs: number;
  /** hex, 64-byte compact ECDSA (r||s, low-s, RFC 6979) over sha256(ADVERT_DOMAIN || body) */
  signature: string;
}

export type AdvertBody = Omit<NodeAdvert, 'signature'>;

export const ADVERT_NAMESPACE = 'odsi-adv';
export const ADVERT_DOMAIN = 'odsi/advert/v1\n';
/** adverts issued further in the future than this (clock skew) are rejected */
const MAX_SKEW_MS = 60_000;
export const MAX_RECORD_BYTES = 16 * 1024;
const MODEL_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

export class AdvertError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AdvertError';
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

// Field order of the signed body; an advert is signed over exactly these bytes.
const BODY_KEYS: (keyof AdvertBody)[] = [
  'peerId',
  'addrs',
  'modelId',
  'start',
  'end',
  'msPerToken',
  'prefillMsPerToken',
  'load',
  'freeKvTokens',
  'engine',
  'version',
  'issuedAt',
  'ttlMs',
];

export function advertKey(modelId: string, peerId: string): Uint8Array {
  if (!MODEL_ID_RE.test(modelId)) throw new AdvertError(`model id "${modelId}" has characters not allowed in a DHT key`);
  return enc.encode(`/${ADVERT_NAMESPACE}/${modelId}/${peerId}`);
}

/** CID under which every node serving `modelId` announces itself as a provider. */
export function modelCid(modelId: string): CID {
  return CID.createV1(0x55, createDigest(0x12, sha256(enc.encode(`odsi/model/${modelId}`))));
}

function signedMessage(body: Uint8Array): Uint8Array {
  const d = enc.encode(ADVERT_DOMAIN);
  const m = new Uint8Array(d.length + body.length);
  m.set(d);
  m.set(body, d.length);
  return m;
}

/** Record value: 64-byte signature followed by the UTF-8 JSON body. */
export function signAdvert(identity: Identity, fields: Omit<AdvertBody, 'peerId'>): { advert: NodeAdvert; record: Uint8Array } {
  const body: Record<string, unknown> = {};
  const all = { ...fields, peerId: identity.peerId.toString() } as AdvertBody;
  for (const k of BODY_KEYS) body[k] = all[k];
  const bodyBytes = enc.encode(JSON.stringify(body));
  const sig = ecdsa().sign(sha256(signedMessage(bodyBytes)), identity.secret).rs; // RFC 6979, low-s
  const record = new Uint8Array(64 + bodyBytes.length);
  record.set(sig);
  record.set(bodyBytes, 64);
  return { advert: { ...all, signature: bytesToHex(sig) }, record };
}

/** Decode and verify a record; throws AdvertError when anything is off. */
export function verifyAdvertRecord(record: Uint8Array, opts: { now?: number; key?: Uint8Array } = {}): NodeAdvert {
  if (record.length <= 64 || record.length > MAX_RECORD_BYTES) throw new AdvertError(`advert record of ${record.length} bytes`);
  const sig = record.subarray(0, 64);
  const bodyBytes = record.subarray(64);
  let body: AdvertBody;
  try {
    body = JSON.parse(dec.decode(bodyBytes)) as AdvertBody;
  } catch {
    throw new AdvertError('advert body is not UTF-8 JSON');
  }
  checkShape(body);
  let pub: Uint8Array | undefined;
  try {
    pub = parsePeerId(body.peerId).publicKey?.raw;
  } catch {
    throw new AdvertError(`advert peer id "${body.peerId}" is invalid`);
  }
  if (!pub || pub.length !== 33) throw new AdvertError('advert peer id does not embed a secp256k1 key');
  if (!ecdsa().verify(sha256(signedMessage(bodyBytes)), sig, pub)) throw new AdvertError('advert signature does not match its peer id');
  const now = opts.now ?? Date.now();
  if (body.issuedAt > now + MAX_SKEW_MS) throw new AdvertError('advert issued in the future');
  if (body.issuedAt + body.ttlMs < now) throw new AdvertError('advert expired');
  if (opts.key) {
    const k = dec.decode(opts.key).split('/');
    if (k.length !== 4 || k[1] !== ADVERT_NAMESPACE || k[2] !== body.modelId || k[3] !== body.peerId) {
      throw new AdvertError('advert does not match its DHT key');
    }
  }
  return { ...body, signature: bytesToHex(sig) };
}

function checkShape(b: AdvertBody): void {
  const int = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 0;
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
  const ok =
    b &&
    typeof b === 'object' &&
    typeof b.peerId === 'string' &&
    Array.isArray(b.addrs) &&
    b.addrs.every((a) => typeof a === 'string') &&
    typeof b.modelId === 'string' &&
    MODEL_ID_RE.test(b.modelId) &&
    int(b.start) &&
    int(b.end) &&
    b.end >= b.start &&
    num(b.msPerToken) &&
    num(b.prefillMsPerToken) &&
    int(b.load) &&
    int(b.freeKvTokens) &&
    typeof b.engine === 'string' &&
    typeof b.version === 'string' &&
    int(b.issuedAt) &&
    int(b.ttlMs);
  if (!ok) throw new AdvertError('advert body is missing fields or has wrong types');
}

/** Re-check a NodeAdvert object (e.g. one passed around in memory) against its signature. */
export function verifyAdvert(a: NodeAdvert, now?: number): boolean {
  try {
    const body: Record<string, unknown> = {};
    for (const k of BODY_KEYS) body[k] = a[k];
    const bodyBytes = enc.encode(JSON.stringify(body));
    const rec = new Uint8Array(64 + bodyBytes.length);
    rec.set(hexToBytes(a.signature));
    rec.set(bodyBytes, 64);
    verifyAdvertRecord(rec, { now });
    return true;
  } catch {
    return false;
  }
}

// DHT hooks (installed by createHost): validate on put/get; prefer the newest record.
export const dhtValidators = {
  [ADVERT_NAMESPACE]: (key: Uint8Array, value: Uint8Array) => {
    verifyAdvertRecord(value, { key });
  },
};
export const dhtSelectors = {
  [ADVERT_NAMESPACE]: (_key: Uint8Array, records: Uint8Array[]) => {
    let best = 0;
    let bestAt = -1;
    records.forEach((r, i) => {
      try {
        const at = verifyAdvertRecord(r).issuedAt;
        if (at > bestAt) {
          best = i;
          bestAt = at;
        }
      } catch {
        /* invalid records never win */
      }
    });
    return best;
  },
};
