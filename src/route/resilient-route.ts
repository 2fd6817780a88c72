// A route that survives its nodes: a Stage the gateway uses instead of a bare RouteStage.
//
// Detection (on the token path, no long timeouts): a step fails when the route reports a lost
// connection or an error reply, when no result arrives within the step's budget (the
// deadline, or a multiple of the route's estimate) plus a small grace, or — between steps —
// when the timelines show one hop making the route miss its deadline `missLimit` times in a
// row. The failed hop is found from the error, by pinging every hop, or by probing each with
// a one-token step (see diagnose.ts); it is banned (exponential backoff) and excluded.
//
// Recovery by reconstruction: this stage keeps every hidden-state row it has sent (the
// embedded token history, positions 0..n-1; the embedding is a pure lookup, so this is the
// token history in the form the route consumes). After a failure it asks the planner (the
// gateway's RoutePlanner, which skips banned peers) for a route avoiding the failed peers,
// opens it under a fresh session id, replays the history as a prefill so every hop rebuilds
// its KV cache, then re-runs the failed step. Greedy output is identical to an uninterrupted run. Every failure and re-route is
// reported through onEvent.

import { performance } from 'node:perf_hooks';
import type { ModelConfig } from '../model/types.js';
import { EngineError, type Stage, type StageInput, type StageOutput, type StageRange } from '../engine/types.js';
import { RouteError, type Hop, type HopTiming, type OpenRouteOptions, type RouteStage } from './route-stage.js';
import { mergeTimelines } from './merge-timelines.js';
import { NoRouteError, type Route } from '../routing/router.js';
import type { RoutePlanner } from '../routing/planner.js';
import {
  accusation,
  excludeAfterOpenFailure,
  siteOf,
  type DisputeJudge,
  type OpenFailureVerdict,
  type UnexplainedJudge,
} from './ban-worthy.js';
import { offeredReplacement } from './offered-replacement.js';
import { silentPeers, unreachablePeers } from './diagnose.js';
import type { FailureEvent, FaultEvent, RouteHopRef } from './events.js';
import type { StepVerifier } from './step-verifier.js';
import type { RouteClient } from './route-client.js';
import { forwardInChunks } from './chunked-steps.js';

/**
 * steps of a long input (prompt, replay) in flight at once: below a hop's per-session queue
 * (MAX_QUEUED_PER_SESSION, 8) and its receipt lag (MAX_RECEIPT_LAG, 4)
 */
export const CHUNKS_IN_FLIGHT = 4;
/** tokens per step of a prompt (ResilientRouteOptions.promptChunk) */
export const PROMPT_CHUNK = 32;
/** tokens per step of a replay (ResilientRouteOptions.replayChunk) */
export const REPLAY_CHUNK = 64;

export interface ResilientRouteOptions {
  /** opens routes (and probes) from the gateway's host */
  routes: RouteClient;
  modelId: string;
  config: ModelConfig;
  /** the request's session id; replacement routes use `<id>.r<n>` on the nodes */
  sessionId: string;
  /** where replacement routes come from (the gateway's planner; it skips banned peers) */
  planner: RoutePlanner;
  /** told about peers found at fault, and asked whether one is banned (the gateway's ban list) */
  bans?: { ban(peerId: string): number; isBanned(peerId: string): boolean };
  /** judges one hop's signed accusation of another (the gateway's Disputes); absent: neither is banned for it */
  disputes?: DisputeJudge;
  /** remembers steps lost with every hop still answering (the gateway's UnexplainedFailures); absent: this request alone avoids them */
  unexplained?: UnexplainedJudge;
  /** per-step deadline budget carried on the route (ms) */
  deadlineMs?: number;
  /** KV tokens each hop reserves (prompt + max new tokens) */
  maxTokens?: number;
  /** added to a step's budget before it counts as lost, ms (default 1000) */
  graceMs?: number;
  /** a step's budget without a deadline: safety × the route's estimate, at least this (default 250 ms) */
  minStepMs?: number;
  /** re-routes per session before the error reaches the caller (default 4) */
  maxRecoveries?: number;
  /** tokens per replay step (default REPLAY_CHUNK), CHUNKS_IN_FLIGHT of them in flight */
  replayChunk?: number;
  /** a prompt longer than this goes as steps of this many tokens, CHUNKS_IN_FLIGHT in flight (default PROMPT_CHUNK; 0: one step) */
  promptChunk?: number;
  /** consecutive deadline misses dominated by one hop before it is routed around (default 3) */
  missLimit?: number;
  onEvent?(e: FaultEvent): void;
  /** checks every step of every route this session opens (accountability) */
  verifier?: StepVerifier;
  /**
   * send the first step on a route right behind its OPEN instead of after its OPENED (default
   * true): a request's first route (its first step) and every replacement route (its replay's
   * first chunk) each save the chain's one-way trip per link. A failed open is then seen at
   * that step, and handled as an open failure (peers excluded, ban-worthy ones banned, the next
   * attempt), not as a failure of a working route
   */
  eagerOpen?: boolean;
}

