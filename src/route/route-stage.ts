// The gateway's view of a chain of nodes, as one Stage (direct forwarding):
//   gateway ──STEP──▶ hop 1 ──STEP──▶ hop 2 … ──▶ hop k ──RESULT──▶ gateway
// One long-lived libp2p stream per session per hop (k+1 transfers per token). Errors travel
// back upstream hop by hop to the gateway and name the failing peer, which counts only as far
// as the ERROR's signature lets it (error-blame.ts). Each hop appends its
// timing to the STEP's timeline and the gateway gets the whole timeline with the RESULT. With
// accountability on, the RESULT is followed by a RECEIPTS message (the hops' signed receipts,
// docs/protocol.md §4.3): the output comes back provisional at the RESULT, and its `settled`
// carries the verifier's verdict on that chain (nothing from it reaches a user before).

import type { Stream } from '@libp2p/interface';
import type { ModelConfig } from '../model/types.js';
import type { Stage, StageInput, StageOutput, StageRange } from '../engine/types.js';
import { EngineError } from '../engine/types.js';
import { Channel } from '../p2p/channel.js';
import type { OdsiHost } from '../p2p/host.js';
import type { StreamPool } from '../p2p/stream-pool.js';
import { DeadlineTimer } from '../util/deadline-timer.js';
import { allFinite } from '../util/all-finite.js';
import type { StepVerifier } from './step-verifier.js';
import {
  MsgType,
  decodeTensor,
  encodeTensor,
  type Dtype,
  type ErrorHeader,
  type Message,
  type OpenHeader,
  type StepHeader,
  type StepTiming,
} from '../protocol/messages.js';
import { OPEN_TTL_MS, signOpen, type OpenToSign } from '../protocol/open-signature.js';
import { decodeReceipts } from '../protocol/receipt-codec.js';
import { blameFor, type ErrorContext } from './error-blame.js';

export interface Hop {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
}

/** one hop's timing of a step, as the STEP/RESULT header's timeline carries it */
export type HopTiming = StepTiming;

/** a route's output: a stage's, with the hops' timings of that step (the RESULT's timeline) */
export interface RouteStepOutput extends StageOutput {
  timeline: HopTiming[];
}

/** default KV reservation per session when the caller names none */
export const DEFAULT_MAX_TOKENS = 4096;

export type RouteErrorCode = 'unreachable' | 'timeout' | 'remote_error' | 'deadline' | 'bad_reply';

export class RouteError extends Error {
  /** the route step (its STEP header's `step`) an ERROR answered, when it named one in flight */
  step?: number;

  constructor(
    message: string,
    readonly code: RouteErrorCode,
    readonly peerId?: string,
    /** the remote error code when code is 'remote_error' (or 'deadline') */
    readonly remoteCode?: string,
    /** kv-transfer: the remote ERROR header (e.g. a 'draining' notice's replacement) */
    readonly detail?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'RouteError';
  }
}

export interface OpenRouteOptions {
  modelId: string;
  config: ModelConfig;
  hops: Hop[];
  sessionId: string;
  /** per-step budget in ms carried with every STEP (none when absent) */
  deadlineMs?: number;
  /** activation dtype on the wire (default f32) */
  dtype?: Dtype;
  /** KV tokens each hop reserves (default: min(context length, DEFAULT_MAX_TOKENS)) */
  maxTokens?: number;
  /** ask hops to free the session after this long without a step (capped by each node) */
  idleTimeoutMs?: number;
  /** how long to wait for the chain to come up (default 15 s) */
  openTimeoutMs?: number;
  /** how long to wait for a step's result when no deadline is set (default 120 s) */
  stepTimeoutMs?: number;
  /** kv-transfer: hops start from the KV cache of this session id (their own, or one handed to them) */
  resumeFrom?: string;
  /** kv-transfer: nodes a draining hop may hand its sessions to */
  spares?: Hop[];
  /** checks every RESULT before its output is released (accountability); none: accepted as is */
  verifier?: StepVerifier;
  /**
   * open() returns once the OPEN went to the first hop, without waiting for the chain to come up
   * (OPENED): a first step sent at once travels right behind the OPEN on every link, and `ready`
   * says whether the route came up (an error before OPENED fails the route and its steps)
   */
  eager?: boolean;
}

