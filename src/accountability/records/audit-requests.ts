// The signed records of the audit protocols (docs/signatures.md): a gateway's AuditRequest
// (an auditor may fetch a session's committed inputs) and ReexecutionRequest (a node may
// re-execute an audited step for it), and the ReexecutionReceipt a node signs for that work —
// a type of its own, so it never verifies as a token-path ExecutionReceipt.

import type { Identity } from '../../identity/identity.js';
import {
  assertWellFormed,
  typedDigestBytes,
  type AuditRequest,
  type ExecutionReceipt,
  type Hex,
  type OdsiDomain,
  type ReexecutionRequest,
} from './eip712.js';
import { checkSigned, signDigest, type Signed, type SignedReceipt } from './receipts.js';

export type SignedAuditRequest = Signed<AuditRequest>;
export type SignedReexecutionRequest = Signed<ReexecutionRequest>;

/** longest a request may stay valid: a node refuses one that expires later than this from now */
export const MAX_REQUEST_VALIDITY_S = 600;

/** Signs an AuditRequest as the gateway (`gateway` is the identity's address). */
export function signAuditRequest(gateway: Identity, r: Omit<AuditRequest, 'gateway'>, domain: OdsiDomain): SignedAuditRequest {
  const record: AuditRequest = { ...r, gateway: gateway.address };
  assertWellFormed('AuditRequest', record);
  return { record, signature: signDigest(typedDigestBytes('AuditRequest', record, domain), gateway.secret) };
}

/** Signs a ReexecutionRequest as the gateway. */
export function signReexecutionRequest(
  gateway: Identity,
  r: Omit<ReexecutionRequest, 'gateway'>,
  domain: OdsiDomain,
): SignedReexecutionRequest {
  const record: ReexecutionRequest = { ...r, gateway: gateway.address };
  assertWellFormed('ReexecutionRequest', record);
  return { record, signature: signDigest(typedDigestBytes('ReexecutionRequest', record, domain), gateway.secret) };
}

/** Signs the receipt of a re-execution (type ReexecutionReceipt); `signer` is the identity's address. */
export function signReexecutionReceipt(identity: Identity, r: Omit<ExecutionReceipt, 'signer'>, domain: OdsiDomain): SignedReceipt {
  const record: ExecutionReceipt = { ...r, signer: identity.address };
  assertWellFormed('ReexecutionReceipt', record);
  return { record, signature: signDigest(typedDigestBytes('ReexecutionReceipt', record, domain), identity.secret) };
}

/** unix time in seconds */
export const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/**
 * Checks a signed request's form, signature and validity window. Returns the record, or why it
 * is refused (the reason names nothing but the request itself).
 */
export function checkRequest<P extends 'AuditRequest' | 'ReexecutionRequest'>(
  primary: P,
  signed: unknown,
  domain: OdsiDomain,
  now = nowSeconds(),
): { ok: true; record: P extends 'AuditRequest' ? AuditRequest : ReexecutionRequest } | { ok: false; reason: string } {
  if (signed === undefined) return { ok: false, reason: `no signed ${primary}` };
  const v = checkSigned(primary, signed, domain);
  if (!v.ok) return { ok: false, reason: v.reason };
  const record = (signed as Signed<AuditRequest | ReexecutionRequest>).record;
  if (record.expiresAt <= now) return { ok: false, reason: `${primary} expired at ${record.expiresAt} (now ${now})` };
  if (record.expiresAt > now + MAX_REQUEST_VALIDITY_S)
    return { ok: false, reason: `${primary} is valid for more than ${MAX_REQUEST_VALIDITY_S} s` };
  return { ok: true, record: record as P extends 'AuditRequest' ? AuditRequest : ReexecutionRequest };
}

/** Lower-case equality of two 0x-hex values. */
export const sameHex = (a: Hex | string, b: Hex | string): boolean => a.toLowerCase() === b.toLowerCase();
