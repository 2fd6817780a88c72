// What a node keeps of its signed steps for auditors, and the audit protocol that serves it.
// Per session: each step's input and output bytes, its receipt and the commitment the receipt
// cites, plus the stamper's bookkeeping of the session (the upstream signer's receipt chain,
// commitments waiting for their receipt). Sessions are kept for a bounded challenge window.
//
// AUDIT_PROTOCOL, one request and one reply per stream (protocol/audit-messages.ts):
//   request  { sessionId, fromStep, toStep }
//   reply    { ok: false, reason } or { ok: true, steps: [{ step, pos, nTokens, dtype, bytes }],
//              output: { dtype, bytes }, receipt, commitment? } + the inputs of steps
//              [fromStep, toStep] held here, in order, then the output of toStep

import type { Stream } from '@libp2p/interface';
import type { OdsiHost } from '../../p2p/host.js';
import type { Dtype } from '../../protocol/messages.js';
import type { Hex } from '../records/eip712.js';
import type { SignedCommitment, SignedReceipt } from '../records/receipts.js';
import type { ReceiptChain } from '../checks/custody.js';
import { AUDIT_PROTOCOL, readAuditMessage, sendAuditMessage } from '../../protocol/audit-messages.js';

/** How much a node keeps for auditors. */
export interface ArchiveLimits {
  /** how long a session's steps are kept after its last step */
  challengeWindowMs: number;
  maxSessions: number;
  maxStepsPerSession: number;
  /** commitments of steps that never got a receipt (failed after commit) are dropped beyond this */
  maxPendingCommitments: number;
}

export const DEFAULT_ARCHIVE_LIMITS: ArchiveLimits = {
  challengeWindowMs: 10 * 60_000,
  maxSessions: 256,
  maxStepsPerSession: 16_384,
  maxPendingCommitments: 64,
};

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
  signed: SignedCommitment;
  digest: Hex;
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
}

export class StepArchive {
  private readonly sessions = new Map<string, SessionLog>();
  private serving = false;
  auditsServed = 0;

  constructor(
    private readonly host: OdsiHost,
    readonly limits: ArchiveLimits,
  ) {}

  /** Registers AUDIT_PROTOCOL. */
  async start(): Promise<void> {
    if (this.serving) return;
    await this.host.libp2p.handle(AUDIT_PROTOCOL, (stream: Stream) => void this.serve(stream), {
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

  /** Keeps a step for auditors (a later archive of the same step replaces it). */
  keep(sessionId: string, step: ArchivedStep): void {
    const log = this.log(sessionId);
    if (log.steps.size >= this.limits.maxStepsPerSession) log.steps.delete(log.steps.keys().next().value as number);
    log.steps.set(step.step, step);
  }

  private evict(): void {
    const now = Date.now();
    for (const [k, s] of this.sessions) if (now - s.lastUsed > this.limits.challengeWindowMs) this.sessions.delete(k);
    while (this.sessions.size > this.limits.maxSessions) this.sessions.delete(this.sessions.keys().next().value as string);
  }

  /** One audit request: the committed inputs of steps [fromStep, toStep] and the output of toStep. */
  private async serve(stream: Stream): Promise<void> {
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
        const steps: ArchivedStep[] = [];
        for (let k = from; k <= to; k++) {
          const st = s.steps.get(k);
          if (st) steps.push(st);
        }
        const last = s.steps.get(to);
        if (!last) await fail(`step ${to} of session ${sid} is not held (never run here, or evicted)`);
        else {
          this.auditsServed++;
          const size = steps.reduce((a, st) => a + st.input.length, 0) + last.output.length;
          const payload = new Uint8Array(size);
          let o = 0;
          for (const st of steps) {
            payload.set(st.input, o);
            o += st.input.length;
          }
          payload.set(last.output, o);
          await sendAuditMessage(
            stream,
            {
              ok: true,
              steps: steps.map((st) => ({ step: st.step, pos: st.pos, nTokens: st.nTokens, dtype: st.dtype, bytes: st.input.length })),
              output: { dtype: last.dtype, bytes: last.output.length },
              receipt: last.receipt,
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
