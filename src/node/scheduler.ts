// The node's step scheduler (continuous batching, vLLM style): one loop that repeatedly
// schedules → executes → updates. Each iteration takes, in earliest-deadline-first order, the
// pending steps of all sessions — a decode step as its one token, a prompt as a chunk of at
// most `chunkTokens` — until the per-iteration token budget is spent, and runs them as ONE
// batched forward pass (Stage.forwardBatch). A long prompt therefore advances one chunk per
// iteration beside everyone's decode tokens instead of stalling them. A step whose deadline
// cannot be met is refused before it costs anything: a new session's first step with `busy`
// when only the node's current load stands in the way (it takes on no session it cannot serve
// in time, rather than slowing everyone), anything else with `deadline`. KV memory is
// admitted per session at OPEN (sessions.ts, by free KV tokens). Audit
// re-executions run alone between iterations (exclusive), one per iteration at most.

import { performance } from 'node:perf_hooks';
import { EngineError, type Stage, type StageInput, type StageOutput } from '../engine/types.js';
import { concatF32 } from '../util/concat-f32.js';
import type { ErrorCode } from '../protocol/messages.js';
import type { PerfMeter } from './perf.js';

export interface SchedulerOptions {
  stage: Stage;
  perf: PerfMeter;
  /** tokens one iteration processes across all sessions (default 64) */
  tokenBudget?: number;
  /** longest prompt chunk one session contributes to an iteration (default 32) */
  chunkTokens?: number;
  /** sessions in one batch (default 64) */
  maxBatch?: number;
  /** this node's name in refusals */
  self?: string;
  /** after each iteration: sessions' steps and tokens in its forward pass, and its ms (metrics) */
  onIteration?(sessions: number, tokens: number, ms: number): void;
  /**
   * sessions open on this node: with more than one, an idle scheduler starts its next iteration
   * only once the I/O in hand is handled (setImmediate), so the steps that arrived together (a
   * batched upstream hop sends its outputs in one write) run together; with one, at once
   */
  sessions?(): number;
}

/** One session step waiting for compute. */
export interface StepWork {
  sessionId: string;
  pos: number;
  nTokens: number;
  hidden: Float32Array;
  /** when the step arrived (performance.now()) */
  recvAt: number;
  /** the latest time its output may leave this node (performance.now()); Infinity: none */
  deadline: number;
  /** the session's first step: refused with `busy` rather than `deadline` */
  first: boolean;
  /** only the last position's output is wanted (StageInput.lastRow): every chunk returns its last row, the last chunk's is the step's */
  lastRow?: boolean;
}

export type StepResult = { out: StageOutput; queueMs: number; batch: number } | { error: [ErrorCode, string] };

interface Pending {
  w: StepWork;
  done: number;
  parts: Float32Array[];
  computeMs: number;
  startAt?: number;
  /** most sessions it shared an iteration with */
  batch: number;
  resolve(r: StepResult): void;
}

interface Late {
  needMs: number;
  leftMs: number;
  /** it would fit on an idle node */
  load: boolean;
}

interface Exclusive {
  run(): Promise<void>;
}

export class StepScheduler {
  private readonly queue: Pending[] = [];
  private readonly exclusives: Exclusive[] = [];
  private running = false;
  private readonly budget: number;
  private readonly chunk: number;
  private readonly maxBatch: number;
  /** iterations run, and sessions summed over them (mean batch = sessions / iterations) */
  readonly stats = { iterations: 0, sessions: 0, tokens: 0, refused: 0 };

  constructor(private readonly o: SchedulerOptions) {
    this.budget = Math.max(1, o.tokenBudget ?? 64);
    this.chunk = Math.max(1, Math.min(o.chunkTokens ?? 32, this.budget));
    this.maxBatch = Math.max(1, o.maxBatch ?? 64);
  }

  /** steps waiting or in the current iteration */
  get pending(): number {
    return this.queue.length;
  }

  /** Queues a step; resolves when all its tokens are computed (or it is refused). */
  submit(w: StepWork): Promise<StepResult> {
    return new Promise<StepResult>((resolve) => {
      const p: Pending = { w, done: 0, parts: [], computeMs: 0, batch: 0, resolve };
      const late = this.lateBy(p, performance.now());
      if (late) return resolve(this.refuse(p, late));
      this.queue.push(p);
      this.kick();
    });
  }

  /** Runs `fn` alone, between two iterations (audit re-executions). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.exclusives.push({ run: () => fn().then(resolve, reject) });
      this.kick();
    });
  }

  /**
   * Expected ms until `p` would be done if queued now, or undefined when it fits its deadline.
   * Iterations are costed at the measured step time; the steps ahead of it (earlier deadline)
   * delay it only by the budget they use up, since decode tokens share its iterations.
   */
  private lateBy(p: Pending, now: number): Late | undefined {
    if (!Number.isFinite(p.w.deadline)) return undefined;
    const perf = this.o.perf;
    let aheadTokens = 0;
    for (const q of this.queue) if (q !== p && q.w.deadline <= p.w.deadline) aheadTokens += q.w.nTokens - q.done;
    const mine = p.w.nTokens - p.done;
    const iterations = Math.ceil(mine / this.chunk) + Math.floor(aheadTokens / this.budget);
    const perIter = mine > 1 ? perf.expectedMs(Math.min(mine, this.chunk)) : perf.expectedMs(1);
    const perStep = Math.max(perIter, perf.expectedMs(1));
    const needMs = iterations * perStep + (this.running ? perf.expectedMs(1) : 0);
    const leftMs = p.w.deadline - now;
    if (needMs <= leftMs) return undefined;
    return { needMs, leftMs, load: Math.ceil(mine / this.chunk) * perStep <= leftMs };
  }