interface Diagnosis {
  culprits: string[];
  /** culprits to ban (those that failed, not merely busy or slow) */
  ban: string[];
  /** peers this session should avoid only if it can */
  suspects: string[];
  how: string;
  /** a dispute: the accuser and the peer it named */
  disputed?: [accuser: string, accused: string];
  /** culprits banned already (by the disputes' or the unexplained failures' rule): not used again by this session, not banned twice */
  banned?: string[];
}

/**
 * A step timer firing later than this (ms) says this gateway's event loop was busy: its loss is
 * not held against the route. (A result already in the socket is read in the turn of I/O the
 * timer lets run first; what this covers is one that needed more turns. A 2-core box running
 * several processes delays timers by tens of ms routinely, so the bound is well above that.)
 */
export const LATE_TIMER_MS = 250;

/** A step's result (or its receipts) did not come within its budget + grace; `lateMs`: how late the timer fired. */
export class LostStepError extends RouteError {
  constructor(
    message: string,
    readonly lateMs: number,
  ) {
    super(message, 'timeout');
    this.name = 'LostStepError';
  }
}

/** safety factor on the router's estimate when no deadline bounds a step */
const ESTIMATE_SAFETY = 4;

const refs = (hops: readonly Hop[]): RouteHopRef[] => hops.map((h) => ({ peerId: h.peerId, start: h.start, end: h.end }));
const round = (x: number) => Math.round(x * 1000) / 1000;

export class ResilientRoute implements Stage {
  readonly range: StageRange;
  readonly config: ModelConfig;
  readonly profile = 'route';
  /** this session's fault events (also sent to onEvent) */
  readonly events: FaultEvent[] = [];
  private current: RouteStage;
  private estimate: Route;
  private hist: Float32Array = new Float32Array(0);
  private histLen = 0;
  private recoveries = 0;
  private closed = false;
  /** peers found at fault during this session: never used again by it */
  private readonly failed = new Set<string>();
  /** peers this session avoids when it can (unattributed failures, deadline trouble) */
  private readonly suspects = new Set<string>();
  /** peers whose spare stream was closed under a replacement's OPEN once already (staleSpare): the next such failure counts */
  private readonly staleSpares = new Set<string>();
  private readonly misses = new Map<string, number>();
  private slowPeer?: string;
  /** the hops' timings of the last step that returned (all its chunks together) */
  private timeline: HopTiming[] = [];
  private readonly graceMs: number;
  /** a step of this route was rejected after its output went out provisionally: recover before the next */
  private broken?: { err: RouteError; stage: RouteStage };
  /**
   * the first route is opening eagerly (openResilientRoute): the first step goes right behind its
   * OPEN, and until a step succeeded an open that fails is retried as openResilientRoute retries
   * (peers excluded, ban-worthy ones banned, at most openAttempts routes), not re-routed
   */
  private opening?: FirstOpen;

  constructor(
    initial: RouteStage,
    route: Route,
    private readonly o: ResilientRouteOptions & Partial<Pick<OpenResilientRouteOptions, 'openAttempts' | 'signal'>>,
    opening?: FirstOpen,
  ) {
    this.opening = opening;
    this.current = initial;
    this.estimate = route;
    this.config = o.config;
    this.range = { ...initial.range };
    this.graceMs = o.graceMs ?? 1000;
  }

  /** the hops now in use */
  get hops(): Hop[] {
    return this.current.hops;
  }
  /** per-hop timings of the last step (what TimedStage shows in token timelines); of all its chunks when it went in several */
  get lastTimeline(): HopTiming[] {
    return this.timeline;
  }
  get rerouteCount(): number {
    return this.recoveries;
  }
  /** the deadline carried on the route; changeable between steps */
  get deadlineMs(): number | undefined {
    return this.o.deadlineMs;
  }
  set deadlineMs(ms: number | undefined) {
    this.o.deadlineMs = ms;
    this.current.deadlineMs = ms;
  }

