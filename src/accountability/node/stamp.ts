// The node side of accountability on the token path.
//
// While the stage computes, on the crypto worker (crypto-pool.ts), two things run that must be
// settled before the output is released:
// - checkCustody: the upstream hop's receipt for this step must be well formed, validly signed
//   by the upstream hop's own key (its peer id), for this session/step/slot, the next link in
//   that signer's per-session chain (no replays), and must sign exactly the bytes that arrived
//   (chain of custody). A failure is answered with an ERROR naming the upstream peer (so the
//   gateway routes around it) and the output computed from that input is never sent.
// - commitStep: the node signs an ExecutionCommitment — what it is about to run (slot, layers,
//   model, profile), on which input bytes, within which budget. Its fields are fixed from the
//   input before compute starts, so it cannot be tailored to the result. It stays in the
//   session log; it does not travel with the activation.
//
// After compute (stampStep): the node signs an ExecutionReceipt (input hash as received,
// output hash as sent, upstream receipt hash, previous receipt hash in the session, digest of
// the step's commitment) and appends it to the chain that travels downstream with the
// activation. It keeps the step's input and output bytes and the commitment for a bounded
// challenge window, served to auditors over AUDIT_PROTOCOL.

import type { Stream } from '@libp2p/interface';
import type { OdsiHost } from '../../p2p/host.js';
import { encodeTensor, type Dtype, type OpenHeader, type StepHeader } from '../../protocol/messages.js';
import type { FaultInjector } from '../../testing/inject.js';
import { COMMITMENT_FIELDS, ZERO_HASH, toBytes32, type ExecutionCommitment, type Hex, type OdsiDomain } from '../records/eip712.js';
import { hashTensor, signReceipt, type SignedCommitment, type SignedReceipt } from '../records/receipts.js';
import { CustodyError, ReceiptChain } from '../checks/custody.js';
import { cryptoPool, warmCryptoPool } from '../records/crypto-pool.js';
import { ReceiptSigner, SignerError } from '../records/signer.js';
import { rememberStepInput, type DishonestBehaviour } from '../../testing/dishonest.js';
import { accountabilityEnabled, addressOfPeer, deploymentDomain, requestIdOf, sessionIdOf } from '../records/wire.js';
import { AUDIT_PROTOCOL, readAuditMessage, sendAuditMessage } from '../../protocol/audit-messages.js';

/** how long a node keeps a session's inputs/outputs for auditors after its last step */
export const CHALLENGE_WINDOW_MS = 10 * 60_000;
const MAX_SESSIONS = 256;
const MAX_STEPS_PER_SESSION = 16_384;
/** commitments of steps that never got a receipt (failed after commit) are dropped beyond this */
const MAX_PENDING_COMMITMENTS = 64;

interface StoredStep {
  step: number;
  pos: number;
  nTokens: number;
  dtype: Dtype;
  input: Uint8Array;
  output: Uint8Array;
  receipt: SignedReceipt;
  /** the commitment signed before compute, when the receipt cites one */
  commitment?: SignedCommitment;
  /** equivocation: what this node shows auditors instead */
  alt?: { output: Uint8Array; receipt: SignedReceipt };
}

interface SessionLog {
  steps: Map<number, StoredStep>;
  lastUsed: number;
  /** the upstream signer's chain in this session (replay / fork detection) */
  upstream?: ReceiptChain;
  /** digest of the upstream receipt of the step being processed */
  upstreamHash: Map<number, Hex>;
  /** commitments signed for steps not yet stamped, by step */
  pending: Map<number, PendingCommitment>;
}

interface PendingCommitment {
  signed: SignedCommitment;
  digest: Hex;
  /** the input buffer committed to: stampStep reuses the hash when it gets the same buffer */
  input: Uint8Array;
}

export interface StampStats {
  commitmentsSigned: number;
  /** time spent signing commitments (on the token path, before compute), ms */
  commitMs: number;
  receiptsSigned: number;
  signMs: number;
  receiptsChecked: number;
  checkMs: number;
  custodyRejected: number;
  auditsServed: number;
}

