// Runs one STEP of a session through the node's stage: validate and decode the activation,
// start the custody check and the commitment (they run while the stage computes), take the
// compute lock, check the deadline, forward, then — once custody has settled — sign the
// receipt and send the output on with this hop's timing appended. Audit re-executions take
// the same lock (`lock`), so they never run beside a token-path step.

import { EngineError, type Stage, type StageOutput } from '../engine/types.js';
import { MsgType, decodeTensor, encodeTensor, type ErrorCode, type Message, type StepHeader } from '../protocol/messages.js';
import type { HopTiming } from '../route/route-stage.js';
import type { ComputeLock } from './compute-lock.js';
import type { PerfMeter } from './perf.js';
import type { Session } from './sessions.js';
import type { NodeMetrics } from './metrics.js';
import { stampStep, type StepStamper } from './stamper.js';

export interface StepExecutorOptions {
  /** this node's peer id (named in errors and timings) */
  self: string;
  stage: Stage;
  modelId: string;
  perf: PerfMeter;
  stamper: StepStamper;
  lock: ComputeLock;
  /** Prometheus metrics (odsi node --metrics-port) */
  metrics?: Pick<NodeMetrics, 'step' | 'stepError'>;
}

/** counters for logs/metrics */
export interface NodeStats {
  opened: number;
  steps: number;
  errors: number;
  refused: number;
}

export class StepExecutor {
  constructor(
    private readonly o: StepExecutorOptions,
    private readonly stats: NodeStats,
  ) {}

  async run(s: Session, h: StepHeader, payload: Uint8Array, recvAt: number): Promise<void> {
    if (s.closed) return;
    if (s.draining) return this.refuseDraining(s, h);
    const { stage, self, stamper } = this.o;
    const dim = stage.config.dim;
    const fail = (code: ErrorCode, reason: string) => {
      this.stats.errors++;
      this.o.metrics?.stepError(code);
      void s.upstream.sendError(code, reason, { sessionId: s.id, requestId: h.requestId, hop: s.open.hop });
    };
    if (h.shape[0] !== h.nTokens || h.shape[1] !== dim) return fail('bad_message', `shape [${h.shape.join(',')}] ≠ [${h.nTokens},${dim}]`);
    if (h.pos + h.nTokens > s.reserved) return fail('busy', `session reserved ${s.reserved} KV tokens, step needs ${h.pos + h.nTokens}`);
    let hidden: Float32Array;
    try {
      hidden = decodeTensor(payload, h.dtype, h.nTokens * dim);
    } catch (e) {
      return fail('bad_message', (e as Error).message);
    }
    // the upstream hop's signed receipt must cover exactly these bytes, and this hop commits to
    // its input before the output exists; both run while the stage computes, and nothing is
    // released before they are settled
    const arriving = { open: s.open, header: h, input: payload, range: stage.range, profile: stage.profile, modelId: this.o.modelId };
    // never sign twice for one slot: a different input for a step already taken runs nothing
    const claimed = stamper.claim(arriving);
    if (!claimed.ok) return fail(claimed.code, claimed.reason);
    const custodyCheck = stamper.checkUpstream(arriving);
    const committed = stamper.commit(arriving);
    let queueMs = 0;
    const computed = await this.o.lock.run(async (): Promise<{ out: StageOutput } | { error: [ErrorCode, string] }> => {
      const startAt = performance.now();
      queueMs = startAt - recvAt;
      if (h.budgetMs !== undefined) {
        const expected = this.o.perf.expectedMs(h.nTokens);
        if (h.budgetMs - queueMs - s.linkMs < expected)
          return {
            error: ['deadline', `remaining budget ${(h.budgetMs - queueMs).toFixed(1)} ms < expected ${expected.toFixed(1)} ms on ${self}`],
          };
      }
      try {
        const out = await stage.forward({ sessionId: s.id, pos: h.pos, nTokens: h.nTokens, hidden });
        return { out: { ...out, computeMs: out.computeMs ?? performance.now() - startAt } };
      } catch (e) {
        const code: ErrorCode =
          e instanceof EngineError ? (e.code === 'capacity' ? 'busy' : e.code === 'internal' ? 'engine' : 'bad_message') : 'engine';
        return { error: [code, (e as Error).message] };
      }
    });
    if ('error' in computed) return fail(...computed.error);
    const { out } = computed;
    this.o.perf.record(h.nTokens, out.computeMs);
    const custody = await custodyCheck;
    if (custody) {
      // computed from an input its upstream did not sign for: the output is never released
      this.stats.errors++;
      void s.upstream.sendError(custody.code, custody.reason, {
        sessionId: s.id,
        requestId: h.requestId,
        peerId: custody.peerId,
        hop: s.open.hop,
      });
      return;
    }
    await committed;
    if (!out.hidden) return fail('engine', 'stage returned no hidden states');
    const t = performance.now();
    const bytes = encodeTensor(out.hidden, h.dtype);
    const sendMs = performance.now() - t;
    const spent = performance.now() - recvAt;
    const timing: HopTiming = {
      peerId: self,
      start: stage.range.start,
      end: stage.range.end,
      queueMs: round(queueMs),
      computeMs: round(out.computeMs),
      sendMs: round(sendMs),
      budgetInMs: h.budgetMs !== undefined ? round(h.budgetMs) : -1,
      slackMs: h.budgetMs !== undefined ? round(h.budgetMs - spent - s.linkMs) : -1,
    };
    const header: StepHeader = { ...h, timeline: [...h.timeline, timing] };
    // this hop's receipt (input as received, output as sent) goes on with the chain
    if (!stampStep(stamper, { ...arriving, header, output: bytes, timing }))
      return fail('internal', `${self} signed no receipt for step ${h.step}; output withheld`);
    if (h.budgetMs !== undefined) header.budgetMs = timing.slackMs;
    s.steps++;
    this.stats.steps++;
    this.o.metrics?.step(timing, h.nTokens);
    try {
      await s.downstream!.send({ type: s.isLast ? MsgType.RESULT : MsgType.STEP, header, payload: bytes });
    } catch {
      const target = s.downstream?.remotePeer;
      fail('unreachable', `${self} cannot reach ${target}`); // why is not told (dialing policy)
    }
  }

  /** The node is leaving: tell the gateway where the session's KV cache went (or that it must replay). */
  private refuseDraining(s: Session, h: StepHeader): void {
    this.stats.errors++;
    const self = this.o.self;
    const reason = s.handedTo ? `node ${self} is leaving; session handed to ${s.handedTo.peerId}` : `node ${self} is leaving`;
    const header = {
      code: 'draining',
      reason,
      peerId: self,
      sessionId: s.id,
      requestId: h.requestId,
      hop: s.open.hop,
      ...(s.handedTo ? { replacement: s.handedTo, resumeFrom: s.id } : {}),
    };
    void s.upstream.send({ type: MsgType.ERROR, header } as Message).catch(() => {});
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
