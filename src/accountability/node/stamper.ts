// The node side of accountability on the token path (the node's StepStamper, src/node/stamper.ts).
//
// Before compute:
// - commit: the node fixes an ExecutionCommitment — what it is about to run (slot, layers,
//   model, profile), on which input bytes, within which budget. Its fields are fixed from the
//   input before compute starts, and the receipt cites its digest (a function of those fields,
//   taken when the receipt is signed, after the output went on); it is signed only
//   when an auditor is first shown it (no signature on the token path for it). It stays in the
//   session log; it does not travel with the activation.
//
// After compute, once the output went on (act 1.3.0, docs/protocol.md §4.3, §8.1) and the
// upstream RECEIPTS arrived (the signature check runs on the crypto worker, crypto-pool.ts):
// - checkUpstream: the upstream hop's receipt for this step must be well formed, validly signed
//   by the upstream hop's own key (its peer id), for this session/step/slot, the next link in
//   that signer's per-session chain (no replays), and must sign exactly the bytes that arrived
//   (chain of custody; the field checks are checks/custody.ts's checkLink). A failure is
//   answered with an ERROR naming the upstream peer (so the gateway routes around it) and this
//   hop signs nothing for that step, so its output is accepted nowhere downstream.
// - sign makes the ExecutionReceipt (input hash as received, output hash as sent, upstream
//   receipt hash, previous receipt hash in the session, digest of the step's commitment); the
//   executor sends it on in the step's RECEIPTS, and retain keeps the step's bytes, receipt and
//   commitment for auditors (step-archive.ts).
//
// Never twice for one slot (slot-guard.ts): claim, before anything is committed or computed,
// refuses a second, different input for a (request, session, step) this node already took; sign
// gives a slot at most one receipt for the challenge window, whatever sessions came and went —
// and, with a slashing-protection database, whatever crashes and restarts came in between.

import type { OdsiHost } from '../../p2p/host.js';
import type { Dtype, OpenHeader, StepHeader } from '../../protocol/messages.js';
import {
  COMMITMENT_FIELDS,
  LAST_ROW_PROFILE,
  ZERO_HASH,
  assertWellFormed,
  typedDigest,
  type ExecutionCommitment,
  type ExecutionReceipt,
  type Hex,
  type OdsiDomain,
} from '../records/eip712.js';
import { hashTensor, type SignedCommitment, type SignedReceipt } from '../records/receipts.js';
import { signReexecutionReceipt } from '../records/audit-requests.js';
import { CustodyError, ReceiptChain, checkChainShape, checkLink } from '../checks/custody.js';
import type { CryptoPool } from '../records/crypto-pool.js';
import { ReceiptSigner, SignerError } from '../records/signer.js';
import { addressOfPeer, requestIdOf, sessionIdOf, toModelId } from '../records/wire.js';
import { DEFAULT_ARCHIVE_LIMITS, StepArchive, type ArchiveLimits, type PendingCommitment } from './step-archive.js';
import { SlotGuard, type ClaimResult } from './slot-guard.js';
import type { SlotJournal } from './slashing-protection.js';

/** A STEP as this hop received it (before compute). */
export interface ArrivingStep {
  open: OpenHeader;
  /** the incoming STEP header (budgetMs as granted to this hop) */
  header: StepHeader;
  /** activation bytes as received */
  input: Uint8Array;
  range: { start: number; end: number };
  /** stage.profile of the engine */
  profile: string;
  modelId: string;
  /** the upstream hops' signed receipts for this step, as decoded from their RECEIPTS message (none at hop 0) */
  receipts?: unknown;
}

/** A computed step about to be sent on. */
export interface FinishedStep extends ArrivingStep {
  /** the outgoing header (budgetMs still as granted to this hop) */
  header: StepHeader;
  /** activation bytes as sent */
  output: Uint8Array;
  timing: { queueMs: number; computeMs: number; sendMs: number };
}

/** An upstream receipt that does not hold: the step's output must not be released. */
export interface CustodyFailure {
  code: 'custody';
  reason: string;
  /** the peer the failure is attributed to (the upstream hop) */
  peerId: string;
}

/** The receipt of an audit re-execution, before signing. */
export type ReexecReceiptFields = Omit<ExecutionReceipt, 'signer'>;

export interface StampStats {
  commitmentsSigned: number;
  /** time spent signing commitments (on the token path, before compute), ms */
  commitMs: number;
  receiptsSigned: number;
  signMs: number;
  receiptsChecked: number;
  checkMs: number;
  custodyRejected: number;
}

