// Chain-of-custody checks over signed receipts. Two relations make any fault point at one
// signer: along a route, each hop's received input hash must equal the upstream hop's
// signed output hash (handoff); over time, each signer's receipts in a session form a hash
// chain with strictly increasing steps (no forks, no replays).

import { COMMITMENT_FIELDS, ZERO_HASH, assertWellFormed, type ExecutionCommitment, type ExecutionReceipt, type Hex, type OdsiDomain } from '../records/eip712.js';
import { checkSigned, type SignedCommitment, type SignedReceipt } from '../records/receipts.js';

export type CustodyCode =
  | 'malformed' // not a well-formed record
  | 'bad_signature' // signature does not recover to the claimed signer
  | 'cross_session' // record of another session/request than the one being checked
  | 'replay' // same step signed twice into one chain (or the very same receipt again)
  | 'step_order' // step not greater than the previous one
  | 'broken_chain' // prevReceiptHash does not link to the signer's previous receipt
  | 'input_mismatch' // received input hash ≠ upstream output hash
  | 'upstream_link' // upstreamReceiptHash does not name the upstream receipt
  | 'layer_gap' // hop does not start where the upstream hop ended
  | 'slot_mismatch' // hops of one handoff disagree on step / pos / nTokens / model
  | 'commitment_mismatch' // receipt does not match the commitment it cites
  | 'output_mismatch'; // output bytes presented are not the ones the receipt signs

export class CustodyError extends Error {
  constructor(
    readonly code: CustodyCode,
    message: string,
    /** signer the fault is attributed to, when the evidence pins it down */
    readonly blame?: Hex,
    /** index of the receipt in a step's chain that failed (checkStepChain) */
    readonly at?: number,
  ) {
    super(message);
    this.name = 'CustodyError';
  }
}

/** Verifies a signed receipt and returns its digest, or throws CustodyError(malformed|bad_signature). */
export function requireValidReceipt(signed: SignedReceipt, domain: OdsiDomain): Hex {
  const v = checkSigned('ExecutionReceipt', signed, domain);
  if (!v.ok) throw new CustodyError(v.malformed ? 'malformed' : 'bad_signature', v.reason);
  return v.digest;
}

export function requireValidCommitment(signed: SignedCommitment, domain: OdsiDomain): Hex {
  const v = checkSigned('ExecutionCommitment', signed, domain);
  if (!v.ok) throw new CustodyError(v.malformed ? 'malformed' : 'bad_signature', v.reason);
  return v.digest;
}

const eqHex = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();
const short = (h: string): string => `${h.slice(0, 10)}…`;

/**
 * Checks the handoff upstream → downstream for one step: same request/session/step/tokens
 * and model, contiguous layers, downstream received exactly what upstream says it sent,
 * and downstream names upstream's receipt. Both signatures are verified. The downstream
 * side may be a receipt or, before it has finished, its commitment.
 */
export function checkHandoff(upstream: SignedReceipt, downstream: SignedReceipt | SignedCommitment, domain: OdsiDomain): void {
  const upHash = requireValidReceipt(upstream, domain);
  const isReceipt = 'outputHash' in (downstream.record as object);
  if (isReceipt) requireValidReceipt(downstream as SignedReceipt, domain);
  else requireValidCommitment(downstream as SignedCommitment, domain);
  const u = upstream.record;
  const d = downstream.record as ExecutionCommitment;
  if (!eqHex(u.requestId, d.requestId) || !eqHex(u.sessionId, d.sessionId))
    throw new CustodyError(
      'cross_session',
      `downstream record belongs to request ${short(d.requestId)}/session ${short(d.sessionId)}, upstream to ${short(u.requestId)}/${short(u.sessionId)}`,
    );
  if (u.step !== d.step || u.pos !== d.pos || u.nTokens !== d.nTokens || !eqHex(u.modelId, d.modelId))
    throw new CustodyError(
      'slot_mismatch',
      `hops disagree on (step, pos, nTokens, model): upstream (${u.step}, ${u.pos}, ${u.nTokens}), downstream (${d.step}, ${d.pos}, ${d.nTokens})`,
    );
  if (d.layerStart !== u.layerEnd)
    throw new CustodyError('layer_gap', `downstream starts at layer ${d.layerStart} but upstream ended at ${u.layerEnd}`);
  if (!eqHex(d.inputHash, u.outputHash))
    // both hashes are signed, so whichever is wrong, the two signers disagree about the bytes on that link
    throw new CustodyError(
      'input_mismatch',
      `downstream ${d.signer} signed input ${short(d.inputHash)} but upstream ${u.signer} signed output ${short(u.outputHash)}`,
    );
  if (isReceipt && !eqHex((d as ExecutionReceipt).upstreamReceiptHash, upHash))
    throw new CustodyError(
      'upstream_link',
      `downstream receipt names upstream ${short((d as ExecutionReceipt).upstreamReceiptHash)}, actual ${short(upHash)}`,
      d.signer,
    );
}