  async forward(input: StageInput): Promise<StageOutput> {
    if (this.closed) throw new RouteError(`route for session ${this.o.sessionId} is closed`, 'unreachable');
    const dim = this.config.dim;
    if (!input.hidden) throw new EngineError('a route stage takes hidden states (range.embed is false)', 'bad_input');
    if (input.hidden.length !== input.nTokens * dim)
      throw new EngineError(`hidden has ${input.hidden.length} values, expected ${input.nTokens} × ${dim}`, 'bad_input');
    if (input.pos > this.histLen)
      throw new EngineError(`step at position ${input.pos}, but the route has processed only ${this.histLen} tokens`, 'bad_input');
    this.histLen = input.pos; // a smaller pos truncates, as on every stage
    const broken = this.broken;
    this.broken = undefined;
    if (broken && broken.stage === this.current) await this.recover(broken.err, input.pos);
    if (this.slowPeer) {
      const peer = this.slowPeer;
      this.slowPeer = undefined;
      const err = new RouteError(
        `hop ${peer} made the route miss its deadline on ${this.o.missLimit ?? 3} consecutive steps`,
        'deadline',
        peer,
      );
      await this.recover(err, input.pos, { culprits: [peer], ban: [], suspects: [peer], how: 'slack' });
    }
    for (;;) {
      const stage = this.current;
      try {
        const out = await this.step(stage, input, false);
        this.opening = undefined;
        this.record(input.pos, input.hidden);
        this.watchSlack();
        return out.settled ? { ...out, settled: this.watchSettled(stage, out.settled) } : out;
      } catch (e) {
        if (!(e instanceof RouteError) || this.closed) throw e;
        if (this.opening && stage.openError) {
          await this.reopen(stage, stage.openError);
          continue;
        }
        // sent on a route whose earlier step was rejected: the caller runs that step again, and this route is replaced first
        if (this.brokenRoute() === stage) throw e;
        if (e.remoteCode === 'draining' && (await this.transfer(e, input.pos))) continue; // kv-transfer
        await this.recover(e, input.pos);
      }
    }
  }

  sessionLength(_sessionId?: string): number {
    return this.histLen;
  }

  closeSession(_sessionId?: string): void {
    void this.dispose();
  }

  async dispose(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.hist = new Float32Array(0);
    await this.current.dispose().catch(() => undefined);
  }

  // ---- internals ----

  private emit(e: FaultEvent): void {
    this.events.push(e);
    tell(this.o.onEvent, e);
  }

  /** A finished re-route: from `old` to `stage`, with where its time went. */
  private emitReroute(
    old: RouteStage,
    stage: RouteStage,
    method: 'replay' | 'transfer',
    replayedTokens: number,
    ms: { diagnoseMs: number; openMs: number; replayMs: number },
  ): void {
    this.emit({
      type: 'reroute',
      at: Date.now(),
      sessionId: this.o.sessionId,
      routeSessionId: stage.sessionId,
      from: refs(old.hops),
      to: refs(stage.hops),
      method,
      replayedTokens,
      recoveryMs: round(ms.diagnoseMs + ms.openMs + ms.replayMs),
      diagnoseMs: round(ms.diagnoseMs),
      openMs: round(ms.openMs),
      replayMs: round(ms.replayMs),
    });
  }

  private record(pos: number, hidden: Float32Array): void {
    const dim = this.config.dim;
    const need = pos * dim + hidden.length;
    if (need > this.hist.length) {
      const grown = new Float32Array(Math.max(need, this.hist.length * 2, 64 * dim));
      grown.set(this.hist.subarray(0, this.histLen * dim));
      this.hist = grown;
    }
    this.hist.set(hidden, pos * dim);
    this.histLen = pos + hidden.length / dim;
  }

  /** How long a step of n tokens may take before it counts as lost. */
  private limitMs(nTokens: number, replay: boolean): number {
    const deadline = replay ? undefined : this.o.deadlineMs;
    // a decode step under a deadline gets exactly its budget; the hops refuse work that cannot fit
    if (deadline !== undefined && nTokens === 1) return Math.ceil(deadline + this.graceMs);
    // many tokens (prefill, replay) or no deadline: a multiple of the route's own estimate
    const est = ESTIMATE_SAFETY * Math.max(0, this.estimate.estimatedMs) * nTokens;
    return Math.ceil(Math.max(deadline ?? 0, est, this.o.minStepMs ?? 250) + this.graceMs);
  }

