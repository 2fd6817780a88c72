// The generation loop: prefill the prompt in chunks, then decode one token at a time through a
// pipeline of stages, sampling each next token, streaming text, and stopping on stop tokens,
// stop strings, the token limit or an abort signal.
// A stage's output may be provisional (a remote route whose receipts are still being checked):
// the loop then computes on ahead and releases each token only once its step's verdict is in.

import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { closePipelineSession, forwardPipeline, validatePipeline, type PipelineStep } from './pipeline.js';
import { Sampler, type Pick, type SamplingParams, type TokenConstraint, type TokenLogprob } from './sampling.js';
import { EngineError, type Stage } from './types.js';

/** What the loop needs from a tokenizer (a subset of src/tokenizer's Tokenizer). */
export interface GenTokenizer {
  readonly stopIds: number[];
  createStreamDecoder(): { push(id: number): string; flush(): string };
}

export interface GenerateOptions {
  maxTokens: number;
  sampling: SamplingParams;
  /** stop strings: generation ends when the text contains one; it is not part of the result */
  stop?: string[];
  /** session id used on every stage (default: a fresh UUID); the session is closed at the end */
  sessionId?: string;
  /** keep the session open on the stages afterwards (default false) */
  keepSession?: boolean;
  signal?: AbortSignal;
  /** prompt tokens per prefill forward (default 64) */
  prefillChunk?: number;
  /** also return the logits at the last prompt position */
  returnPromptLogits?: boolean;
  onToken?: (t: TokenEvent) => void;
  /** restricts the tokens drawn (structured output); generation stops when it is done */
  constraint?: TokenConstraint;
  /** give every event its token's log-probability and this many top alternatives (0..20) */
  logprobs?: number;
  /** drawn tokens that may wait for their logits' verdict while later steps run (provisional
   *  outputs; default PIPELINE_DEPTH; 0: a step goes out only after the previous one's verdict) */
  pipelineDepth?: number;
}

export interface TokenEvent {
  id: number;
  /** text released at this step (may be empty while a possible stop string is held back) */
  text: string;
  /** 0-based index of the generated token */
  step: number;
  /** ms from the previous token (or from the end of prefill for step 0) */
  stepMs: number;
  /** input position of the forward whose logits gave this token (its stages' timings are that forward's) */
  pos: number;
  /** with opts.logprobs: the token's log-probability and the most likely alternatives */
  logprob?: number;
  top?: TokenLogprob[];
}

export type FinishReason = 'stop' | 'length' | 'abort';

/** re-runs of steps whose provisional output was rejected, per generation, before the rejection is the caller's */
export const MAX_REDO = 8;

/**
 * drawn tokens that may wait at once for their logits' verdict (a route's receipts): with the
 * step in flight, 4 steps' receipts outstanding, which a node runs ahead of its own receipt
 * work without waiting (src/node/executor.ts MAX_RECEIPT_LAG)
 */
export const PIPELINE_DEPTH = 3;

const yes = (): boolean => true;
const no = (): boolean => false;

/** a token drawn, not yet released */
interface Held {
  step: number;
  pick: Pick;
  /** input of the forward whose logits it was drawn from (to run it again) */
  pos: number;
  tokens?: Int32Array;
  /** those logits' verdict, when provisional */
  settled?: Promise<void>;
  /** the sampler and the history before the draw */
  mark: ReturnType<Sampler['mark']>;
  history: number;
  /** the step after it was sent already */
  sent: boolean;
}

export interface StageStats {
  start: number;
  end: number;
  embed: boolean;
  head: boolean;
  profile: string;
  /** total compute ms reported by the stage during prefill */
  prefillMs: number;
  /** mean compute ms per decode forward (0 when there was none) */
  decodeMsPerToken: number;
}

export interface GenerateTimings {
  prefillMs: number;
  /** total decode time: forwards after the prefill plus sampling */
  decodeMs: number;
  /** decodeMs / (generated tokens - 1); the first token comes from the prefill */
  msPerToken: number;
  /** generated tokens per second of decode time */
  tokensPerS: number;
  totalMs: number;
}