class NodeAccountant {
  readonly signer: ReceiptSigner;
  readonly sessions = new Map<string, SessionLog>();
  readonly stats: StampStats = {
    commitmentsSigned: 0,
    commitMs: 0,
    receiptsSigned: 0,
    signMs: 0,
    receiptsChecked: 0,
    checkMs: 0,
    custodyRejected: 0,
    auditsServed: 0,
  };
  private handling?: Promise<void>;

  constructor(
    readonly host: OdsiHost,
    readonly domain: OdsiDomain,
  ) {
    this.signer = new ReceiptSigner(host.identity, domain, MAX_SESSIONS * 4);
  }

  log(sessionId: string): SessionLog {
    let s = this.sessions.get(sessionId);
    if (!s) {
      s = { steps: new Map(), lastUsed: Date.now(), upstreamHash: new Map(), pending: new Map() };
      this.sessions.set(sessionId, s);
      this.evict();
    }
    s.lastUsed = Date.now();
    return s;
  }

  private evict(): void {
    const now = Date.now();
    for (const [k, s] of this.sessions) if (now - s.lastUsed > CHALLENGE_WINDOW_MS) this.sessions.delete(k);
    while (this.sessions.size > MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value as string);
  }

  ensureAuditHandler(): void {
    this.handling ??= this.host.libp2p
      .handle(AUDIT_PROTOCOL, (stream: Stream) => void this.serveAudit(stream), { maxInboundStreams: 64, maxOutboundStreams: 64 })
      .catch(() => undefined);
  }

  /** One audit request: the committed inputs of steps [fromStep, toStep] and the output of toStep. */
  private async serveAudit(stream: Stream): Promise<void> {
    try {
      const { header } = await readAuditMessage(stream, 10_000);
      const sid = String(header.sessionId ?? '');
      const from = Number(header.fromStep);
      const to = Number(header.toStep);
      const s = this.sessions.get(sid);
      const fail = (reason: string) => sendAuditMessage(stream, { ok: false, reason });
      if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to < from)
        await fail('fromStep/toStep must be integers with 0 ≤ fromStep ≤ toStep');
      else if (!s) await fail(`no committed data for session ${sid} (unknown, or older than the challenge window)`);
      else {
        const steps: StoredStep[] = [];
        for (let k = from; k <= to; k++) {
          const st = s.steps.get(k);
          if (st) steps.push(st);
        }
        const last = s.steps.get(to);
        if (!last) await fail(`step ${to} of session ${sid} is not held (never run here, or evicted)`);
        else {
          this.stats.auditsServed++;
          const shown = last.alt ?? { output: last.output, receipt: last.receipt };
          const size = steps.reduce((a, st) => a + st.input.length, 0) + shown.output.length;
          const payload = new Uint8Array(size);
          let o = 0;
          for (const st of steps) {
            payload.set(st.input, o);
            o += st.input.length;
          }
          payload.set(shown.output, o);
          await sendAuditMessage(
            stream,
            {
              ok: true,
              steps: steps.map((st) => ({ step: st.step, pos: st.pos, nTokens: st.nTokens, dtype: st.dtype, bytes: st.input.length })),
              output: { dtype: last.dtype, bytes: shown.output.length },
              receipt: shown.receipt,
              // the equivocating alt receipt cites the same commitment, so it is shown with either
              ...(last.commitment ? { commitment: last.commitment } : {}),
            },
            payload,
          );
        }
      }
      await stream.close({ signal: AbortSignal.timeout(2000) }).catch(() => undefined);
    } catch (e) {
      try {
        stream.abort(e as Error);
      } catch {
        /* gone */
      }
    }
  }
}

const accountants = new WeakMap<OdsiHost, NodeAccountant>();

function accountant(host: OdsiHost): NodeAccountant | undefined {
  if (!accountabilityEnabled()) return undefined;
  let a = accountants.get(host);
  if (!a) {
    a = new NodeAccountant(host, deploymentDomain());
    accountants.set(host, a);
    a.ensureAuditHandler();
  }
  return a;
}

/** Get a node's accountability ready before its first step (crypto worker, WASM); no-op when off. */
export async function prepareAccountability(host: OdsiHost): Promise<void> {
  const a = accountant(host);
  if (a) await warmCryptoPool(host.identity, a.domain);
}