  private brokenRoute(): RouteStage | undefined {
    return this.broken?.stage;
  }

  /**
   * A provisional output's check failed (settled rejected): nothing from it was released, and
   * the caller runs the step again. Mark the route broken so that next forward re-routes first,
   * and close it now, so a step already sent on it fails at once instead of running on.
   */
  private watchSettled(stage: RouteStage, settled: Promise<void>): Promise<void> {
    const watched = settled.catch((e: unknown) => {
      if (e instanceof RouteError && !this.closed && stage === this.current && !this.broken) {
        this.broken = { err: e, stage };
        void stage.dispose().catch(() => undefined);
      }
      throw e;
    });
    watched.catch(() => undefined); // the caller awaits it; a step abandoned meanwhile must not crash the process
    return watched;
  }

  /** The first route did not come up (eager open): another one, as openResilientRoute would pick it. */
  private async reopen(failed: RouteStage, err: RouteError): Promise<void> {
    const first = this.opening!;
    const detectedAt = Date.now();
    const v = excludeAfterOpenFailure(
      err,
      failed.hops,
      { named: first.exclude, unnamed: first.exclude, stale: first.stale },
      this.o.bans,
      this.o.disputes,
    );
    this.emit(openFailureEvent(this.o.sessionId, 0, err, v, failed.hops, detectedAt));
    const next = await openFirstRoute(this.o, first, first.attempt + 1, (e) => this.emit(e), err);
    first.attempt = next.attempt;
    this.current = next.stage;
    this.estimate = next.route;
  }

  /** One step on `stage`, lost when its result (and, with accountability, its receipts' check) takes longer than its budget. */
  private async step(stage: RouteStage, input: StageInput, replay: boolean): Promise<StageOutput> {
    const limit = this.limitMs(input.nTokens, replay);
    // a long input goes as pipelined chunks (chunked-steps.ts); the budget covers all of them
    const chunk = replay ? (this.o.replayChunk ?? REPLAY_CHUNK) : (this.o.promptChunk ?? PROMPT_CHUNK);
    const fwd = forwardInChunks(stage, input, { chunk: chunk > 0 ? chunk : input.nTokens, inFlight: CHUNKS_IN_FLIGHT });
    fwd.catch(() => undefined); // still pending when the timer wins; rejected at teardown
    // eager open: this step went right behind the OPEN; its budget starts once the route is up
    // (the open has its own time-out, and its failure is the open's)
    if (!stage.isUp) await stage.ready;
    let timer: NodeJS.Timeout | undefined;
    const armedAt = performance.now();
    const lost = new Promise<never>((_, reject) => {
      // a timer that fires late finds the event loop was busy: a result may have arrived
      // meanwhile, unread; one turn of I/O first (it wins the race if it is there)
      timer = setTimeout(() => {
        const lateMs = performance.now() - armedAt - limit;
        setImmediate(() =>
          reject(
            new LostStepError(
              `no result for ${input.nTokens} token(s) at position ${input.pos} within ${limit} ms (budget + ${this.graceMs} ms grace)`,
              lateMs,
            ),
          ),
        );
      }, limit);
    });
    lost.catch(() => undefined);
    let out: StageOutput;
    try {
      const { chunks, ...whole } = await Promise.race([fwd, lost]);
      this.timeline = chunks.length === 1 ? chunks[0]!.timeline : mergeTimelines(chunks.map((c) => c.timeline));
      out = whole;
    } catch (e) {
      clearTimeout(timer);
      throw e;
    }
    if (!out.settled) {
      clearTimeout(timer);
      return out;
    }
    // the same budget covers the receipts: a last hop that holds them back loses the step
    const settled = Promise.race([out.settled, lost]).finally(() => clearTimeout(timer));
    settled.catch(() => undefined);
    return { ...out, settled };
  }