export interface NodeStamperOptions {
  /** the node's host: its identity signs, its libp2p serves the audit protocol */
  host: OdsiHost;
  /** the deployment's EIP-712 domain */
  domain: OdsiDomain;
  /** where signatures are made and checked (a worker thread, or the calling thread) */
  crypto: CryptoPool;
  limits?: Partial<ArchiveLimits>;
  /** the durable record of the sessions it signed for (slashing-protection.ts); none: this process remembers its slots only */
  protection?: SlotJournal;
}

const us = (ms: number) => Math.max(0, Math.round(ms * 1000));

/**
 * The profile a node signs: the engine's, then `+last` when its output is the last position's
 * row alone (the last hop of a lastRow STEP), then the activation transport when it is not f32.
 */
export function signedProfile(stageProfile: string, dtype: Dtype, lastRow = false): string {
  const p = lastRow ? `${stageProfile}${LAST_ROW_PROFILE}` : stageProfile;
  return dtype === 'f32' ? p : `${p}+act-${dtype}`;
}

/** Whether a step's output at this hop is its last row alone (docs/protocol.md §4, `lastRow`). */
function lastRowAt(s: ArrivingStep): boolean {
  return s.header.lastRow === true && s.open.hop === s.open.route.length - 1;
}

type Committed = Omit<ExecutionCommitment, 'signer'>;

/** The committed fields of a step; the receipt repeats them, so both are built here. */
function committedFields(o: ArrivingStep, inputHash: Hex): Committed {
  const h = o.header;
  return {
    requestId: requestIdOf(o.open.sessionId),
    sessionId: sessionIdOf(o.open.sessionId),
    step: h.step,
    pos: h.pos,
    nTokens: h.nTokens,
    layerStart: o.range.start,
    layerEnd: o.range.end,
    modelId: toModelId(o.modelId),
    profile: signedProfile(o.profile, h.dtype, lastRowAt(o)),
    inputHash,
    budgetUs: h.budgetMs !== undefined ? us(Math.max(0, h.budgetMs)) : 0,
  };
}

const COMMITTED_KEYS = COMMITMENT_FIELDS.map((f) => f.name).filter((k) => k !== 'signer') as (keyof Committed)[];
const sameCommitted = (c: ExecutionCommitment, f: Committed): boolean =>
  COMMITTED_KEYS.every(
    (k) => c[k] === f[k] || (typeof c[k] === 'string' && (c[k] as string).toLowerCase() === (f[k] as string).toLowerCase()),
  );

/** The accountable node's stamper: checks custody, commits, signs receipts, keeps steps for auditors. */
export class NodeStamper {
  readonly accountable = true;
  readonly stats: StampStats = {
    commitmentsSigned: 0,
    commitMs: 0,
    receiptsSigned: 0,
    signMs: 0,
    receiptsChecked: 0,
    checkMs: 0,
    custodyRejected: 0,
  };
  private readonly host: OdsiHost;
  readonly domain: OdsiDomain;
  private readonly crypto: CryptoPool;
  private readonly signer: ReceiptSigner;
  private readonly archive: StepArchive;
  private readonly guard: SlotGuard;
  /** the last input hashed (one step's claim, custody check and commitment share it) */
  private hashed?: { input: Uint8Array; hash: Hex };
  /** outputs hashed ahead of signing (prepare), by buffer: each step's output is its own buffer */
  private readonly outputHashes = new WeakMap<Uint8Array, Hex>();

  constructor(o: NodeStamperOptions) {
    this.host = o.host;
    this.domain = o.domain;
    this.crypto = o.crypto;
    const limits = { ...DEFAULT_ARCHIVE_LIMITS, ...o.limits };
    this.signer = new ReceiptSigner(o.host.identity, o.domain, limits.maxSessions * 4);
    this.archive = new StepArchive(o.host, limits, o.domain);
    const maxSlots = limits.maxSessions * 1024;
    // one owner may hold a quarter of the slots (as of the KV budget, node/peer-limits.ts)
    this.guard = new SlotGuard({ windowMs: limits.challengeWindowMs, maxSlots, maxSlotsPerOwner: Math.ceil(maxSlots / 4) }, o.protection);
  }

  /** The hash of a step's input bytes: claim, custody check and commitment all need it, once. */
  private inputHash(input: Uint8Array): Hex {
    if (this.hashed?.input !== input) this.hashed = { input, hash: hashTensor(input) };
    return this.hashed.hash;
  }

  /** A session opens: on the slashing-protection journal before any step of it (off the main thread). */
  openSession(open: OpenHeader): Promise<void> {
    return this.guard.open(SlotGuard.session(requestIdOf(open.sessionId), sessionIdOf(open.sessionId)));
  }