/** Counters of this node's accountability work (signing cost etc.). */
export function stampStats(host: OdsiHost): StampStats | undefined {
  return accountants.get(host)?.stats;
}

export interface CustodyFailure {
  code: 'custody';
  reason: string;
  /** the peer the failure is attributed to (the upstream hop) */
  peerId: string;
}

/**
 * Chain-of-custody check of an arriving STEP (start it after decoding). Resolves to a failure
 * to answer with, or undefined when the step's output may be released. The signature check
 * runs on the crypto worker, so the node can compute meanwhile; nothing computed from an
 * input that fails is ever released.
 */
export async function checkCustody(
  host: OdsiHost,
  open: OpenHeader,
  h: StepHeader,
  payload: Uint8Array,
  hidden?: Float32Array,
): Promise<CustodyFailure | undefined> {
  const a = accountant(host);
  if (!a) return undefined;
  if (hidden) rememberStepInput(open.sessionId, h.step, hidden);
  const t0 = performance.now();
  const log = a.log(open.sessionId);
  const receipts = (h as { receipts?: unknown }).receipts;
  const hop = open.hop;
  if (hop === 0) {
    // the gateway does not sign activations it sends; nothing upstream to check
    if (receipts !== undefined && (!Array.isArray(receipts) || receipts.length !== 0))
      return reject(a, 'the first hop expects no receipts from the gateway', open.reply.peerId);
    return undefined;
  }
  const upPeer = open.route[hop - 1]!.peerId;
  try {
    if (!Array.isArray(receipts))
      throw new CustodyError('malformed', `STEP carries no receipt chain (expected ${hop} receipt(s) from upstream)`);
    if (receipts.length !== hop)
      throw new CustodyError('malformed', `STEP carries ${receipts.length} receipt(s), expected ${hop} (one per upstream hop)`);
    const signed = receipts[hop - 1] as SignedReceipt;
    const t1 = performance.now();
    const v = await cryptoPool.verify('ExecutionReceipt', signed, a.domain);
    const waited = performance.now() - t1;
    if (!v.ok) throw new CustodyError(v.malformed ? 'malformed' : 'bad_signature', v.reason);
    const r = signed.record;
    const want = addressOfPeer(upPeer);
    if (r.signer.toLowerCase() !== want.toLowerCase())
      throw new CustodyError('bad_signature', `upstream receipt is signed by ${r.signer}, but the upstream hop ${upPeer} is ${want}`);
    const sid = sessionIdOf(open.sessionId);
    const rid = requestIdOf(open.sessionId);
    if (r.sessionId.toLowerCase() !== sid || r.requestId.toLowerCase() !== rid)
      throw new CustodyError(
        'cross_session',
        `upstream receipt belongs to session ${r.sessionId.slice(0, 10)}…, this is ${sid.slice(0, 10)}…`,
      );
    if (r.step !== h.step || r.pos !== h.pos || r.nTokens !== h.nTokens)
      throw new CustodyError(
        'slot_mismatch',
        `upstream receipt is for (step ${r.step}, pos ${r.pos}, ${r.nTokens} tokens), this STEP is (${h.step}, ${h.pos}, ${h.nTokens})`,
      );
    const me = open.route[hop]!;
    if (r.layerEnd !== me.start)
      throw new CustodyError('layer_gap', `upstream receipt ends at layer ${r.layerEnd}, this hop starts at ${me.start}`);
    const got = hashTensor(payload);
    if (got.toLowerCase() !== r.outputHash.toLowerCase())
      throw new CustodyError(
        'input_mismatch',
        `received activation hashes to ${got.slice(0, 10)}…, upstream signed output ${r.outputHash.slice(0, 10)}…`,
      );
    if (h.step === 0 || !log.upstream) log.upstream = new ReceiptChain(r.signer, rid, sid, a.domain);
    const digest = log.upstream.appendVerified(signed, v.digest); // replay / fork / step order
    log.upstreamHash.set(h.step, digest);
    a.stats.receiptsChecked++;
    a.stats.checkMs += performance.now() - t0 - waited; // main-thread time only
    return undefined;
  } catch (e) {
    if (e instanceof CustodyError) return reject(a, `${e.code}: ${e.message}`, upPeer);
    return reject(a, `could not check the upstream receipt: ${(e as Error).message}`, upPeer);
  }
}

