// The node side of receipts: keeps each (request, session) chain head so a node never has
// to track prevReceiptHash itself, and enforces the rules that keep an honest node from
// ever looking like an equivocator (one receipt per slot, strictly increasing steps).

import type { Identity } from '../../identity/identity.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import {
  ZERO_HASH,
  assertWellFormed,
  typedDigestBytes,
  type ExecutionCommitment,
  type ExecutionReceipt,
  type Hex,
  type OdsiDomain,
} from './eip712.js';
import { signCommitment, signDigest, type SignedCommitment, type SignedReceipt } from './receipts.js';

export class SignerError extends Error {
  constructor(
    readonly code: 'slot_conflict' | 'step_order',
    message: string,
  ) {
    super(message);
    this.name = 'SignerError';
  }
}

/** What the node supplies per step; chain links and signer are filled in. */
export type ReceiptFields = Omit<ExecutionReceipt, 'signer' | 'prevReceiptHash' | 'commitmentHash'> & { commitmentHash?: Hex };

interface Head {
  hash: Hex;
  last: SignedReceipt;
}

export class ReceiptSigner {
  private readonly heads = new Map<string, Head>();

  constructor(
    readonly identity: Identity,
    readonly domain: OdsiDomain,
    private readonly maxSessions = 10_000,
  ) {}

  /** Signs the commitment for a step the node is about to run. */
  commit(c: Omit<ExecutionCommitment, 'signer'>): SignedCommitment {
    return signCommitment(this.identity, c, this.domain);
  }

  /**
   * Signs the receipt for a finished step, linked to this node's previous receipt in the
   * session. Asking again for the same step with the same input and output returns the
   * receipt already signed (a retransmission); anything else for an old step throws.
   */
  receipt(f: ReceiptFields): SignedReceipt {
    const key = `${f.requestId}|${f.sessionId}`.toLowerCase();
    const head = this.heads.get(key);
    if (head) {
      const l = head.last.record;
      const sameSlot = l.step === f.step && l.layerStart === f.layerStart && l.layerEnd === f.layerEnd;
      if (sameSlot) {
        if (l.outputHash.toLowerCase() === f.outputHash.toLowerCase() && l.inputHash.toLowerCase() === f.inputHash.toLowerCase())
          return head.last;
        throw new SignerError(
          'slot_conflict',
          `step ${f.step} of this session is already signed with another input/output; a retry must be a new step`,
        );
      }
      if (f.step <= l.step) throw new SignerError('step_order', `step ${f.step} is not after the last signed step ${l.step}`);
    }
    const record: ExecutionReceipt = {
      ...f,
      signer: this.identity.address,
      commitmentHash: f.commitmentHash ?? ZERO_HASH,
      prevReceiptHash: head?.hash ?? ZERO_HASH,
    };
    assertWellFormed('ExecutionReceipt', record);
    // one EIP-712 digest per receipt: it is both what gets signed and the next link's prevReceiptHash
    const d = typedDigestBytes('ExecutionReceipt', record, this.domain);
    const digest: Hex = `0x${bytesToHex(d)}`;
    const signed: SignedReceipt = { record, signature: signDigest(d, this.identity.secret) };
    this.heads.delete(key); // re-insert: Map order = least recently used first
    this.heads.set(key, { hash: digest, last: signed });
    if (this.heads.size > this.maxSessions) this.heads.delete(this.heads.keys().next().value as string);
    return signed;
  }

  /** Digest of the last receipt of a session (ZERO_HASH if none). */
  head(requestId: Hex, sessionId: Hex): Hex {
    return this.heads.get(`${requestId}|${sessionId}`.toLowerCase())?.hash ?? ZERO_HASH;
  }

  closeSession(requestId: Hex, sessionId: Hex): void {
    this.heads.delete(`${requestId}|${sessionId}`.toLowerCase());
  }
}
