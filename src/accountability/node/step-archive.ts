// What a node keeps of its signed steps for auditors, and the audit protocol that serves it.
// Per session: each step's input and output bytes, its receipt and the commitment the receipt
// cites, plus the stamper's bookkeeping of the session (the upstream signer's receipt chain,
// commitments waiting for their receipt). Sessions are kept for a bounded challenge window.
//
// AUDIT_PROTOCOL, one request and one reply per stream (protocol/audit-messages.ts):
//   request  { sessionId, fromStep, toStep, request: signed AuditRequest }
//   reply    { ok: false, reason } or { ok: true, steps: [{ step, pos, nTokens, dtype, bytes }],
//              output: { dtype, bytes }, receipt, commitment? } + the inputs of steps
//              [fromStep, toStep] held here, in order, then the output of toStep
//
// Who may ask: committed inputs are the session's activations (at hop 0, the prompt's
// embeddings), so they go only to the auditor named by an AuditRequest that the session's owner
// signed (the gateway the session's OPEN sends results to, recorded with its first kept step),
// for that session and those steps, not expired. A requester who is not entitled gets the same
// answer whether the session exists or not. Per remote peer: a bounded number of fetches per
// minute and in flight (ArchiveLimits.auditFetch); the node reads one request per stream.

import type { Connection, Stream } from '@libp2p/interface';
import type { OdsiHost } from '../../p2p/host.js';
import type { Dtype } from '../../protocol/messages.js';
import type { AuditRequest, Hex, OdsiDomain } from '../records/eip712.js';
import type { SignedCommitment, SignedReceipt } from '../records/receipts.js';
import type { ReceiptChain } from '../checks/custody.js';
import { AUDIT_PROTOCOL, AUDIT_REQUEST_LIMITS } from '../../protocol/audit-messages.js';
import { checkRequest, sameHex } from '../records/audit-requests.js';
import { addressOfPeer, requestIdOf, sessionIdOf } from '../records/wire.js';
import { PeerLimiter, type PeerLimits } from './request-limiter.js';
import { serveOneRequest } from './one-request.js';

/** How much a node keeps for auditors. */
export interface ArchiveLimits {
  /** how long a session's steps are kept after its last step */
  challengeWindowMs: number;
  maxSessions: number;
  maxStepsPerSession: number;
  /** commitments of steps that never got a receipt (failed after commit) are dropped beyond this */
  maxPendingCommitments: number;
  /** audit fetches per remote peer */
  auditFetch: PeerLimits;
}

export const DEFAULT_ARCHIVE_LIMITS: ArchiveLimits = {
  challengeWindowMs: 10 * 60_000,
  maxSessions: 256,
  maxStepsPerSession: 16_384,
  maxPendingCommitments: 64,
  auditFetch: { perMinute: 600, inFlight: 8 },
};

/** The refusal for every requester not entitled to a session: it does not say whether the session exists. */
export const NOT_ENTITLED =
  'not authorised: this node holds no committed data of that session for the signer of the request (unknown session, another owner, or older than the challenge window)';

/** One step as shown to auditors: the output and the receipt that signs it. */
export interface ArchivedStep {
  step: number;
  pos: number;
  nTokens: number;
  dtype: Dtype;
  input: Uint8Array;
  output: Uint8Array;
  receipt: SignedReceipt;
  /** the commitment signed before compute, when the receipt cites one */
  commitment?: SignedCommitment;
}

export interface PendingCommitment {
  /** its signature is filled in by the crypto worker, off the token path (see StepArchive.track) */
  signed: SignedCommitment;
  /** its EIP-712 digest, taken when the receipt that cites it is signed (after the output went on) */
  digest?: Hex;
  /** the input buffer committed to: signing the receipt reuses the hash when it gets the same buffer */
  input: Uint8Array;
}

export interface SessionLog {
  steps: Map<number, ArchivedStep>;
  lastUsed: number;
  /** the upstream signer's chain in this session (replay / fork detection) */
  upstream?: ReceiptChain;
  /** digest of the upstream receipt of the step being processed, by step */
  upstreamHash: Map<number, Hex>;
  /** commitments signed for steps not yet signed for, by step */
  pending: Map<number, PendingCommitment>;
  /** what the last receipt signed for a step cites (digest, and the commitment unless zero), until it is archived */
  cited: Map<number, { digest: Hex; signed?: SignedCommitment }>;
  /** the session's owner (the peer its OPEN sends results to), as of its first kept step */
  owner?: string;
}

export class StepArchive {
  private readonly sessions = new Map<string, SessionLog>();
  private serving = false;
  private readonly limiter: PeerLimiter;
  /**
   * Commitments whose signature is made when an auditor is first shown one: the receipt that
   * cites a commitment already binds its digest (fixed from the input before compute), so
   * signing it later attests exactly the same record, and the token path signs nothing for it.
   */
  private readonly unsigned = new WeakMap<SignedCommitment, { sign: () => Promise<void>; done?: Promise<void> }>();
  auditsServed = 0;
  auditsRefused = 0;

  constructor(
    private readonly host: OdsiHost,
    readonly limits: ArchiveLimits,
    /** the deployment's domain: audit requests are checked under it */
    private readonly domain: OdsiDomain,
  ) {
    this.limiter = new PeerLimiter(limits.auditFetch, 'audit fetches');
  }

  /** Registers AUDIT_PROTOCOL. */
  async start(): Promise<void> {
    if (this.serving) return;
    await this.host.libp2p.handle(AUDIT_PROTOCOL, (stream: Stream, conn: Connection) => void this.serve(stream, conn), {
      maxInboundStreams: 64,
      maxOutboundStreams: 64,
    });
    this.serving = true;
  }