/** Where a route's RESULT stream is delivered (RouteClient dispatches by session id). */
export interface ResultSink {
  lastPeer: string;
  onResultChannel(ch: Channel): void;
  onMessage(m: Message): void;
  onResultClosed(err?: Error): void;
}

export class RouteStage implements Stage {
  readonly range: StageRange;
  readonly config: ModelConfig;
  readonly profile = 'route';
  readonly sessionId: string;
  readonly hops: Hop[];
  /** kv-transfer: the spares this route's OPEN offered a draining hop (none: not offered) */
  readonly spares: readonly Hop[];
  /** per-hop timings of the most recent step */
  lastTimeline: HopTiming[] = [];
  /** gateway-measured wall time of the most recent step (send → result) */
  lastRoundTripMs = 0;
  /** per-step budget carried with each STEP; may be changed between steps */
  deadlineMs?: number;
  private readonly dtype: Dtype;
  private first?: Channel;
  private result?: Channel;
  private nextRequest = 1;
  private step = 0;
  private length = 0;
  private closed = false;
  /** the route failed before it came up (onBroken before OPENED): later ERRORs change nothing */
  private openFailed = false;
  /** steps in flight, until their RESULT (and, with accountability, their RECEIPTS) arrived */
  private pending = new Map<number, PendingStep>();
  /** one timer for all steps in flight, armed at the earliest deadline (sweep) */
  private readonly timer = new DeadlineTimer((now) => this.sweep(now));
  /** receipt checks run one step at a time, in step order (each signer's receipts form a chain) */
  private verifying: Promise<unknown> = Promise.resolve();
  private opened?: { resolve(): void; reject(e: Error): void };
  /** OPENED came from the last hop: the chain is up */
  isUp = false;
  /** resolves when the chain is up (OPENED), rejects with why it did not come up */
  ready: Promise<void> = Promise.resolve();
  /** why the route did not come up, once it did not */
  openError?: RouteError;

  constructor(
    private readonly host: OdsiHost,
    private readonly opts: OpenRouteOptions,
    private readonly sinks: Map<string, ResultSink>,
    /** the first hop's activation streams (a spare one saves the negotiation round trip) */
    private readonly streams: StreamPool,
  ) {
    this.hops = opts.hops;
    this.spares = opts.spares ?? [];
    this.sessionId = opts.sessionId;
    this.config = opts.config;
    this.dtype = opts.dtype ?? 'f32';
    this.deadlineMs = opts.deadlineMs;
    this.range = { start: opts.hops[0]!.start, end: opts.hops[opts.hops.length - 1]!.end, embed: false, head: false };
  }

  /** @internal (RouteClient.open) */
  async open(): Promise<void> {
    const last = this.hops[this.hops.length - 1]!;
    const first = this.hops[0]!;
    const up = new Promise<void>((resolve, reject) => (this.opened = { resolve, reject }));
    this.ready = up.catch((e: RouteError) => {
      this.openError ??= e;
      throw e;
    });
    this.ready.catch(() => undefined); // eager: the first step's caller awaits it
    this.sinks.set(this.sessionId, {
      lastPeer: last.peerId,
      onResultChannel: (ch) => (this.result = ch),
      onMessage: (m) => this.onMessage(m, last.peerId),
      onResultClosed: (err) =>
        this.onBroken(
          new RouteError(`result stream from ${last.peerId} closed${err ? `: ${err.message}` : ''}`, 'unreachable', last.peerId),
        ),
    });
    const timeoutMs = this.opts.openTimeoutMs ?? 15_000;
    const signal = AbortSignal.timeout(timeoutMs);
    let stream: Stream;
    try {
      // also connect to the last hop: its result stream then reuses this connection, so a
      // gateway that cannot be dialled (NAT) still gets results
      const toLast = last.peerId !== first.peerId ? this.host.dial(last.peerId, last.addrs, signal).catch(() => {}) : undefined;
      await this.host.dial(first.peerId, first.addrs, signal);
      await toLast;
      stream = await this.streams.take(first.peerId, signal);
    } catch (e) {
      throw new RouteError(`cannot reach first hop ${first.peerId}: ${(e as Error).message}`, 'unreachable', first.peerId);
    }
    this.first = new Channel(stream, first.peerId, this.host.peerId, {
      onMessage: (m) => this.onMessage(m, first.peerId),
      onClose: (err) =>
        this.onBroken(new RouteError(`stream to ${first.peerId} closed${err ? `: ${err.message}` : ''}`, 'unreachable', first.peerId)),
    });
    const timer = setTimeout(() => this.onBroken(new RouteError(`route did not come up within ${timeoutMs} ms`, 'timeout')), timeoutMs);
    void this.ready.then(
      () => clearTimeout(timer),
      () => {
        clearTimeout(timer);
        if (this.opts.eager) this.teardown(); // nobody else tears an eager route down on a failed open
      },
    );
    await this.first.send({ type: MsgType.OPEN, header: this.signedOpen() });
    if (!this.opts.eager) await this.ready;
  }