  /** Before commit and compute: may this input run for its slot? (refused: nothing is computed or signed) */
  claim(s: ArrivingStep): ClaimResult {
    const key = SlotGuard.key(requestIdOf(s.open.sessionId), sessionIdOf(s.open.sessionId), s.header.step);
    return this.guard.claim(key, this.inputHash(s.input), s.open.reply.peerId);
  }

  get auditsServed(): number {
    return this.archive.auditsServed;
  }

  /** Serves the audit protocol and warms the crypto worker, so the first step does not pay for its boot. */
  async start(): Promise<void> {
    await this.archive.start();
    await this.crypto.warm(this.host.identity, this.domain);
  }

  async stop(): Promise<void> {
    await this.archive.stop();
  }

  /**
   * Chain-of-custody check of a step's upstream receipts (`s.receipts`, from its RECEIPTS).
   * Resolves to a failure to answer with, or undefined when this hop may sign its receipt. The
   * signature check runs on the crypto worker, off the node's main thread.
   */
  async checkUpstream(s: ArrivingStep): Promise<CustodyFailure | undefined> {
    const { open, header: h } = s;
    const t0 = performance.now();
    const log = this.archive.log(open.sessionId);
    const receipts = s.receipts;
    const hop = open.hop;
    if (hop === 0) {
      // the gateway does not sign activations it sends; nothing upstream to check
      if (receipts !== undefined && (!Array.isArray(receipts) || receipts.length !== 0))
        return this.reject('malformed: the first hop expects no receipts from the gateway', open.reply.peerId);
      return undefined;
    }
    const upPeer = open.route[hop - 1]!.peerId;
    try {
      const signed = checkChainShape(receipts, hop)[hop - 1]!;
      const t1 = performance.now();
      const v = await this.crypto.verify('ExecutionReceipt', signed, this.domain);
      const waited = performance.now() - t1;
      if (!v.ok) throw new CustodyError(v.malformed ? 'malformed' : 'bad_signature', v.reason);
      const sid = sessionIdOf(open.sessionId);
      const rid = requestIdOf(open.sessionId);
      checkLink(
        signed.record,
        {
          signer: addressOfPeer(upPeer),
          slot: { requestId: rid, sessionId: sid, step: h.step, pos: h.pos, nTokens: h.nTokens },
          layers: { end: open.route[hop]!.start },
          outputHash: this.inputHash(s.input),
        },
        `the upstream hop's receipt`,
      );
      if (h.step === 0 || !log.upstream) log.upstream = new ReceiptChain(signed.record.signer, rid, sid, this.domain);
      const digest = log.upstream.appendVerified(signed, v.digest); // replay / fork / step order
      log.upstreamHash.set(h.step, digest);
      this.stats.receiptsChecked++;
      this.stats.checkMs += performance.now() - t0 - waited; // main-thread time only
      return undefined;
    } catch (e) {
      if (e instanceof CustodyError) return this.reject(`${e.code}: ${e.message}`, upPeer);
      return this.reject(`could not check the upstream receipt: ${(e as Error).message}`, upPeer);
    }
  }

  private reject(reason: string, peerId: string): CustodyFailure {
    this.stats.custodyRejected++;
    return { code: 'custody', reason: `chain of custody: ${reason}`, peerId };
  }

  /**
   * Fixes this hop's ExecutionCommitment for the step (call before compute: the record is fixed
   * from the input synchronously) and keeps it in the session log until the receipt cites it.
   * Its digest, which the receipt cites, is a function of that record alone, so it is taken when
   * the receipt is signed, after the output went on (off the activation's path); the signature
   * only when an auditor is first shown it. Never rejects: a step without a commitment (or with
   * a malformed one) gets a receipt with commitmentHash = 0.
   */
  async commit(c: ArrivingStep): Promise<void> {
    try {
      const t0 = performance.now();
      const record: ExecutionCommitment = { ...committedFields(c, this.inputHash(c.input)), signer: this.host.identity.address };
      // the receipt binds the digest either way, and the token path makes no signature for it
      const signed: SignedCommitment = { record, signature: ZERO_HASH };
      this.archive.signWhenShown(signed, async () => {
        signed.signature = (await this.crypto.sign('ExecutionCommitment', record, this.host.identity.secret, this.domain)).signature;
        this.stats.commitmentsSigned++;
      });
      const pending = this.archive.log(c.open.sessionId).pending;
      pending.delete(c.header.step);
      pending.set(c.header.step, { signed, input: c.input });
      while (pending.size > this.archive.limits.maxPendingCommitments) pending.delete(pending.keys().next().value as number);
      this.stats.commitMs += performance.now() - t0;
    } catch {
      /* see above */
    }
  }