function reject(a: NodeAccountant, reason: string, peerId: string): CustodyFailure {
  a.stats.custodyRejected++;
  return { code: 'custody', reason: `chain of custody: ${reason}`, peerId };
}

export interface CommitInput {
  open: OpenHeader;
  /** the incoming STEP header (budgetMs as granted to this hop) */
  header: StepHeader;
  /** activation bytes as received */
  input: Uint8Array;
  range: { start: number; end: number };
  /** stage.profile of the engine (the same value later given to stampStep) */
  profile: string;
  modelId: string;
}

export interface StampInput {
  open: OpenHeader;
  /** the outgoing header (header.receipts gets this hop's receipt appended) */
  header: StepHeader;
  /** activation bytes as received and as sent */
  input: Uint8Array;
  output: Uint8Array;
  range: { start: number; end: number };
  /** stage.profile of the engine */
  profile: string;
  modelId: string;
  timing: { queueMs: number; computeMs: number; sendMs: number };
  faults?: FaultInjector;
}

const us = (ms: number) => Math.max(0, Math.round(ms * 1000));

/** The profile a node signs: the engine's, plus the activation transport when it is not f32. */
export function signedProfile(stageProfile: string, dtype: Dtype): string {
  return dtype === 'f32' ? stageProfile : `${stageProfile}+act-${dtype}`;
}

type Committed = Omit<ExecutionCommitment, 'signer'>;

/** The committed fields of a step; the receipt repeats them, so both are built here. */
function committedFields(
  o: { open: OpenHeader; header: StepHeader; range: { start: number; end: number }; profile: string; modelId: string },
  inputHash: Hex,
): Committed {
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
    profile: signedProfile(o.profile, h.dtype),
    inputHash,
    budgetUs: h.budgetMs !== undefined ? us(Math.max(0, h.budgetMs)) : 0,
  };
}

const COMMITTED_KEYS = COMMITMENT_FIELDS.map((f) => f.name).filter((k) => k !== 'signer') as (keyof Committed)[];
const sameCommitted = (c: ExecutionCommitment, f: Committed): boolean =>
  COMMITTED_KEYS.every((k) =>
    typeof c[k] === 'string' ? (c[k] as string).toLowerCase() === (f[k] as string).toLowerCase() : c[k] === f[k],
  );

/**
 * Signs this hop's ExecutionCommitment for the step (call before compute: the record is fixed
 * from the input synchronously, the signature is made on the crypto worker) and keeps it in the
 * session log until stampStep cites it; await it before stampStep. Never rejects: a step
 * without a commitment gets a receipt with commitmentHash = 0.
 */
export async function commitStep(host: OdsiHost, c: CommitInput): Promise<void> {
  const a = accountant(host);
  if (!a) return;
  try {
    const t0 = performance.now();
    const record: ExecutionCommitment = { ...committedFields(c, hashTensor(c.input)), signer: host.identity.address };
    // one digest: what gets signed, and the receipt's commitmentHash (signed on the crypto worker)
    const { digest, signature } = await cryptoPool.sign('ExecutionCommitment', record, host.identity.secret, a.domain);
    const signed: SignedCommitment = { record, signature };
    const pending = a.log(c.open.sessionId).pending;
    pending.delete(c.header.step);
    pending.set(c.header.step, { signed, digest, input: c.input });
    while (pending.size > MAX_PENDING_COMMITMENTS) pending.delete(pending.keys().next().value as number);
    a.stats.commitmentsSigned++;
    a.stats.commitMs += performance.now() - t0;
  } catch {
    /* see above */
  }
}

/**
 * Signs this hop's receipt for the step, appends it to header.receipts and keeps the step for
 * auditors. Never throws: a step without this hop's receipt is refused downstream with a
 * clear reason, which is better than a node that dies on a bookkeeping error.
 */
export function stampStep(host: OdsiHost, o: StampInput): void {
  const a = accountant(host);
  if (!a) return;
  try {
    stampInner(a, host, o);
  } catch {
    /* see above: the receipt is missing and the next hop says so */
  }
}