  async stop(): Promise<void> {
    if (!this.serving) return;
    this.serving = false;
    await this.host.libp2p.unhandle(AUDIT_PROTOCOL).catch(() => undefined);
  }

  /** `c` is signed by `sign` (which fills in its signature) before any audit reply shows it. */
  signWhenShown(c: SignedCommitment, sign: () => Promise<void>): void {
    this.unsigned.set(c, { sign });
  }

  /** The log of a session (created on first use; old sessions are evicted). */
  log(sessionId: string): SessionLog {
    let s = this.sessions.get(sessionId);
    if (!s) {
      s = { steps: new Map(), lastUsed: Date.now(), upstreamHash: new Map(), pending: new Map(), cited: new Map() };
      this.sessions.set(sessionId, s);
      this.evict();
    }
    s.lastUsed = Date.now();
    return s;
  }

  /** Keeps a step for auditors (a later archive of the same step replaces it); `owner` is the session's gateway. */
  keep(sessionId: string, owner: string, step: ArchivedStep): void {
    const log = this.log(sessionId);
    log.owner ??= owner;
    if (log.steps.size >= this.limits.maxStepsPerSession) log.steps.delete(log.steps.keys().next().value as number);
    log.steps.set(step.step, step);
  }

  private evict(): void {
    const now = Date.now();
    for (const [k, s] of this.sessions) if (now - s.lastUsed > this.limits.challengeWindowMs) this.sessions.delete(k);
    while (this.sessions.size > this.limits.maxSessions) this.sessions.delete(this.sessions.keys().next().value as string);
  }

  /** One audit request: the committed inputs of steps [fromStep, toStep] and the output of toStep. */
  private serve(stream: Stream, conn: Connection): Promise<void> {
    const peer = conn.remotePeer.toString();
    return serveOneRequest(stream, peer, {
      limiter: this.limiter,
      timeoutMs: 10_000,
      limits: AUDIT_REQUEST_LIMITS, // a request has no payload
      refused: () => this.auditsRefused++,
      answer: async (msg) => {
        const answer = this.answer(msg.header, peer);
        if ('reason' in answer) return answer;
        this.auditsServed++;
        const c = answer.header.commitment as SignedCommitment | undefined;
        const u = c && this.unsigned.get(c);
        // once per commitment, however many replies show it at once; a failed signature is tried again next time
        if (u) await (u.done ??= u.sign().catch(() => (u.done = undefined)));
        return answer;
      },
    });
  }

  /** The reply to one request of `peer`, or why it is refused. */
  private answer(
    header: Record<string, unknown>,
    peer: string,
  ): { header: Record<string, unknown>; payload: Uint8Array } | { reason: string } {
    const sid = header.sessionId;
    const from = header.fromStep;
    const to = header.toStep;
    if (typeof sid !== 'string' || sid.length === 0 || sid.length > 256)
      return { reason: 'sessionId must be a non-empty string of ≤ 256 characters' };
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || (from as number) < 0 || (to as number) < (from as number))
      return { reason: 'fromStep/toStep must be integers with 0 ≤ fromStep ≤ toStep' };
    const auth = this.authorise(header.request, peer, sid, from as number, to as number);
    if (typeof auth === 'string') return { reason: auth };
    const s = this.sessions.get(sid);
    // unknown and not-yours read the same: the requester learns nothing about other sessions
    if (!s || s.owner === undefined || !sameHex(ownerAddress(s.owner), auth.gateway)) return { reason: NOT_ENTITLED };
    const steps: ArchivedStep[] = [];
    for (let k = from as number; k <= (to as number); k++) {
      const st = s.steps.get(k);
      if (st) steps.push(st);
    }
    const last = s.steps.get(to as number);
    if (!last) return { reason: `step ${String(to)} of session ${sid} is not held (never run here, or evicted)` };
    const size = steps.reduce((a, st) => a + st.input.length, 0) + last.output.length;
    const payload = new Uint8Array(size);
    let o = 0;
    for (const st of steps) {
      payload.set(st.input, o);
      o += st.input.length;
    }
    payload.set(last.output, o);
    return {
      header: {
        ok: true,
        steps: steps.map((st) => ({ step: st.step, pos: st.pos, nTokens: st.nTokens, dtype: st.dtype, bytes: st.input.length })),
        output: { dtype: last.dtype, bytes: last.output.length },
        receipt: last.receipt,
        ...(last.commitment ? { commitment: last.commitment } : {}),
      },
      payload,
    };
  }

  /** The AuditRequest if it entitles `peer` to steps [from, to] of `sid` (ownership is checked by the caller), else why not. */
  private authorise(signed: unknown, peer: string, sid: string, from: number, to: number): AuditRequest | string {
    const v = checkRequest('AuditRequest', signed, this.domain);
    if (!v.ok) return `not authorised: ${v.reason}`;
    const r = v.record;
    let me: Hex;
    try {
      me = addressOfPeer(peer);
    } catch {
      return 'not authorised: the requesting peer has no secp256k1 key';
    }
    if (!sameHex(r.auditor, me)) return 'not authorised: the AuditRequest names another auditor than the requesting peer';
    if (!sameHex(r.sessionId, sessionIdOf(sid)) || !sameHex(r.requestId, requestIdOf(sid)) || r.fromStep !== from || r.toStep !== to)
      return 'not authorised: the AuditRequest is for another session or other steps';
    return r;
  }
}

/** the address of a session owner's peer id ('' when it has none: it then owns nothing auditable) */
function ownerAddress(owner: string): string {
  try {
    return addressOfPeer(owner);
  } catch {
    return '';
  }
}