  /**
   * After the output went on, before the upstream receipts are there (they follow the upstream's
   * STEP): takes what this hop's receipt needs that does not depend on them — the commitment's
   * digest, the output's hash — so that once they verify only the receipt itself is left to hash
   * and sign. Signs nothing; never throws.
   */
  prepare(o: FinishedStep): void {
    try {
      const pending = this.archive.log(o.open.sessionId).pending.get(o.header.step);
      if (pending) this.commitmentDigest(pending);
      this.outputHash(o.output);
    } catch {
      /* sign() does it again and says why */
    }
  }

  /** hashTensor of an output, taken once (prepare, then sign) */
  private outputHash(output: Uint8Array): Hex {
    let h = this.outputHashes.get(output);
    if (h === undefined) this.outputHashes.set(output, (h = hashTensor(output)));
    return h;
  }

  /** The digest of a pending commitment (taken once), or undefined when it is not well formed. */
  private commitmentDigest(p: PendingCommitment): Hex | undefined {
    if (p.digest !== undefined) return p.digest;
    try {
      assertWellFormed('ExecutionCommitment', p.signed.record);
      return (p.digest = typedDigest('ExecutionCommitment', p.signed.record, this.domain));
    } catch {
      return undefined;
    }
  }

  /**
   * Signs this hop's receipt for the step. Never throws: a step without this hop's receipt
   * (undefined) is refused downstream with a clear reason, which is better than a node that
   * dies on a bookkeeping error.
   */
  sign(o: FinishedStep): SignedReceipt | undefined {
    try {
      return this.signInner(o);
    } catch {
      return undefined;
    }
  }

  private signInner(o: FinishedStep): SignedReceipt {
    const t0 = performance.now();
    const h = o.header;
    const sid = sessionIdOf(o.open.sessionId);
    const rid = requestIdOf(o.open.sessionId);
    const log = this.archive.log(o.open.sessionId);
    if (h.step === 0) this.signer.closeSession(rid, sid); // a (re)opened session starts a new chain
    const pending = log.pending.get(h.step);
    log.pending.delete(h.step);
    const inputHash = pending && pending.input === o.input ? pending.signed.record.inputHash : hashTensor(o.input);
    const committed = committedFields(o, inputHash);
    // cite the commitment only if the receipt repeats it exactly (it always does unless the slot changed)
    const digest = pending && sameCommitted(pending.signed.record, committed) ? this.commitmentDigest(pending) : undefined;
    const commitment = digest !== undefined ? pending : undefined;
    const commitmentHash = digest ?? ZERO_HASH;
    const fields = {
      ...committed,
      recvUs: us(o.timing.queueMs),
      computeUs: us(o.timing.computeMs),
      sendUs: us(o.timing.sendMs),
      upstreamReceiptHash: log.upstreamHash.get(h.step) ?? ZERO_HASH,
      commitmentHash,
      outputHash: this.outputHash(o.output),
    };
    log.upstreamHash.delete(h.step);
    // at most one receipt per slot, ever (within the challenge window): see slot-guard.ts
    const receipt = this.guard.signOnce(
      SlotGuard.key(rid, sid, h.step),
      inputHash,
      fields.outputHash,
      () => {
        try {
          return this.signer.receipt(fields);
        } catch (e) {
          if (!(e instanceof SignerError)) throw e;
          // the upstream re-sent an old step number (a restarted route): start this session's chain anew
          this.signer.closeSession(rid, sid);
          return this.signer.receipt(fields);
        }
      },
      o.open.reply.peerId,
    );
    if (!receipt) throw new Error(`step ${h.step} of this session is already signed for another output`);
    log.cited.set(h.step, { digest: commitmentHash, signed: commitment?.signed });
    this.stats.receiptsSigned++;
    this.stats.signMs += performance.now() - t0;
    return receipt;
  }

  /** Keeps a signed step for auditors: its input, the output `receipt` signs, and the commitment it cites. */
  retain(o: FinishedStep, receipt: SignedReceipt): void {
    const h = o.header;
    const log = this.archive.log(o.open.sessionId);
    const cited = log.cited.get(h.step);
    log.cited.delete(h.step);
    // a retransmitted step returns the receipt already signed: keep the commitment it cites
    const commitment = cited && receipt.record.commitmentHash === cited.digest ? cited.signed : log.steps.get(h.step)?.commitment;
    this.archive.keep(o.open.sessionId, o.open.reply.peerId, {
      step: h.step,
      pos: h.pos,
      nTokens: h.nTokens,
      dtype: h.dtype,
      input: o.input,
      output: o.output,
      receipt,
      commitment,
    });
  }

  /** Signs the receipt of an audit re-execution (a ReexecutionReceipt: it never joins a token-path chain). */
  signReexecution(fields: ReexecReceiptFields): SignedReceipt {
    return signReexecutionReceipt(this.host.identity, fields, this.domain);
  }
}