  /** `busy` for a new session the node could serve in time were it not for the work it has;
   *  `deadline` for anything else that cannot make it */
  private refuse(p: Pending, late: Late): StepResult {
    this.stats.refused++;
    const on = this.o.self ? ` on ${this.o.self}` : '';
    const msg = `remaining budget ${late.leftMs.toFixed(1)} ms < expected ${late.needMs.toFixed(1)} ms${on}`;
    if (p.w.first && late.load) return { error: ['busy', `cannot take a new session within its deadline under the current load: ${msg}`] };
    return { error: ['deadline', msg] };
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    // the loop runs on its own: callers only wait on their own step's promise. Other sessions'
    // steps that came in the same read are still being decoded (a message each, one after the
    // other): with more than one session open, start once they are queued, not with the first
    if ((this.o.sessions?.() ?? 1) > 1) setImmediate(() => void this.loop());
    else void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      while (this.queue.length > 0 || this.exclusives.length > 0) {
        const ex = this.exclusives.shift();
        if (ex) await ex.run().catch(() => {});
        if (this.queue.length > 0) await this.iterate();
      }
    } finally {
      this.running = false;
      // anything queued while the loop was winding down
      if (this.queue.length > 0 || this.exclusives.length > 0) this.kick();
    }
  }

  /** schedule → execute → update, once */
  private async iterate(): Promise<void> {
    const now = performance.now();
    // schedule: earliest deadline first (arrival breaks ties); refuse what can no longer make it
    this.queue.sort((a, b) => a.w.deadline - b.w.deadline || a.w.recvAt - b.w.recvAt);
    const batch: { p: Pending; n: number }[] = [];
    let tokens = 0;
    for (let i = 0; i < this.queue.length && batch.length < this.maxBatch && tokens < this.budget; i++) {
      const p = this.queue[i]!;
      if (p.done === 0) {
        // about to start: only its own iterations stand between it and its deadline now
        const perIter = Math.max(this.o.perf.expectedMs(Math.min(p.w.nTokens, this.chunk)), this.o.perf.expectedMs(1));
        const needMs = Math.ceil(p.w.nTokens / this.chunk) * perIter;
        if (needMs > p.w.deadline - now) {
          this.queue.splice(i--, 1);
          p.resolve(this.refuse(p, { needMs, leftMs: p.w.deadline - now, load: false }));
          continue;
        }
      }
      const n = Math.min(p.w.nTokens - p.done, this.chunk, this.budget - tokens);
      batch.push({ p, n });
      tokens += n;
    }
    if (batch.length === 0) return;
    // execute
    const inputs: StageInput[] = batch.map(({ p, n }) => {
      const dim = this.o.stage.config.dim;
      const whole = p.done === 0 && n === p.w.nTokens;
      return {
        sessionId: p.w.sessionId,
        pos: p.w.pos + p.done,
        nTokens: n,
        hidden: whole ? p.w.hidden : p.w.hidden.subarray(p.done * dim, (p.done + n) * dim),
        ...(p.w.lastRow ? { lastRow: true } : {}),
      };
    });
    const t0 = performance.now();
    for (const { p } of batch) p.startAt ??= t0;
    const results = await this.execute(inputs);
    const ms = performance.now() - t0;
    this.stats.iterations++;
    this.stats.sessions += batch.length;
    this.stats.tokens += tokens;
    this.o.onIteration?.(batch.length, tokens, ms);
    // what one iteration costs is what a step waits: pure decode iterations teach the decode
    // figure, a lone prompt chunk the prefill figure
    if (tokens === batch.length) this.o.perf.record(1, ms);
    else if (batch.length === 1) this.o.perf.record(tokens, ms);
    // update
    batch.forEach(({ p, n }, j) => {
      const r = results[j]!;
      if (r instanceof Error) {
        this.remove(p);
        p.resolve({ error: engineError(r) });
        return;
      }
      p.computeMs += r.computeMs ?? ms;
      p.batch = Math.max(p.batch, batch.length);
      if (r.hidden) {
        if (p.w.lastRow) p.parts[0] = r.hidden;
        else p.parts.push(r.hidden);
      }
      p.done += n;
      if (p.done < p.w.nTokens) return;
      this.remove(p);
      const hidden = p.parts.length === 1 ? p.parts[0] : concatF32(p.parts);
      p.resolve({ out: { hidden, computeMs: p.computeMs }, queueMs: p.startAt! - p.w.recvAt, batch: p.batch });
    });
  }

  /** one batched pass; when it fails, each step alone, so one bad step fails only itself */
  private async execute(inputs: StageInput[]): Promise<(StageOutput | Error)[]> {
    const stage = this.o.stage;
    if (inputs.length > 1 && stage.forwardBatch) {
      try {
        return await stage.forwardBatch(inputs);
      } catch {
        /* isolate below */
      }
    }
    const out: (StageOutput | Error)[] = [];
    for (const inp of inputs) out.push(await stage.forward(inp).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e)))));
    return out;
  }

  private remove(p: Pending): void {
    const i = this.queue.indexOf(p);
    if (i >= 0) this.queue.splice(i, 1);
  }
}

function engineError(e: Error): [ErrorCode, string] {
  const code: ErrorCode =
    e instanceof EngineError ? (e.code === 'capacity' ? 'busy' : e.code === 'internal' ? 'engine' : 'bad_message') : 'engine';
  return [code, e.message];
}