  /** After a successful step: did one hop make the route miss its deadline again? */
  private watchSlack(): void {
    const tl = this.timeline;
    if (!tl.length || tl.some((t) => t.budgetInMs < 0)) return;
    if (tl[tl.length - 1]!.slackMs >= 0) {
      this.misses.clear();
      return;
    }
    const worst = this.dominantHop(tl);
    if (!worst) return;
    const n = (this.misses.get(worst) ?? 0) + 1;
    this.misses.clear();
    this.misses.set(worst, n);
    if (n >= (this.o.missLimit ?? 3)) this.slowPeer = worst;
  }

  /** the hop that used the most of its budget in a timeline */
  private dominantHop(tl: readonly HopTiming[]): string | undefined {
    let best: string | undefined;
    let most = -Infinity;
    for (const t of tl) {
      const used = t.budgetInMs >= 0 ? t.budgetInMs - t.slackMs : t.queueMs + t.computeMs + t.sendMs;
      if (used > most) {
        most = used;
        best = t.peerId;
      }
    }
    return best;
  }

  private async diagnose(err: RouteError, route: RouteStage): Promise<Diagnosis> {
    const hops = route.hops;
    const named = err.peerId && hops.some((h) => h.peerId === err.peerId) ? err.peerId : undefined;
    const a = accusation(err);
    // a hop accusing this gateway (the only peer off the route it may name) says what we know is false
    if (a && !named) return { culprits: [a.accuser], ban: [a.accuser], suspects: [], how: 'error_reply' };
    if (a) {
      // one hop's word against its neighbour's: both avoided; banned only by the disputes' rule
      const banned = this.o.disputes?.dispute(a.accuser, a.accused, err.message, siteOf(a, hops)) ?? [];
      return { culprits: banned, ban: [], banned, suspects: [a.accused, a.accuser], how: 'dispute', disputed: [a.accuser, a.accused] };
    }
    if (err.code === 'remote_error' && named) {
      // a hop answered with an error about its own work
      // kv-transfer: a leaving node (no replacement found) is not at fault: avoid, do not ban
      if (err.remoteCode === 'busy' || err.remoteCode === 'draining')
        return { culprits: [named], ban: [], suspects: [named], how: 'error_reply' };
      if (err.remoteCode === 'unknown_session' || err.remoteCode === 'closed')
        return { culprits: [], ban: [], suspects: [], how: 'error_reply' };
      return { culprits: [named], ban: [named], suspects: [], how: 'error_reply' };
    }
    if (err.code === 'deadline') {
      // the reporter could not fit its work in what was left; whoever used the most is suspect too
      const s = new Set([named, this.dominantHop(route.lastTimeline)].filter((p): p is string => !!p));
      return { culprits: [...s], ban: [], suspects: [...s], how: 'slack' };
    }
    // a dead peer fails at once (connection refused); a live one may be inside a long forward
    // that blocks its event loop, so it gets the whole grace to answer
    const probeMs = this.graceMs;
    const dead = await unreachablePeers(this.o.routes.host, hops, probeMs);
    if (dead.length) return { culprits: dead, ban: dead, suspects: [], how: 'ping' };
    const silent = await silentPeers(this.o.routes, hops, {
      modelId: this.o.modelId,
      config: this.config,
      timeoutMs: this.graceMs + Math.ceil(ESTIMATE_SAFETY * this.estimate.estimatedMs),
    });
    if (silent.length) return { culprits: silent, ban: silent, suspects: [], how: 'probe' };
    if (named && err.code === 'bad_reply') return { culprits: [named], ban: [named], suspects: [], how: 'error_reply' };
    // every hop answers now: a hop that drops running sessions' steps but serves fresh ones, a
    // link, or a passing stall. This request prefers other nodes (any will do); the gateway
    // doubts them all and bans a peer that alone explains several such failures
    // (routing/unexplained.ts), unless its own timer fired too late to tell (its event loop was
    // busy: the failure may be this gateway's)
    const peers = hops.map((h) => h.peerId);
    const ownLag = err instanceof LostStepError && err.lateMs > LATE_TIMER_MS;
    const banned = ownLag ? [] : (this.o.unexplained?.failed(peers, err.message) ?? []);
    return { culprits: banned, ban: [], banned, suspects: peers, how: 'unknown' };
  }

  private plan(need: number | undefined): Route {
    const tries = [new Set([...this.failed, ...this.suspects]), this.failed];
    let last: unknown;
    for (const exclude of tries) {
      try {
        return this.o.planner.route({ exclude: new Set(exclude), needKvTokens: need });
      } catch (e) {
        if (!(e instanceof NoRouteError)) throw e;
        last = e;
      }
    }
    throw last;
  }