function stampInner(a: NodeAccountant, host: OdsiHost, o: StampInput): void {
  const t0 = performance.now();
  const h = o.header;
  const sid = sessionIdOf(o.open.sessionId);
  const rid = requestIdOf(o.open.sessionId);
  const log = a.log(o.open.sessionId);
  if (h.step === 0) a.signer.closeSession(rid, sid); // a (re)opened session starts a new chain
  const pending = log.pending.get(h.step);
  log.pending.delete(h.step);
  const inputHash = pending && pending.input === o.input ? pending.signed.record.inputHash : hashTensor(o.input);
  const committed = committedFields(o, inputHash);
  // cite the commitment only if the receipt repeats it exactly (it always does unless the slot changed)
  const commitment = pending && sameCommitted(pending.signed.record, committed) ? pending : undefined;
  const commitmentHash = commitment?.digest ?? ZERO_HASH;
  const fields = {
    ...committed,
    recvUs: us(o.timing.queueMs),
    computeUs: us(o.timing.computeMs),
    sendUs: us(o.timing.sendMs),
    upstreamReceiptHash: log.upstreamHash.get(h.step) ?? ZERO_HASH,
    commitmentHash,
  };
  log.upstreamHash.delete(h.step);
  let receipt: SignedReceipt;
  try {
    receipt = a.signer.receipt({ ...fields, outputHash: hashTensor(o.output) });
  } catch (e) {
    if (!(e instanceof SignerError)) throw e;
    // the upstream re-sent an old step number (a restarted route): start this session's chain anew
    a.signer.closeSession(rid, sid);
    receipt = a.signer.receipt({ ...fields, outputHash: hashTensor(o.output) });
  }
  const dishonest = (o.faults?.behaviours ?? []) as DishonestBehaviour[];
  let alt: StoredStep['alt'];
  for (const b of dishonest) {
    const honest = b.accountability?.equivocated?.(o.open.sessionId, h.step);
    if (honest) {
      // a second receipt for the same slot, linked like the first (and citing the same commitment): what auditors are shown
      const out = encodeLike(honest, h.dtype);
      const rec = signReceipt(
        host.identity,
        { ...fields, outputHash: hashTensor(out), prevReceiptHash: receipt.record.prevReceiptHash },
        a.domain,
      );
      alt = { output: out, receipt: rec };
    }
    if (b.accountability?.forge?.(o.open.sessionId, h.step)) receipt = { record: receipt.record, signature: corrupt(receipt.signature) };
  }
  const prev = Array.isArray((h as { receipts?: unknown }).receipts) ? ((h as { receipts?: unknown[] }).receipts as unknown[]) : [];
  (h as { receipts?: unknown[] }).receipts = [...prev, receipt];
  if (log.steps.size >= MAX_STEPS_PER_SESSION) log.steps.delete(log.steps.keys().next().value as number);
  // a retransmitted step returns the receipt already signed: keep the commitment it cites
  const shownCommitment = receipt.record.commitmentHash === commitmentHash ? commitment?.signed : log.steps.get(h.step)?.commitment;
  log.steps.set(h.step, {
    step: h.step,
    pos: h.pos,
    nTokens: h.nTokens,
    dtype: h.dtype,
    input: o.input,
    output: o.output,
    receipt,
    commitment: shownCommitment,
    alt,
  });
  a.stats.receiptsSigned++;
  a.stats.signMs += performance.now() - t0;
}

/** model ids are hex digests; anything else is hashed into bytes32 */
export function toModelId(modelId: string): Hex {
  const m = modelId.replace(/^0x/, '');
  if (/^[0-9a-fA-F]{64}$/.test(m)) return `0x${m.toLowerCase()}`;
  return toBytes32(modelId);
}

const encodeLike = (x: Float32Array, dtype: Dtype): Uint8Array => encodeTensor(x, dtype);

function corrupt(sig: Hex): Hex {
  // flip bits in r: still well formed, no longer recovers to the signer
  const b = sig.slice(2).split('');
  b[10] = b[10] === 'a' ? 'b' : 'a';
  b[11] = b[11] === 'c' ? 'd' : 'c';
  return `0x${b.join('')}`;
}