/**
 * Checks a receipt against the commitment a node shows for it (e.g. in an audit reply): the
 * commitment is well formed and validly signed, by the receipt's signer, every committed
 * field (slot, layers, model, profile, input hash, budget) equals the receipt's, and the
 * receipt's commitmentHash is that commitment's digest (a zero commitmentHash cites none).
 * `commitment` is untrusted input. Throws CustodyError: malformed | bad_signature (the
 * commitment itself) or commitment_mismatch (the pair), blaming the receipt's signer.
 */
export function checkCommitment(commitment: unknown, receipt: SignedReceipt, domain: OdsiDomain): void {
  const v = checkSigned('ExecutionCommitment', commitment, domain);
  if (!v.ok) throw new CustodyError(v.malformed ? 'malformed' : 'bad_signature', `commitment: ${v.reason}`);
  const cHash = v.digest;
  requireValidReceipt(receipt, domain);
  const c = (commitment as SignedCommitment).record;
  const r = receipt.record;
  if (!eqHex(c.signer, r.signer))
    throw new CustodyError('commitment_mismatch', `commitment is signed by ${c.signer}, the receipt by ${r.signer}`, r.signer);
  for (const { name: k, type } of COMMITMENT_FIELDS) {
    if (k === 'signer') continue;
    const same = type === 'bytes32' ? eqHex(c[k] as string, r[k] as string) : c[k] === r[k];
    if (!same) {
      const show = (x: unknown) => (type === 'bytes32' ? short(String(x)) : JSON.stringify(x));
      throw new CustodyError('commitment_mismatch', `receipt ${k} ${show(r[k])} ≠ committed ${k} ${show(c[k])}`, r.signer);
    }
  }
  if (eqHex(r.commitmentHash, ZERO_HASH))
    throw new CustodyError(
      'commitment_mismatch',
      `receipt cites no commitment (commitmentHash = 0), but commitment ${short(cHash)} was shown for it`,
      r.signer,
    );
  if (!eqHex(r.commitmentHash, cHash))
    throw new CustodyError(
      'commitment_mismatch',
      `receipt cites commitment ${short(r.commitmentHash)}, the one shown is ${short(cHash)}`,
      r.signer,
    );
}

// ---- the token path's checks, as pure functions (node, gateway and tests use these) ----

/** The slot every receipt of one route step names. */
export interface StepSlot {
  requestId: Hex;
  sessionId: Hex;
  step: number;
  pos: number;
  nTokens: number;
}

/** What the party receiving a link knows, to hold the sender's receipt to. */
export interface LinkExpectation {
  /** the address that must have signed (the hop the bytes came from) */
  signer: Hex;
  slot: StepSlot;
  /** the layers the receipt must cover: `end` alone = it must end where the receiver starts */
  layers: { start?: number; end: number };
  /** hash of the bytes the receiver got (the receipt's outputHash must equal it) */
  outputHash?: Hex;
  /** hash of the bytes the signer was given (its inputHash must equal it) */
  inputHash?: Hex;
}

/**
 * Checks one received receipt's fields against what the receiver knows (signature checked by
 * the caller, possibly on a worker thread). Throws CustodyError: bad_signature (wrong signer),
 * cross_session, slot_mismatch, layer_gap, input_mismatch.
 */