  /** Replace the current route after `err`; on return the new route holds positions 0..pos-1. */
  private async recover(err: RouteError, pos: number, forced?: Diagnosis): Promise<void> {
    const sid = this.o.sessionId;
    const max = this.o.maxRecoveries ?? 4;
    const giveUp = (e: Error): never => {
      this.emit({ type: 'gave_up', at: Date.now(), sessionId: sid, pos, message: e.message });
      throw e;
    };
    if (this.recoveries >= max) {
      giveUp(new RouteError(`${err.message} (gave up after ${max} re-routes)`, err.code, err.peerId, err.remoteCode));
    }
    this.recoveries++;
    const detectedAt = Date.now();
    const t0 = performance.now();
    const old = this.current;
    const d = forced ?? (await this.diagnose(err, old));
    this.emit({
      type: 'failure',
      at: Date.now(),
      detectedAt,
      sessionId: sid,
      pos,
      code: forced ? 'slow' : failureCode(err),
      message: err.message,
      reportedPeer: err.peerId,
      culprits: d.culprits,
      diagnosis: d.how,
      ...(d.disputed ? { disputed: d.disputed } : {}),
      route: refs(old.hops),
    });
    for (const p of d.ban) {
      this.o.bans?.ban(p);
      this.failed.add(p);
    }
    for (const p of d.banned ?? []) this.failed.add(p);
    for (const p of d.suspects) this.suspects.add(p);
    void old.dispose().catch(() => undefined); // frees the session on the hops still alive
    const t1 = performance.now();

    // Each attempt opens a replacement (eagerly unless eagerOpen is false: the replay's first chunk
    // goes right behind the OPEN) and replays the history on it. A route that does not come up
    // (refused, an ERROR before OPENED, the open's time-out) is an open failure: its culprit is not
    // used again (banned when ban-worthy; none named: its hops become suspects) and the next
    // attempt follows. A route that came up and then failed is a failure of a working route.
    let stage: RouteStage | undefined;
    let lastErr: unknown = err;
    /** when the replacement in use came up (OPENED), performance.now() */
    let upAt = t1;
    for (let attempt = 0; attempt < 3 && !stage; attempt++) {
      if (this.closed) giveUp(new RouteError(`route for session ${sid} was closed during recovery`, 'unreachable'));
      let route: Route;
      try {
        route = this.plan(this.o.maxTokens);
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        const culprit = d.culprits.length ? ` after ${d.culprits.join(', ')} failed` : '';
        giveUp(
          e instanceof NoRouteError
            ? new NoRouteError(`cannot re-route session${culprit} (${err.code}): ${why}`, e.uncovered)
            : (e as Error),
        );
        return;
      }
      let opened: RouteStage | undefined;
      try {
        opened = await openRoute(this.o, route.hops, `${sid}.r${this.recoveries}${attempt ? `.${attempt}` : ''}`, this.failed, {
          openTimeoutMs: 5_000 + this.graceMs,
        });
        void opened.ready.then(
          () => (upAt = performance.now()),
          () => undefined,
        );
        this.current = opened;
        this.estimate = route;
        this.misses.clear();
        await this.replay(opened, pos);
        stage = opened;
      } catch (e) {
        if (opened && !opened.openError) {
          // the replacement came up and failed during the replay: bounded by maxRecoveries
          if (!(e instanceof RouteError) || this.closed) throw e;
          return this.recover(e, pos);
        }
        lastErr = e;
        const failedAt = Date.now();
        const v = excludeAfterOpenFailure(
          e,
          route.hops,
          { named: this.failed, unnamed: this.suspects, stale: this.staleSpares },
          this.o.bans,
          this.o.disputes,
        );
        this.emit(openFailureEvent(sid, pos, e, v, route.hops, failedAt));
      }
    }
    if (!stage) {
      giveUp(lastErr instanceof Error ? lastErr : new RouteError(String(lastErr), 'unreachable'));
      return;
    }
    const t3 = performance.now();
    // eager: the replay overlaps the open; openMs runs to OPENED (failed attempts included), replayMs from there
    this.emitReroute(old, stage, 'replay', pos, { diagnoseMs: t1 - t0, openMs: upAt - t1, replayMs: t3 - upAt });
  }

