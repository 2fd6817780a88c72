// Runs one STEP of a session through the node's stage: validate and decode the activation,
// fix the commitment (while the stage computes), hand the step to the scheduler (scheduler.ts:
// deadline check, batched with other sessions' steps), send the output on at once with this
// hop's timing appended; then, on the session's receipt chain, wait for the upstream RECEIPTS,
// check custody, sign this hop's receipt and send the chain on (docs/protocol.md §4.3). One
// receipt per session step, whatever batch computed it. When no earlier step's receipt work is
// pending, custody is checked while the stage computes (the upstream RECEIPTS usually arrive
// meanwhile: always at hop 0, which has none). The receipt is signed only once the output has
// left, after the I/O of the tick that sent it: signing (≈ 0.4 ms of CPU on the development VM,
// the EIP-712 digest and the signature) before the output's socket write held every hop's
// output back by that much (bench/README.md, session 12). The RECEIPTS of the outputs sent in
// one tick are signed and sent in one later tick. Audit
// re-executions run through the scheduler's `exclusive`, never beside a token-path step.

import type { Stage } from '../engine/types.js';
import type { Channel } from '../p2p/channel.js';
import { MessageError, MsgType, decodeTensor, encodeTensor, type ErrorCode, type Message, type StepHeader } from '../protocol/messages.js';
import { appendReceipt, decodeReceipts } from '../protocol/receipt-codec.js';
import type { ArrivingStep, CustodyFailure, FinishedStep } from '../accountability/node/stamper.js';
import type { HopTiming } from '../route/route-stage.js';
import type { StepScheduler } from './scheduler.js';
import type { Session } from './sessions.js';
import type { NodeMetrics } from './metrics.js';
import type { StepStamper } from './stamper.js';
import { allFinite } from '../util/all-finite.js';

/** how long a hop waits for the upstream receipts of a step without a deadline budget */
export const RECEIPTS_WAIT_MS = 30_000;
/** with a budget: twice the budget, at least this (as the gateway waits for the RESULT, route-stage.ts) */
export const MIN_RECEIPTS_WAIT_MS = 5_000;
/**
 * Steps a hop may run ahead of its own receipt work (accountability on): a step that finds this
 * many steps' receipts not yet out waits until the oldest of them is. Outputs go on before their receipts, so a
 * gateway that sends step N+1 on RESULT N without waiting for RECEIPTS N would otherwise let
 * the upstream's RECEIPTS pile up here beyond MAX_WAITING_RECEIPTS (receipt-inbox.ts).
 */
export const MAX_RECEIPT_LAG = 4;

/**
 * How a step's output (STEP or RESULT) and then its RECEIPTS leave this hop for the next one
 * (the seam the test-only faults wrap: a node that drops what it should pass on).
 */
export type SendOnward = (to: Channel, m: Message) => Promise<void>;

/** The honest way: onto the stream, in order. */
export const sendOnward: SendOnward = (to, m) => to.send(m);

export interface StepExecutorOptions {
  /** this node's peer id (named in errors and timings) */
  self: string;
  stage: Stage;
  modelId: string;
  stamper: StepStamper;
  scheduler: StepScheduler;
  /** Prometheus metrics (odsi node --metrics-port) */
  metrics?: Pick<NodeMetrics, 'step' | 'stepError'>;
  /** how outputs and receipts go on (default sendOnward) */
  send?: SendOnward;
}

/** counters for logs/metrics */
export interface NodeStats {
  opened: number;
  steps: number;
  errors: number;
  refused: number;
}

export class StepExecutor {
  /** the tick's after-I/O promise (afterIo), while one is pending */
  private io?: Promise<void>;
  private readonly send: SendOnward;

  constructor(
    private readonly o: StepExecutorOptions,
    private readonly stats: NodeStats,
  ) {
    this.send = o.send ?? sendOnward;
  }