  /** The OPEN for hop 0, signed by this gateway's identity (the session is ours: open-signature.ts). */
  private signedOpen(): OpenHeader {
    const issuedAt = Date.now();
    const hop = (h: Hop): Hop => ({ peerId: h.peerId, addrs: h.addrs, start: h.start, end: h.end });
    const body: OpenToSign = {
      sessionId: this.sessionId,
      modelId: this.opts.modelId,
      route: this.hops.map(hop),
      reply: { peerId: this.host.peerId, addrs: this.host.addrs() },
      dtype: this.dtype,
      hidden: this.config.dim,
      maxTokens: this.opts.maxTokens ?? Math.min(this.config.contextLength, DEFAULT_MAX_TOKENS),
      ...(this.opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: this.opts.idleTimeoutMs } : {}),
      ...(this.opts.resumeFrom !== undefined ? { resumeFrom: this.opts.resumeFrom } : {}), // kv-transfer
      ...(this.opts.spares?.length ? { spares: this.opts.spares.map(hop) } : {}), // kv-transfer: the hand-over invitation
      issuedAt,
      expiresAt: issuedAt + OPEN_TTL_MS,
    };
    return { ...body, hop: 0, signature: signOpen(this.host.identity, body) };
  }

  /** A message from the route: `deliverer` is the peer whose stream it came on (hop 0, or the last hop's result stream). */
  private onMessage(m: Message, deliverer: string): void {
    if (m.type === MsgType.OPENED) {
      this.isUp = true; // at once: an ERROR read with it is a step's
      this.opened?.resolve();
      return;
    }
    if (m.type === MsgType.RESULT) {
      const p = this.pending.get(m.header.requestId);
      if (!p || p.gotResult) return; // late result of a step that already timed out (or a second one)
      p.gotResult = true;
      // accountability: the step stays pending for its receipts, which follow in a RECEIPTS message
      if (!p.receipts) this.pending.delete(m.header.requestId);
      p.result.resolve(m);
      return;
    }
    if (m.type === MsgType.RECEIPTS) {
      const p = this.pending.get(m.header.requestId);
      if (!p?.gotResult || !p.receipts) return; // nothing waits for these
      this.pending.delete(m.header.requestId);
      p.receipts.resolve(m);
      return;
    }
    if (m.type === MsgType.ERROR) {
      // an ERROR on a route whose open already failed, or on a route up with no step in flight, has
      // nothing to fail: its signature is not even checked (ERRORs in a loop cost no verification)
      if (this.closed || (this.isUp ? this.pending.size === 0 : this.openFailed)) return;
      const rid = m.header.requestId;
      const p = rid !== undefined ? this.pending.get(rid) : undefined;
      // the peer named is the one the ERROR's signature lets it name, else the deliverer (error-blame.ts)
      const err = toRouteError(blameFor(m.header, this.errorContext(deliverer)));
      if (p) err.step = p.step;
      // before OPENED every error is the open's (a step sent right behind the OPEN fails with it)
      if (!this.isUp) return this.onBroken(err);
      if (p) {
        this.pending.delete(rid!);
        failStep(p, err);
      } else {
        this.failAll(err);
      }
      return;
    }
    if (m.type === MsgType.CLOSE) this.onBroken(new RouteError(`route closed by a hop: ${m.header.reason ?? ''}`, 'remote_error'));
  }

  private errorContext(deliverer: string): ErrorContext {
    return { sessionId: this.sessionId, route: this.hops.map((h) => h.peerId), owner: this.host.peerId, deliverer };
  }

  private onBroken(err: RouteError): void {
    if (this.closed) return;
    if (!this.isUp) this.openFailed = true;
    this.opened?.reject(err);
    this.failAll(err);
  }

  private failAll(err: Error): void {
    for (const [rid, p] of this.pending) {
      failStep(p, err);
      this.pending.delete(rid);
    }
    this.timer.cancel();
  }

  /** Fails the steps past their deadline; the earliest of the others is next. */
  private sweep(now: number): number {
    let next = Infinity;
    for (const [rid, p] of this.pending) {
      if (p.deadline <= now) {
        this.pending.delete(rid);
        failStep(p, new RouteError(`no ${p.gotResult ? 'receipts' : 'result'} for step ${p.step} within ${p.waitMs} ms`, 'timeout'));
      } else next = Math.min(next, p.deadline);
    }
    return next;
  }

  /**
   * One step through the chain. input.sessionId is ignored: a route carries one session. With
   * accountability the output comes back as soon as the RESULT does, provisional: `settled`
   * resolves once the step's RECEIPTS arrived and the verifier accepted them, and rejects with a
   * RouteError naming the culprit otherwise (docs/protocol.md §4.3), so the caller can send the
   * next step while this one's receipts are checked.
   */
  async forward(input: StageInput): Promise<RouteStepOutput> {
    if (this.closed) throw new RouteError(`route for session ${this.sessionId} is closed`, 'unreachable');
    if (!input.hidden) throw new EngineError('a route stage takes hidden states (range.embed is false)', 'bad_input');
    const dim = this.config.dim;
    if (input.hidden.length !== input.nTokens * dim) {
      throw new EngineError(`hidden has ${input.hidden.length} values, expected ${input.nTokens} × ${dim}`, 'bad_input');
    }
    if (!this.first?.isOpen)
      throw new RouteError(`stream to first hop ${this.hops[0]!.peerId} is closed`, 'unreachable', this.hops[0]!.peerId);
    const requestId = this.nextRequest++;
    const header: StepHeader = {
      sessionId: this.sessionId,
      requestId,
      step: this.step++,
      pos: input.pos,
      nTokens: input.nTokens,
      dtype: this.dtype,
      shape: [input.nTokens, dim],
      timeline: [],
    };
    if (this.deadlineMs !== undefined) header.budgetMs = this.deadlineMs;
    // one token: its row is the last anyway
    const lastRow = input.lastRow === true && input.nTokens > 1;
    if (lastRow) header.lastRow = true;
    const t0 = performance.now();
    const sent = encodeTensor(input.hidden, this.dtype);
    const waitMs = this.deadlineMs !== undefined ? Math.max(this.deadlineMs * 2, 5000) : (this.opts.stepTimeoutMs ?? 120_000);
    const verifier = this.opts.verifier;
    const step: PendingStep = {
      result: deferred<Message>(),
      receipts: verifier ? deferred<ReceiptsMessage>() : undefined,
      gotResult: false,
      step: header.step,
      waitMs,
      deadline: t0 + waitMs,
    };
    step.receipts?.promise.catch(() => undefined); // awaited by the check below, unless the RESULT never came
    this.pending.set(requestId, step);
    this.timer.by(step.deadline); // no timer per step: one sweep for the route
    try {
      await this.first.send({ type: MsgType.STEP, header, payload: sent });
    } catch (e) {
      this.pending.delete(requestId);
      throw new RouteError(`send to ${this.hops[0]!.peerId} failed: ${(e as Error).message}`, 'unreachable', this.hops[0]!.peerId);
    }
    const m = await step.result.promise;
    if (m.type !== MsgType.RESULT) throw new RouteError('unexpected reply', 'bad_reply');
    const h = m.header;
    // asked for the last row: one row, or every row when a hop before the last cleared the
    // unsigned flag (then only bandwidth was lost; the receipts say which the last hop sent)
    const rows = lastRow && h.shape[0] === 1 ? 1 : input.nTokens;
    if (h.nTokens !== input.nTokens || h.shape[0] !== rows || h.shape[1] !== dim) {
      throw new RouteError(
        `result shape [${h.shape.join(',')}] does not match [${lastRow ? `1 or ${input.nTokens}` : rows},${dim}]`,
        'bad_reply',
        this.hops[this.hops.length - 1]!.peerId,
      );
    }
    let hidden: Float32Array;
    try {
      hidden = decodeTensor(m.payload, h.dtype, rows * dim);
      if (lastRow && rows > 1) hidden = hidden.subarray((rows - 1) * dim);
    } catch (e) {
      throw new RouteError((e as Error).message, 'bad_reply', this.hops[this.hops.length - 1]!.peerId);
    }
    // each hop refuses a non-finite input, so a non-finite result is the last hop's
    if (!allFinite(hidden)) {
      const last = this.hops[this.hops.length - 1]!.peerId;
      throw new RouteError(`result from ${last} is not finite`, 'bad_reply', last);
    }
    this.lastRoundTripMs = performance.now() - t0;
    this.lastTimeline = h.timeline;
    this.length = input.pos + input.nTokens;
    const computeMs = h.timeline.reduce((s, t) => s + t.computeMs, 0);
    if (!verifier || !step.receipts) return { hidden, computeMs, timeline: h.timeline };
    // accountability: the hops' signed receipts are checked (and sampled ones audited) before the output is released
    const receipts = step.receipts.promise;
    const check = async (): Promise<void> => {
      const r = await receipts;
      const last = this.hops[this.hops.length - 1]!.peerId;
      if (r.header.step !== h.step) throw new RouteError(`receipts for step ${r.header.step} answer step ${h.step}`, 'bad_reply', last);
      let chain: unknown[];
      try {
        chain = decodeReceipts(r.payload);
      } catch (e) {
        throw new RouteError((e as Error).message, 'bad_reply', last);
      }
      // the verifier reads the chain where a 1.2 RESULT carried it: in its header
      const header = { ...h, receipts: chain } as StepHeader;
      const bad = await verifier.afterStep({
        sessionId: this.sessionId,
        hops: this.hops,
        dtype: this.dtype,
        input,
        header,
        sent,
        payload: m.payload,
      });
      if (bad) throw new RouteError(`${bad.peerId}: ${bad.code}: ${bad.reason}`, 'remote_error', bad.peerId, bad.code);
    };
    const settled = this.verifying.then(check);
    this.verifying = settled.catch(() => undefined);
    settled.catch(() => undefined); // the caller awaits it; a step abandoned meanwhile must not crash the process
    return { hidden, computeMs, settled, timeline: h.timeline };
  }

  /** Ask every hop to drop KV beyond `pos` (the next STEP at `pos` does the same implicitly). */
  async truncate(pos: number): Promise<void> {
    if (!this.first?.isOpen) throw new RouteError('route is closed', 'unreachable', this.hops[0]!.peerId);
    await this.first.send({ type: MsgType.TRUNCATE, header: { sessionId: this.sessionId, pos } });
    this.length = Math.min(this.length, pos);
  }

  sessionLength(_sessionId?: string): number {
    return this.length;
  }

  /** Closes the route (a route carries exactly one session). */
  closeSession(_sessionId?: string): void {
    void this.dispose();
  }

  async dispose(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.first?.isOpen) await this.first.send({ type: MsgType.CLOSE, header: { sessionId: this.sessionId } });
    } catch {
      /* the route is going away anyway */
    }
    this.teardown();
  }

  /** @internal */
  teardown(): void {
    this.closed = true;
    this.failAll(new RouteError('route closed', 'unreachable'));
    this.sinks.delete(this.sessionId);
    void this.first?.close();
    void this.result?.close();
  }
}

type ReceiptsMessage = Extract<Message, { type: MsgType.RECEIPTS }>;

/** A step in flight: its RESULT, then (accountability) its RECEIPTS. */
interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

interface PendingStep {
  result: Deferred<Message>;
  receipts?: Deferred<ReceiptsMessage>;
  gotResult: boolean;
  step: number;
  /** how long it may take (named in the timeout) and until when (performance.now()) */
  waitMs: number;
  deadline: number;
}

function failStep(p: PendingStep, err: Error): void {
  p.result.reject(err); // no effect once the RESULT came
  p.receipts?.reject(err);
}

function toRouteError(h: ErrorHeader): RouteError {
  const code: RouteErrorCode =
    h.code === 'deadline' ? 'deadline' : h.code === 'unreachable' ? 'unreachable' : h.code === 'timeout' ? 'timeout' : 'remote_error';
  return new RouteError(`${h.peerId || 'remote'}: ${h.code}: ${h.reason}`, code, h.peerId || undefined, h.code, h); // kv-transfer: + detail
}