export function checkLink(r: ExecutionReceipt, want: LinkExpectation, what = 'receipt'): void {
  if (!eqHex(r.signer, want.signer)) throw new CustodyError('bad_signature', `${what} names signer ${r.signer}, expected ${want.signer}`);
  const s = want.slot;
  if (!eqHex(r.sessionId, s.sessionId) || !eqHex(r.requestId, s.requestId))
    throw new CustodyError('cross_session', `${what} belongs to session ${short(r.sessionId)}, this is ${short(s.sessionId)}`);
  if (r.step !== s.step || r.pos !== s.pos || r.nTokens !== s.nTokens)
    throw new CustodyError(
      'slot_mismatch',
      `${what} is for (step ${r.step}, pos ${r.pos}, ${r.nTokens} tokens), this step is (${s.step}, ${s.pos}, ${s.nTokens})`,
    );
  const L = want.layers;
  if (L.start === undefined) {
    if (r.layerEnd !== L.end) throw new CustodyError('layer_gap', `${what} ends at layer ${r.layerEnd}, the next hop starts at ${L.end}`);
  } else if (r.layerStart !== L.start || r.layerEnd !== L.end)
    throw new CustodyError('slot_mismatch', `${what} covers layers ${r.layerStart}:${r.layerEnd}, the hop serves ${L.start}:${L.end}`);
  if (want.inputHash !== undefined && !eqHex(r.inputHash, want.inputHash))
    throw new CustodyError('input_mismatch', `${what} signs input ${short(r.inputHash)}, the hop was given ${short(want.inputHash)}`, r.signer);
  if (want.outputHash !== undefined && !eqHex(r.outputHash, want.outputHash))
    throw new CustodyError('input_mismatch', `${what} signs output ${short(r.outputHash)}, the bytes received hash to ${short(want.outputHash)}`, r.signer);
}

/** Checks that a STEP/RESULT carries exactly `count` receipt objects (hop i carries i; a RESULT one per hop). */
export function checkChainShape(receipts: unknown, count: number): SignedReceipt[] {
  if (!Array.isArray(receipts)) throw new CustodyError('malformed', `no receipt chain (expected ${count} receipt(s))`);
  if (receipts.length !== count) throw new CustodyError('malformed', `${receipts.length} receipt(s), expected ${count} (one per upstream hop)`);
  receipts.forEach((s, i) => {
    if (!s || typeof s !== 'object') throw new CustodyError('malformed', `receipt ${i} is not an object`, undefined, i);
  });
  return receipts as SignedReceipt[];
}

/**
 * The ends check of one route step, as the gateway does it per RESULT without signatures:
 * one well-formed receipt per hop, each signed by its hop's address, for this slot and the
 * hop's layers, every handoff matching (hop i's input = hop i−1's output), the first input =
 * what the gateway sent, the last output = what it received. Throws CustodyError with `at` =
 * the failing receipt's index.
 */
export function checkStepChain(
  receipts: unknown,
  o: { hops: readonly { signer: Hex; start: number; end: number }[]; slot: StepSlot; sentHash: Hex; receivedHash: Hex },
): SignedReceipt[] {
  const k = o.hops.length;
  const list = checkChainShape(receipts, k);
  for (let i = 0; i < k; i++) {
    const hop = o.hops[i]!;
    try {
      try {
        assertWellFormed('ExecutionReceipt', list[i]!.record);
      } catch (e) {
        throw new CustodyError('malformed', (e as Error).message);
      }
      checkLink(
        list[i]!.record,
        {
          signer: hop.signer,
          slot: o.slot,
          layers: { start: hop.start, end: hop.end },
          inputHash: i === 0 ? o.sentHash : list[i - 1]!.record.outputHash,
          ...(i === k - 1 ? { outputHash: o.receivedHash } : {}),
        },
        `receipt ${i}`,
      );
    } catch (e) {
      if (!(e instanceof CustodyError)) throw e;
      throw new CustodyError(e.code, e.message, e.blame, i);
    }
  }
  return list;
}

/**
 * Checks all receipts of one step along a route, in hop order: every handoff, plus the
 * gateway's own view of the ends (what it sent to the first hop and received from the last).
 */
export function checkRoute(hops: SignedReceipt[], domain: OdsiDomain, ends: { sentHash?: Hex; receivedHash?: Hex } = {}): void {
  if (hops.length === 0) throw new CustodyError('malformed', 'route has no receipts');
  for (const h of hops) requireValidReceipt(h, domain);
  const first = hops[0]!.record;
  const last = hops[hops.length - 1]!.record;
  if (ends.sentHash && !eqHex(first.inputHash, ends.sentHash))
    throw new CustodyError(
      'input_mismatch',
      `first hop ${first.signer} signed input ${short(first.inputHash)}, gateway sent ${short(ends.sentHash)}`,
      first.signer,
    );
  for (let i = 1; i < hops.length; i++) checkHandoff(hops[i - 1]!, hops[i]!, domain);
  if (ends.receivedHash && !eqHex(last.outputHash, ends.receivedHash))
    throw new CustodyError(
      'input_mismatch',
      `last hop ${last.signer} signed output ${short(last.outputHash)}, gateway received ${short(ends.receivedHash)}`,
      last.signer,
    );
}

