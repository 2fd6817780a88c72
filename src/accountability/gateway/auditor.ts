// The auditing side of selective redundancy: fetch a node's committed inputs and output for a
// step over AUDIT_PROTOCOL, and re-execute them on a referee stage (the deterministic
// reference engine at the gateway, which holds the model file and can load any layer range).
// A fetch carries an AuditRequest signed with the host's identity, naming the host as auditor:
// a node serves a session's committed data only to an auditor its owner (gateway) signed for.

import { parsePeerId } from '../../identity/peer-id.js';
import { createStage } from '../../engine/create.js';
import type { Stage } from '../../engine/types.js';
import type { WeightSource } from '../../model/types.js';
import type { OdsiHost } from '../../p2p/host.js';
import type { Dtype } from '../../protocol/messages.js';
import { AUDIT_PROTOCOL, readAuditMessage, sendAuditMessage } from '../../protocol/audit-messages.js';
import type { OdsiDomain } from '../records/eip712.js';
import { nowSeconds, signAuditRequest } from '../records/audit-requests.js';
import { requestIdOf, sessionIdOf } from '../records/wire.js';

export interface CommittedStep {
  step: number;
  pos: number;
  nTokens: number;
  dtype: Dtype;
  /** activation bytes the node says it received */
  input: Uint8Array;
}

export interface CommittedData {
  steps: CommittedStep[];
  /** output bytes the node shows for the last step, and the receipt it signs them with */
  output: { dtype: Dtype; bytes: Uint8Array };
  receipt: unknown;
  /** the ExecutionCommitment the receipt cites (signed before compute); absent if the node kept none. Check with custody.checkCommitment. */
  commitment?: unknown;
}

export class AuditFetchError extends Error {
  constructor(
    message: string,
    /** the node answered, but refused or sent garbage (vs. could not be reached) */
    readonly answered: boolean,
  ) {
    super(message);
    this.name = 'AuditFetchError';
  }
}

const DTYPES = new Set(['f32', 'f16', 'bf16']);

/** how long an AuditRequest the gateway signs stays valid */
const AUDIT_REQUEST_TTL_S = 60;

/**
 * Ask `peer` for its committed data of steps [fromStep, toStep] of route session `sessionId`,
 * with an AuditRequest signed by the host's identity (the session's gateway) naming itself as auditor.
 */
export async function fetchCommitted(
  host: OdsiHost,
  domain: OdsiDomain,
  peer: { peerId: string; addrs: string[] },
  q: { sessionId: string; fromStep: number; toStep: number },
  timeoutMs = 10_000,
): Promise<CommittedData> {
  const request = signAuditRequest(
    host.identity,
    {
      auditor: host.identity.address,
      requestId: requestIdOf(q.sessionId),
      sessionId: sessionIdOf(q.sessionId),
      fromStep: q.fromStep,
      toStep: q.toStep,
      expiresAt: nowSeconds() + AUDIT_REQUEST_TTL_S,
    },
    domain,
  );
  const signal = AbortSignal.timeout(timeoutMs);
  let stream;
  try {
    await host.dial(peer.peerId, peer.addrs, signal);
    stream = await host.libp2p.dialProtocol(parsePeerId(peer.peerId), AUDIT_PROTOCOL, { signal });
  } catch (e) {
    throw new AuditFetchError(`cannot reach ${peer.peerId} for an audit: ${(e as Error).message}`, false);
  }
  try {
    const reply = readAuditMessage(stream, timeoutMs);
    await sendAuditMessage(stream, { ...q, request });
    let msg;
    try {
      msg = await reply;
    } catch (e) {
      throw new AuditFetchError(`audit of ${peer.peerId}: ${(e as Error).message}`, false);
    }
    const h = msg.header as {
      ok?: boolean;
      reason?: string;
      steps?: unknown;
      output?: { dtype?: string; bytes?: number };
      receipt?: unknown;
      commitment?: unknown;
    };
    if (h.ok !== true) throw new AuditFetchError(`${peer.peerId} refused the audit: ${String(h.reason ?? 'no reason')}`, true);
    if (!Array.isArray(h.steps) || !h.output || !DTYPES.has(String(h.output.dtype)) || !Number.isSafeInteger(h.output.bytes))
      throw new AuditFetchError(`${peer.peerId} sent a malformed audit reply`, true);
    const steps: CommittedStep[] = [];
    let off = 0;
    for (const s of h.steps as Record<string, unknown>[]) {
      const n = Number(s.bytes);
      if (!Number.isSafeInteger(n) || n < 0 || off + n > msg.payload.length || !DTYPES.has(String(s.dtype)))
        throw new AuditFetchError(`${peer.peerId} sent a malformed audit reply (step entry)`, true);
      steps.push({
        step: Number(s.step),
        pos: Number(s.pos),
        nTokens: Number(s.nTokens),
        dtype: s.dtype as Dtype,
        input: msg.payload.subarray(off, off + n),
      });
      off += n;
    }
    const ob = h.output.bytes!;
    if (off + ob !== msg.payload.length)
      throw new AuditFetchError(`${peer.peerId} sent ${msg.payload.length} payload bytes, header says ${off + ob}`, true);
    return {
      steps,
      output: { dtype: h.output.dtype as Dtype, bytes: msg.payload.subarray(off, off + ob) },
      receipt: h.receipt,
      ...(h.commitment !== undefined ? { commitment: h.commitment } : {}),
    };
  } finally {
    void stream.close({ signal: AbortSignal.timeout(2000) }).catch(() => undefined);
  }
}

/**
 * Reference stages per layer range, loaded on first use, kept for the referee's lifetime,
 * and how far its incremental replays of each route session's hops have got.
 */
export class Referee {
  private readonly stages = new Map<string, Promise<Stage>>();
  readonly profile = 'reference';
  /** incremental replays per `<route session>#<hop index>`: the last step replayed */
  readonly progress = new Map<string, number>();
  /** one replay at a time: the stages share scratch buffers across sessions */
  private lock: Promise<void> = Promise.resolve();

  constructor(private readonly src: WeightSource) {}

  stage(start: number, end: number): Promise<Stage> {
    const key = `${start}:${end}`;
    let s = this.stages.get(key);
    if (!s) {
      s = createStage('reference', this.src, { start, end, embed: false, head: false });
      s.catch(() => this.stages.delete(key));
      this.stages.set(key, s);
    }
    return s;
  }

  /** Runs `fn` when no other replay is running on this referee. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const prev = this.lock;
    this.lock = prev.then(() => mine);
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Forgets a route session's replays (every hop's; routes have at most 256 hops). */
  forgetRoute(routeSessionId: string): void {
    for (let i = 0; i < 256; i++) {
      this.closeSession(`${routeSessionId}#${i}`);
      this.progress.delete(`${routeSessionId}#${i}`);
    }
  }

  closeSession(sessionId: string): void {
    for (const p of this.stages.values()) void p.then((s) => s.closeSession(sessionId)).catch(() => undefined);
  }

  async dispose(): Promise<void> {
    for (const p of this.stages.values()) await p.then((s) => s.dispose()).catch(() => undefined);
    this.stages.clear();
  }
}