  /**
   * kv-transfer: a hop is leaving and handed its sessions' KV caches to a replacement
   * ('draining' error naming it). Open the same route with only that hop swapped, every hop
   * starting from the old session's cache (resumeFrom), so nothing is replayed. False when
   * the notice is unusable or the new route does not open: the caller then re-routes with replay.
   */
  private async transfer(err: RouteError, pos: number): Promise<boolean> {
    const old = this.current;
    const i = old.hops.findIndex((h) => h.peerId === err.peerId);
    if (i < 0 || err.detail?.resumeFrom !== old.sessionId) return false;
    // only to a spare this route offered for those layers, still in use (offered-replacement.ts)
    const rep = offeredReplacement(
      err.detail.replacement,
      old.hops[i]!,
      old.spares,
      (p) => this.failed.has(p) || !!this.o.bans?.isBanned(p),
    );
    if (!rep) return false;
    if (this.recoveries >= (this.o.maxRecoveries ?? 4)) return false;
    this.recoveries++;
    const sid = this.o.sessionId;
    const t0 = performance.now();
    this.emit({
      type: 'failure',
      at: Date.now(),
      detectedAt: Date.now(),
      sessionId: sid,
      pos,
      code: 'draining',
      message: err.message,
      reportedPeer: err.peerId,
      culprits: [],
      diagnosis: 'drain',
      route: refs(old.hops),
    });
    this.failed.add(err.peerId!); // leaving: not banned, but not used again by this session
    const hops = old.hops.map((h, j) => (j === i ? rep : h));
    let stage: RouteStage;
    try {
      // after OPENED: the old route must stay until the new hops copied its caches
      stage = await openRoute(this.o, hops, `${sid}.t${this.recoveries}`, this.failed, {
        openTimeoutMs: 5_000 + this.graceMs,
        resumeFrom: old.sessionId,
        eager: false,
      });
    } catch {
      return false;
    }
    const t1 = performance.now();
    this.current = stage;
    this.misses.clear();
    void old.dispose().catch(() => undefined); // after the new route copied the caches
    this.emitReroute(old, stage, 'transfer', 0, { diagnoseMs: 0, openMs: t1 - t0, replayMs: 0 });
    return true;
  }

  /** Rebuild the new route's KV caches: re-send positions 0..pos-1 as a prefill. */
  private async replay(stage: RouteStage, pos: number): Promise<void> {
    const dim = this.config.dim;
    // a replay is many tokens in one step: the per-token deadline does not apply to it
    stage.deadlineMs = undefined;
    try {
      if (pos > 0) {
        // in modest chunks (CPU-bound hops block their event loop for a whole step), pipelined;
        // only the hops' caches matter: the last hop sends one row back per chunk
        const out = await this.step(
          stage,
          { sessionId: stage.sessionId, pos: 0, nTokens: pos, hidden: this.hist.subarray(0, pos * dim), lastRow: true },
          true,
        );
        await out.settled; // the replacement's receipts hold before it is used
      }
      await stage.ready; // nothing to replay (pos 0): an eager route is up before it is used
    } finally {
      stage.deadlineMs = this.o.deadlineMs;
    }
  }
}

export interface OpenResilientRouteOptions extends ResilientRouteOptions {
  /** attempts to open the first route (default 3) */
  openAttempts?: number;
  /** the request was abandoned: stop trying */
  signal?: AbortSignal;
}

/**
 * Pick a route with the planner and open it, retrying around peers that fail to open (banned
 * when banWorthy). Throws the planner's NoRouteError when there is no route at all, else the
 * last open failure.
 */
export async function openResilientRoute(o: OpenResilientRouteOptions): Promise<ResilientRoute> {
  const exclude = new Set<string>();
  const stale = new Set<string>();
  const first = await openFirstRoute(o, { exclude, stale }, 0, (e) => tell(o.onEvent, e));
  return new ResilientRoute(first.stage, first.route, o, o.eagerOpen === false ? undefined : { exclude, stale, attempt: first.attempt });
}

/** The first route's open in progress (eager): peers excluded so far, and the attempt it is. */
interface FirstOpen {
  exclude: Set<string>;
  /** peers whose spare stream was closed under an OPEN of this request once already (staleSpare) */
  stale: Set<string>;
  attempt: number;
}