  async run(s: Session, h: StepHeader, payload: Uint8Array, recvAt: number): Promise<void> {
    // at most MAX_RECEIPT_LAG steps' receipt work behind: wait until the oldest beyond that is done
    const behind = s.stamping.length - MAX_RECEIPT_LAG;
    if (behind >= 0) await s.stamping[behind];
    if (s.closed) return;
    if (s.draining) return this.refuseDraining(s, h);
    const { stage, self, stamper } = this.o;
    const dim = stage.config.dim;
    const fail = (code: ErrorCode, reason: string, culprit?: string) => {
      this.stats.errors++;
      this.o.metrics?.stepError(code);
      void s.upstream.sendError(code, reason, {
        sessionId: s.id,
        requestId: h.requestId,
        hop: s.open.hop,
        ...(culprit ? { peerId: culprit } : {}),
      });
    };
    // activations this hop cannot take (shape, payload, a NaN or ±∞: no engine computes on those,
    // src/engine/step-input.ts) are the sender's doing, never this hop's: the ERROR names the
    // upstream hop (at hop 0, the owner), so the gateway routes around the sender rather than
    // around this hop; nothing is claimed or committed
    const sender = s.open.hop > 0 ? s.open.route[s.open.hop - 1]!.peerId : s.open.reply.peerId;
    if (h.shape[0] !== h.nTokens || h.shape[1] !== dim)
      return fail('bad_message', `shape [${h.shape.join(',')}] ≠ [${h.nTokens},${dim}]`, sender);
    if (h.pos + h.nTokens > s.reserved) return fail('busy', `session reserved ${s.reserved} KV tokens, step needs ${h.pos + h.nTokens}`);
    // the gateway samples from the last position only: the last hop's RESULT carries that row alone
    const lastRow = h.lastRow === true && s.isLast;
    let hidden: Float32Array;
    try {
      hidden = decodeTensor(payload, h.dtype, h.nTokens * dim);
    } catch (e) {
      return fail('bad_message', (e as Error).message, sender);
    }
    if (!allFinite(hidden)) return fail('bad_message', `hidden states from ${sender} are not finite`, sender);
    // this hop commits to its input before the output exists (while the stage computes); the
    // upstream hop's receipts (custody) are checked before this hop signs
    const arriving: ArrivingStep = {
      open: s.open,
      header: h,
      input: payload,
      range: stage.range,
      profile: stage.profile,
      modelId: this.o.modelId,
    };
    // never sign twice for one slot: a different input for a step already taken runs nothing
    const claimed = stamper.claim(arriving);
    if (!claimed.ok) return fail(claimed.code, claimed.reason);
    const committed = stamper.commit(arriving);
    // the upstream receipts are due waitMs after the step arrived, however long the receipt work
    // of the steps before it took: an upstream that sends none times every held step out by its
    // own due time, not one wait after another
    const waitMs = h.budgetMs !== undefined ? Math.max(2 * h.budgetMs, MIN_RECEIPTS_WAIT_MS) : RECEIPTS_WAIT_MS;
    const due = { at: recvAt + waitMs, waitMs };
    // custody is checked while the stage computes (the upstream RECEIPTS usually arrive
    // meanwhile) when no earlier step's receipt work is pending (each signer's chain is checked
    // in step order); otherwise after the output went on, behind the steps before it
    const custody = stamper.accountable && s.stamping.length === 0 ? this.custody(s, arriving, due) : undefined;
    // the scheduler batches this step with the other sessions' steps (continuous batching)
    const deadline = h.budgetMs !== undefined ? recvAt + h.budgetMs - s.linkMs : Infinity;
    const computed = await this.o.scheduler.submit({
      sessionId: s.id,
      pos: h.pos,
      nTokens: h.nTokens,
      hidden,
      recvAt,
      deadline,
      first: s.steps === 0 && h.pos === 0,
      lastRow,
    });
    // taken but not run: the upstream receipt chain is kept all the same
    const notRun = (code: ErrorCode, reason: string) => {
      this.keepChain(s, arriving, due, custody);
      fail(code, reason);
    };
    if ('error' in computed) return notRun(...computed.error);
    const { out, queueMs } = computed;
    if (!out.hidden) return notRun('engine', 'stage returned no hidden states');
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
    const header: StepHeader = { ...h, timeline: [...h.timeline, timing], ...(lastRow ? { shape: [1, dim] } : {}) };
    const finished: FinishedStep = { ...arriving, header, output: bytes, timing };
    // the receipt signs the budget as granted to this hop; the header passes on what is left
    const sent: StepHeader = h.budgetMs !== undefined ? { ...header, budgetMs: timing.slackMs } : header;
    s.steps++;
    this.stats.steps++;
    this.o.metrics?.step(timing, h.nTokens);
    const output = { type: s.isLast ? MsgType.RESULT : MsgType.STEP, header: sent, payload: bytes } as Message;
    // the output goes on at once; its receipts follow (the next hop computes meanwhile, and
    // signs nothing before it has verified them)
    try {
      await this.send(s.downstream!, output);
    } catch {
      const target = s.downstream?.remotePeer;
      return fail('unreachable', `${self} cannot reach ${target}`); // why is not told (dialing policy)
    }
    if (!stamper.accountable) return;
    const stamped = (s.stamping.at(-1) ?? Promise.resolve())
      .then(() => this.afterIo())
      .then(() => this.stamp(s, finished, committed, due, custody?.result))
      .catch(() => undefined) // stamp answers its own failures upstream; a throw must not stop the steps after it
      .finally(() => void s.stamping.shift()); // in order: each runs after the one before it
    s.stamping.push(stamped);
  }

  /**
   * Resolves once the I/O of the current tick is done (setImmediate): the outputs sent in this
   * tick are in the socket before any receipt work starts. One promise for every caller of a
   * tick, so the receipts of a batch's outputs are signed and sent in one tick (where the
   * socket's corking can join them: p2p/socket-writes.ts).
   */
  private afterIo(): Promise<void> {
    return (this.io ??= new Promise<void>((resolve) =>
      setImmediate(() => {
        this.io = undefined;
        resolve();
      }),
    ));
  }