/**
 * One signer's receipts within one session, appended in order. Enforces the hash chain
 * (prevReceiptHash), strictly increasing steps and session membership.
 */
export class ReceiptChain {
  private lastHash: Hex = ZERO_HASH;
  private lastStep = -1;
  private readonly seen = new Set<string>();
  private count = 0;

  constructor(
    readonly signer: Hex,
    readonly requestId: Hex,
    readonly sessionId: Hex,
    private readonly domain: OdsiDomain,
  ) {}

  get length(): number {
    return this.count;
  }
  get head(): Hex {
    return this.lastHash;
  }

  /** Verifies and appends; returns the receipt's digest. Throws CustodyError with a code. */
  append(signed: SignedReceipt): Hex {
    return this.appendVerified(signed, requireValidReceipt(signed, this.domain));
  }

  /**
   * Appends a receipt whose signature the caller has just checked (checkSigned), with the
   * digest that check returned: saves a second digest + ECDSA recovery on the token path.
   */
  appendVerified(signed: SignedReceipt, digest: Hex): Hex {
    const r = signed.record;
    if (!eqHex(r.sessionId, this.sessionId) || !eqHex(r.requestId, this.requestId))
      throw new CustodyError(
        'cross_session',
        `receipt is for request ${short(r.requestId)}/session ${short(r.sessionId)}, chain is ${short(this.requestId)}/${short(this.sessionId)}`,
        r.signer,
      );
    if (!eqHex(r.signer, this.signer))
      throw new CustodyError('cross_session', `receipt signed by ${r.signer}, chain belongs to ${this.signer}`);
    if (this.seen.has(digest.toLowerCase()))
      throw new CustodyError('replay', `receipt ${short(digest)} (step ${r.step}) was already appended`, r.signer);
    if (r.step === this.lastStep) throw new CustodyError('replay', `step ${r.step} signed twice by ${r.signer}`, r.signer);
    if (r.step < this.lastStep) throw new CustodyError('step_order', `step ${r.step} after step ${this.lastStep}`, r.signer);
    if (!eqHex(r.prevReceiptHash, this.lastHash))
      throw new CustodyError(
        'broken_chain',
        `prevReceiptHash ${short(r.prevReceiptHash)} does not link to ${short(this.lastHash)}`,
        r.signer,
      );
    this.seen.add(digest.toLowerCase());
    this.lastHash = digest;
    this.lastStep = r.step;
    this.count++;
    return digest;
  }
}

/** Per-(signer, request, session) receipt chains, created on first sight. */
export class CustodyLog {
  private readonly chains = new Map<string, ReceiptChain>();
  constructor(private readonly domain: OdsiDomain) {}

  append(signed: SignedReceipt): Hex {
    const r = signed.record as Partial<ExecutionReceipt> | undefined;
    if (!r || typeof r.signer !== 'string' || typeof r.sessionId !== 'string' || typeof r.requestId !== 'string')
      return requireValidReceipt(signed, this.domain); // throws malformed
    const key = `${r.signer}|${r.requestId}|${r.sessionId}`.toLowerCase();
    let chain = this.chains.get(key);
    if (!chain) {
      requireValidReceipt(signed, this.domain); // no chain for a forged signer
      chain = new ReceiptChain(r.signer, r.requestId, r.sessionId, this.domain);
      this.chains.set(key, chain);
    }
    return chain.append(signed);
  }

  chain(signer: Hex, requestId: Hex, sessionId: Hex): ReceiptChain | undefined {
    return this.chains.get(`${signer}|${requestId}|${sessionId}`.toLowerCase());
  }

  /** Forget a finished session's chains. */
  closeSession(requestId: Hex, sessionId: Hex): void {
    const suffix = `|${requestId}|${sessionId}`.toLowerCase();
    for (const k of [...this.chains.keys()]) if (k.endsWith(suffix)) this.chains.delete(k);
  }
}