export interface GenerateResult {
  tokens: number[];
  text: string;
  finishReason: FinishReason;
  /** the stop string or stop token id that ended generation */
  stoppedBy?: string | number;
  promptTokens: number;
  seed: number;
  timings: GenerateTimings;
  stages: StageStats[];
  promptLogits?: Float32Array;
}

/** Holds back text that might be the start of a stop string; finds the first full match. */
export class StopMatcher {
  private held = '';

  constructor(private stops: string[]) {
    this.stops = stops.filter((s) => s.length > 0);
  }

  /** add text; returns the text safe to release and, when a stop string matched, which one */
  push(text: string): { release: string; stop?: string } {
    this.held += text;
    let at = -1;
    let which: string | undefined;
    for (const s of this.stops) {
      const i = this.held.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) {
        at = i;
        which = s;
      }
    }
    if (which !== undefined) {
      const release = this.held.slice(0, at);
      this.held = '';
      return { release, stop: which };
    }
    // keep the longest suffix that is a prefix of some stop string
    let keep = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, this.held.length); k > keep; k--) {
        if (this.held.endsWith(s.slice(0, k))) {
          keep = k;
          break;
        }
      }
    }
    const release = this.held.slice(0, this.held.length - keep);
    this.held = this.held.slice(this.held.length - keep);
    return { release };
  }

  /** end of generation without a match: everything held is ordinary text */
  flush(): string {
    const r = this.held;
    this.held = '';
    return r;
  }
}

/**
 * Streams generated tokens; the iterator's return value (done: true) is the full result.
 * `for await` loops see only the events; use generate() for the result.
 */