  /**
   * After the output went on: the upstream chain (its RECEIPTS message), verified; then this hop's
   * receipt, signed and sent on with the chain. Any failure: an ERROR upstream, no receipt.
   */
  private async stamp(
    s: Session,
    f: FinishedStep,
    committed: Promise<void>,
    due: { at: number; waitMs: number },
    checked?: Promise<Custody>,
  ): Promise<void> {
    const { self, stamper } = this.o;
    const h = f.header;
    const errorUp = (code: ErrorCode, reason: string, peerId?: string) => {
      this.stats.errors++;
      this.o.metrics?.stepError(code);
      void s.upstream.sendError(code, reason, { sessionId: s.id, requestId: h.requestId, hop: s.open.hop, ...(peerId ? { peerId } : {}) });
    };
    // what does not depend on the upstream receipts is done while they are on their way
    stamper.prepare?.(f);
    const { upstream, failure, timedOut, receipts: chain } = await (checked ?? this.custody(s, f, due).result);
    f.receipts = chain;
    if (s.closed) return;
    if (timedOut) {
      const upPeer = s.open.route[s.open.hop - 1]!.peerId;
      return errorUp('timeout', `no receipts from ${upPeer} for step ${h.step} within ${Math.round(due.waitMs)} ms`, upPeer);
    }
    // computed from an input its upstream did not sign for: this hop signs nothing for it
    if (failure) return this.custodyFailed(s, h.requestId, failure);
    await committed;
    const receipts = this.receipt(s, f, upstream);
    if (!receipts) return errorUp('internal', `${self} signed no receipt for step ${h.step}`);
    if (s.closed) return;
    try {
      await this.send(s.downstream!, receipts);
    } catch {
      errorUp('unreachable', `${self} cannot reach ${s.downstream?.remotePeer}`);
    }
  }

  /**
   * A step this hop took but did not run (refused by the scheduler, or the engine failed): its
   * upstream receipt is still the next link of that signer's chain in this session, so it is
   * checked in step order all the same (a later step's receipt links to it), and nothing is
   * signed. Unless the check already ran while the stage would have computed (`started`).
   */
  private keepChain(s: Session, a: ArrivingStep, due: { at: number; waitMs: number }, started: CustodyCheck | undefined): void {
    if (!this.o.stamper.accountable || started || s.open.hop === 0) return;
    const checked = (s.stamping.at(-1) ?? Promise.resolve())
      .then(() => this.custody(s, a, due).result)
      .then(({ failure }) => {
        if (failure && !s.closed) this.custodyFailed(s, a.header.requestId, failure);
      })
      .catch(() => undefined)
      .finally(() => void s.stamping.shift());
    s.stamping.push(checked);
  }

  /** The upstream's receipt failed custody: an ERROR naming that peer goes upstream. */
  private custodyFailed(s: Session, requestId: number, failure: CustodyFailure): void {
    this.stats.errors++;
    void s.upstream.sendError(failure.code, failure.reason, { sessionId: s.id, requestId, peerId: failure.peerId, hop: s.open.hop });
  }

  /**
   * The upstream hop's receipts for a step (none at hop 0), waited for until `due` and checked
   * (custody); `done` is set once `result` resolved, so the caller can see without waiting.
   */
  private custody(s: Session, a: ArrivingStep, due: { at: number; waitMs: number }): CustodyCheck {
    const check = async (): Promise<Custody> => {
      let upstream: Uint8Array | undefined;
      if (s.open.hop > 0) {
        upstream = await s.inbox.take(a.header.step, Math.max(0, due.at - performance.now()));
        s.inbox.forget(a.header.step);
        if (!upstream) return { timedOut: true };
        try {
          a.receipts = decodeReceipts(upstream);
        } catch (e) {
          a.receipts = 'malformed';
          if (!(e instanceof MessageError)) throw e;
        }
      }
      return { upstream, receipts: a.receipts, failure: await this.o.stamper.checkUpstream(a) };
    };
    const c: CustodyCheck = { result: check() };
    void c.result.then(
      (r) => (c.done = r),
      () => undefined,
    );
    return c;
  }

  /** This hop's receipt (input as received, output as sent), signed and kept for auditors, as the RECEIPTS message that carries it on with the chain. */
  private receipt(s: Session, f: FinishedStep, upstream: Uint8Array | undefined): Message | undefined {
    const { stamper } = this.o;
    const receipt = stamper.sign(f);
    if (!receipt) return undefined;
    stamper.retain(f, receipt);
    const payload = appendReceipt(upstream, receipt);
    return { type: MsgType.RECEIPTS, header: { sessionId: s.id, requestId: f.header.requestId, step: f.header.step }, payload };
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

/** A custody check under way; `done` once its result is in (read without waiting). */
interface CustodyCheck {
  result: Promise<Custody>;
  done?: Custody;
}

/** What the custody check of a step found: the upstream chain's bytes, a failure, or nothing in time. */
interface Custody {
  upstream?: Uint8Array;
  /** the chain as decoded (or 'malformed') */
  receipts?: unknown;
  failure?: CustodyFailure;
  timedOut?: boolean;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