/** Open a route over `hops` (eagerly unless o.eagerOpen or `extra` says not), offering spares that avoid `avoid`. */
function openRoute(
  o: Omit<ResilientRouteOptions, 'onEvent'>,
  hops: readonly Hop[],
  sessionId: string,
  avoid: ReadonlySet<string>,
  extra?: Pick<OpenRouteOptions, 'openTimeoutMs' | 'resumeFrom' | 'eager'>,
): Promise<RouteStage> {
  return o.routes.open({
    modelId: o.modelId,
    config: o.config,
    hops: hops.map((h) => ({ peerId: h.peerId, addrs: h.addrs, start: h.start, end: h.end })),
    sessionId,
    deadlineMs: o.deadlineMs,
    maxTokens: o.maxTokens,
    verifier: o.verifier,
    spares: spareHops(o.planner, hops, avoid), // kv-transfer
    eager: o.eagerOpen !== false,
    ...extra,
  });
}

/**
 * Attempts `from`.. of the first route: pick one avoiding `exclude`, open it (eagerly unless
 * o.eagerOpen is false), each failed open told to `emit`. Throws the last open failure
 * (`lastErr` when no attempt is left).
 */
async function openFirstRoute(
  o: Omit<OpenResilientRouteOptions, 'onEvent'>,
  { exclude, stale }: Pick<FirstOpen, 'exclude' | 'stale'>,
  from: number,
  emit: (e: FailureEvent) => void,
  lastErr?: unknown,
): Promise<{ stage: RouteStage; route: Route; attempt: number }> {
  for (let attempt = from; attempt < (o.openAttempts ?? 3); attempt++) {
    if (o.signal?.aborted) throw new RouteError('request aborted before the route opened', 'timeout');
    let route: Route;
    try {
      route = o.planner.route({ exclude, needKvTokens: o.maxTokens });
    } catch (e) {
      // every candidate is excluded after failed opens: the open failure is the news
      throw lastErr ?? e;
    }
    try {
      const stage = await openRoute(o, route.hops, attempt ? `${o.sessionId}.${attempt}` : o.sessionId, exclude);
      return { stage, route, attempt };
    } catch (e) {
      lastErr = e;
      const detectedAt = Date.now();
      const v = excludeAfterOpenFailure(e, route.hops, { named: exclude, unnamed: exclude, stale }, o.bans, o.disputes);
      emit(openFailureEvent(o.sessionId, 0, e, v, route.hops, detectedAt));
    }
  }
  throw lastErr;
}

/** A fault event to `onEvent`: a listener's problem is not the session's. */
function tell(onEvent: ((e: FaultEvent) => void) | undefined, e: FaultEvent): void {
  try {
    onEvent?.(e);
  } catch {
    /* ignored */
  }
}

/** A failure event's code: the remote ERROR's code for a remote error, else the RouteError's. */
const failureCode = (e: RouteError): string => (e.code === 'remote_error' && e.remoteCode ? e.remoteCode : e.code);

/** The failure event of a route that did not open: `err`, and what excludeAfterOpenFailure decided (`v`). */
function openFailureEvent(
  sessionId: string,
  pos: number,
  err: unknown,
  v: OpenFailureVerdict,
  hops: readonly Hop[],
  detectedAt: number,
): FailureEvent {
  const re = err instanceof RouteError ? err : undefined;
  return {
    type: 'failure',
    at: Date.now(),
    detectedAt,
    sessionId,
    pos,
    code: re ? failureCode(re) : 'error',
    message: err instanceof Error ? err.message : String(err),
    ...(re?.peerId ? { reportedPeer: re.peerId } : {}),
    culprits: v.culprits,
    diagnosis: v.diagnosis,
    ...(v.disputed ? { disputed: v.disputed } : {}),
    open: true,
    route: refs(hops),
  };
}

/** kv-transfer: for each hop, other nodes with exactly its layers (where a draining hop may hand its sessions) */
export function spareHops(planner: RoutePlanner, hops: readonly Hop[], avoid: ReadonlySet<string>): Hop[] {
  const out = new Map<string, Hop>();
  for (const h of hops) {
    try {
      const alt = planner.route({ exclude: new Set([...avoid, h.peerId]) });
      for (const a of alt.hops)
        if (a.start === h.start && a.end === h.end) out.set(a.peerId, { peerId: a.peerId, addrs: a.addrs, start: a.start, end: a.end });
    } catch {
      /* no other node covers it: a leaving node then falls back to the DHT, or the route replays */
    }
  }
  return [...out.values()];
}