export async function* generateStream(
  pipeline: Stage[],
  tokenizer: GenTokenizer,
  promptIds: number[],
  opts: GenerateOptions,
): AsyncGenerator<TokenEvent, GenerateResult, void> {
  validatePipeline(pipeline);
  const cfg = pipeline[0].config;
  if (promptIds.length === 0) throw new EngineError('empty prompt: need at least one token (usually BOS)', 'bad_input');
  if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 0)
    throw new EngineError(`max tokens must be a non-negative integer, got ${opts.maxTokens}`, 'bad_input');
  if (promptIds.length >= cfg.contextLength) {
    throw new EngineError(`prompt of ${promptIds.length} tokens does not fit the context length ${cfg.contextLength}`, 'capacity');
  }
  const pipelineDepth = opts.pipelineDepth ?? PIPELINE_DEPTH;
  if (!Number.isInteger(pipelineDepth) || pipelineDepth < 0)
    throw new EngineError(`pipeline depth must be a non-negative integer, got ${opts.pipelineDepth}`, 'bad_input');
  // an output constraint follows released tokens only: nothing is drawn ahead of the last released one
  const aheadDepth = opts.constraint ? Math.min(1, pipelineDepth) : pipelineDepth;
  const sampler = new Sampler(opts.sampling);
  const chunk = opts.prefillChunk ?? 64;
  if (!Number.isInteger(chunk) || chunk < 1) throw new EngineError(`prefill chunk must be a positive integer, got ${chunk}`, 'bad_input');
  const sessionId = opts.sessionId ?? randomUUID();
  const stopIds = new Set(tokenizer.stopIds);
  const stopper = new StopMatcher(opts.stop ?? []);
  const decoder = tokenizer.createStreamDecoder();
  // the model cannot look past its context: cap the number of new tokens
  const maxTokens = Math.min(opts.maxTokens, cfg.contextLength - promptIds.length);

  const prefillStageMs = pipeline.map(() => 0);
  const decodeStageMs = pipeline.map(() => 0);
  let decodeForwards = 0;
  const tokens: number[] = [];
  const history = [...promptIds];
  let text = '';
  let finishReason: FinishReason = 'length';
  let stoppedBy: string | number | undefined;
  let promptLogits: Float32Array | undefined;

  const t0 = performance.now();
  let prefillMs = 0;
  try {
    // One forward through every stage. Its logits may be provisional (step.settled: a remote
    // route's receipts still on their way): then nothing drawn from them is released before they
    // settle, and a rejection runs the step again (the route has recovered by then), at most
    // MAX_REDO times in all.
    let redos = 0;
    const run = (pos: number, tokens: Int32Array) => forwardPipeline(pipeline, { sessionId, pos, tokens });
    const rejected = (e: unknown): void => {
      if (++redos > MAX_REDO || opts.signal?.aborted) throw e;
    };
    /** a forward whose output is final */
    const settledRun = async (pos: number, tokens: Int32Array): Promise<PipelineStep> => {
      for (;;) {
        const r = await run(pos, tokens);
        try {
          await r.settled;
          return r;
        } catch (e) {
          rejected(e);
        }
      }
    };

    // prefill: the chunks go out one after the other without waiting for their verdicts; a
    // rejected chunk and every one after it run again, each then awaited
    let logits: Float32Array | undefined;
    let logitsPos = 0;
    const verdicts: { pos: number; tokens: Int32Array; settled: Promise<void> }[] = [];
    for (let pos = 0; pos < promptIds.length; pos += chunk) {
      if (opts.signal?.aborted) break;
      logitsPos = pos;
      const tokens = Int32Array.from(promptIds.slice(pos, pos + chunk));
      const step = await run(pos, tokens);
      step.stageMs.forEach((ms, i) => (prefillStageMs[i] += ms));
      logits = step.logits;
      if (step.settled) verdicts.push({ pos, tokens, settled: step.settled });
    }
    for (let i = 0; i < verdicts.length; i++) {
      try {
        await verdicts[i]!.settled;
      } catch (e) {
        rejected(e);
        await Promise.allSettled(verdicts.slice(i + 1).map((v) => v.settled));
        for (const v of verdicts.slice(i)) logits = (await settledRun(v.pos, v.tokens)).logits;
        break;
      }
    }
    prefillMs = performance.now() - t0;
    if (logits && opts.returnPromptLogits) promptLogits = Float32Array.from(logits);

    let tPrev = performance.now();
    if (!logits || opts.signal?.aborted) finishReason = 'abort';
    else {
      // Decode. A route's logits may be provisional (its receipts still being checked): the
      // next step is then sent at once, on the token drawn from them, and up to `depth` drawn
      // tokens wait for their verdicts, released in order. A rejection discards the tokens
      // drawn from the rejected step on and runs it again. An output constraint follows each
      // released token, so it allows no token drawn ahead of the last released one (depth 1).
      const depth = Math.max(1, aheadDepth);
      /** the forwards sent: step `next`'s logits come from the first */
      const ahead: { run: Promise<PipelineStep>; pos: number; tokens: Int32Array }[] = [];
      /** drawn, not yet released, oldest first */
      const held: Held[] = [];
      /** logits of step `next` (the prefill's for step 0), when they are in */
      let cur: { logits: Float32Array; pos: number; tokens?: Int32Array; settled?: Promise<void> } | undefined =
        maxTokens > 0 ? { logits, pos: logitsPos } : undefined;
      let next = 0;
      const send = (step: number, id: number): void => {
        const input = { pos: promptIds.length + step, tokens: Int32Array.of(id) };
        const r = run(input.pos, input.tokens);
        r.catch(() => undefined); // awaited in turn, or abandoned when generation ends first
        ahead.push({ ...input, run: r });
      };
      for (;;) {
        if (opts.signal?.aborted) {
          finishReason = 'abort';
          break;
        }
        if (cur && held.length < depth) {
          // draw step `next`; send the step after it now when these logits are provisional
          const c = cur;
          cur = undefined;
          const mark = sampler.mark();
          const pick = sampler.pick(c.logits, history, {
            generatedFrom: promptIds.length,
            constraint: opts.constraint,
            remaining: maxTokens - next,
            topLogprobs: opts.logprobs,
          });
          const last = stopIds.has(pick.id) || next + 1 >= maxTokens;
          const early = !last && !!c.settled && aheadDepth > 0;
          held.push({ step: next, pick, pos: c.pos, tokens: c.tokens, settled: c.settled, mark, history: history.length, sent: early });
          history.push(pick.id);
          if (early) send(next, pick.id);
          next++;
          continue;
        }
        const h = held[0];
        // release the oldest drawn token once its logits hold; while they are being checked and
        // there is room for another draw, the next step's result may come first
        let release = !!h;
        if (h?.settled && !cur && ahead.length && held.length < depth) {
          release = await Promise.race([h.settled.then(yes, yes), ahead[0]!.run.then(no, no)]);
        }
        if (h && release) {
          try {
            await h.settled;
          } catch (e) {
            // rejected: drop what was drawn from it on and the steps sent meanwhile, run its step again
            rejected(e);
            await Promise.allSettled(ahead.map((x) => x.run));
            ahead.length = 0;
            held.length = 0;
            history.length = h.history;
            sampler.rewind(h.mark);
            next = h.step;
            const r = await run(h.pos, h.tokens!); // step 0 (the prefill's logits) is never provisional
            cur = { logits: r.logits, pos: h.pos, tokens: h.tokens, settled: r.settled };
            continue;
          }
          held.shift();
          const id = h.pick.id;
          if (stopIds.has(id)) {
            finishReason = 'stop';
            stoppedBy = id;
            break;
          }
          tokens.push(id);
          const m = stopper.push(decoder.push(id));
          text += m.release;
          const now = performance.now();
          const ev: TokenEvent = {
            id,
            text: m.release,
            step: h.step,
            stepMs: now - tPrev,
            pos: h.pos,
            logprob: h.pick.logprob,
            top: h.pick.top,
          };
          tPrev = now;
          opts.onToken?.(ev);
          yield ev;
          if (m.stop !== undefined) {
            finishReason = 'stop';
            stoppedBy = m.stop;
            break;
          }
          opts.constraint?.accept(id);
          if (opts.constraint?.done) {
            finishReason = 'stop';
            break;
          }
          // final logits: the next step goes out only now (an in-process stage computes on the spot)
          if (!h.sent && h.step + 1 < maxTokens) send(h.step, id);
          continue;
        }
        const a = ahead.shift();
        if (!a) break; // every drawn token is out and nothing more was sent: the token limit
        const r = await a.run;
        r.stageMs.forEach((ms, i) => (decodeStageMs[i] += ms));
        decodeForwards++;
        cur = { logits: r.logits, pos: a.pos, tokens: a.tokens, settled: r.settled };
      }
    }
    if (stoppedBy === undefined) {
      // no stop string matched: the held-back tail and any partial character are ordinary text
      const tail = stopper.push(decoder.flush());
      text += tail.release;
      if (tail.stop !== undefined) {
        finishReason = 'stop';
        stoppedBy = tail.stop;
      } else text += stopper.flush();
    }
  } finally {
    if (!opts.keepSession) closePipelineSession(pipeline, sessionId);
  }

  const totalMs = performance.now() - t0;
  const decodeMs = totalMs - prefillMs;
  const steps = Math.max(0, tokens.length - 1);
  return {
    tokens,
    text,
    finishReason,
    stoppedBy,
    promptTokens: promptIds.length,
    seed: sampler.seed,
    timings: {
      prefillMs,
      decodeMs,
      msPerToken: steps > 0 ? decodeMs / steps : 0,
      tokensPerS: decodeMs > 0 && steps > 0 ? (steps * 1000) / decodeMs : 0,
      totalMs,
    },
    stages: pipeline.map((s, i) => ({
      start: s.range.start,
      end: s.range.end,
      embed: s.range.embed,
      head: s.range.head,
      profile: s.profile,
      prefillMs: prefillStageMs[i],
      decodeMsPerToken: decodeForwards > 0 ? decodeStageMs[i] / decodeForwards : 0,
    })),
    promptLogits,
  };
}

/** Run generation to the end and return the result (events go to opts.onToken). */
export async function generate(
  pipeline: Stage[],
  tokenizer: GenTokenizer,
  promptIds: number[],
  opts: GenerateOptions,
): Promise<GenerateResult> {
  const it = generateStream(pipeline, tokenizer, promptIds, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
