// The generation loop: prefill the prompt in chunks, then decode one token at a time through a
// pipeline of stages, sampling each next token, streaming text, and stopping on stop tokens,
// stop strings, the token limit or an abort signal.

import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { closePipelineSession, forwardPipeline, validatePipeline } from './pipeline.js';
import { Sampler, type SamplingParams, type TokenConstraint, type TokenLogprob } from './sampling.js';
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
}

export interface TokenEvent {
  id: number;
  /** text released at this step (may be empty while a possible stop string is held back) */
  text: string;
  /** 0-based index of the generated token */
  step: number;
  /** ms from the previous token (or from the end of prefill for step 0) */
  stepMs: number;
  /** with opts.logprobs: the token's log-probability and the most likely alternatives */
  logprob?: number;
  top?: TokenLogprob[];
}

export type FinishReason = 'stop' | 'length' | 'abort';

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
    // prefill
    let logits: Float32Array | undefined;
    for (let pos = 0; pos < promptIds.length; pos += chunk) {
      if (opts.signal?.aborted) break;
      const step = await forwardPipeline(pipeline, { sessionId, pos, tokens: Int32Array.from(promptIds.slice(pos, pos + chunk)) });
      step.stageMs.forEach((ms, i) => (prefillStageMs[i] += ms));
      logits = step.logits;
    }
    prefillMs = performance.now() - t0;
    if (logits && opts.returnPromptLogits) promptLogits = Float32Array.from(logits);

    let tPrev = performance.now();
    if (!logits || opts.signal?.aborted) finishReason = 'abort';
    else {
      for (let step = 0; step < maxTokens; step++) {
        if (step > 0) {
          if (opts.signal?.aborted) {
            finishReason = 'abort';
            break;
          }
          const pos = promptIds.length + step - 1;
          const r = await forwardPipeline(pipeline, { sessionId, pos, tokens: Int32Array.of(tokens[step - 1]) });
          r.stageMs.forEach((ms, i) => (decodeStageMs[i] += ms));
          decodeForwards++;
          logits = r.logits;
        }
        const pick = sampler.pick(logits, history, {
          generatedFrom: promptIds.length,
          constraint: opts.constraint,
          remaining: maxTokens - step,
          topLogprobs: opts.logprobs,
        });
        const id = pick.id;
        if (stopIds.has(id)) {
          finishReason = 'stop';
          stoppedBy = id;
          break;
        }
        tokens.push(id);
        history.push(id);
        const m = stopper.push(decoder.push(id));
        text += m.release;
        const now = performance.now();
        const ev: TokenEvent = { id, text: m.release, step, stepMs: now - tPrev, logprob: pick.logprob, top: pick.top };
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
