// OpenAI-compatible HTTP API over any Backend: /v1/completions, /v1/chat/completions,
// /v1/models, SSE streaming, /metrics and /healthz. Prompts are tokenized and sampled here
// (the gateway); only activations travel the swarm. Every OpenAI parameter is honoured or
// refused (schemas.ts, params.ts); structured output is constrained decoding (json-constraint.ts);
// what one client can cost is bounded (limits.ts).

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { Backend, BackendSampling, TokenTimeline } from './backend.js';
import { ApiError, invalid, routeFailureReason, toApiError } from './errors.js';
import { installJsonParser } from './json-body.js';
import { JsonConstraint, TokenTrie } from './json-constraint.js';
import { minLength, type SchemaNode } from './json-schema.js';
import { checkPromptLength } from './prompt-length.js';
import { maxTokenChars, resolveLimits, serverOptions, type ApiLimits } from './limits.js';
import { createMetrics, type ApiMetrics } from './metrics.js';
import type { FallbackReason, UpstreamFallback } from './fallback.js';
import { fimTokens, refuseUnsupportedChat, responseFormat } from './params.js';
import {
  chatSchema,
  checkContent,
  checkLogitBias,
  checkPrompt,
  checkStop,
  completionSchema,
  parseBody,
  type ChatRequest,
  type CompletionRequest,
} from './schemas.js';
import { chatShape, completionShape, type ChoiceResult, type FinishReason, type Shape, type TokenInfo, type Usage } from './shapes.js';
import { StopMatcher } from '../engine/generate.js';
import { openEventStream } from './event-stream.js';

export interface ApiServerOptions extends ApiLimits {
  /** default per-token deadline budget (ms) when a request does not set odsi.deadline_ms */
  deadlineMs?: number;
  /** pino logging (default off) */
  logger?: boolean;
  metrics?: ApiMetrics;
  /**
   * each request's usage as reported to the client (streams: what was generated, even if cut
   * off), e.g. for billing; `request` is the key its generations carried (BackendRequest.requestKey)
   */
  onUsage?: (usage: Usage, request: string) => void;
  /**
   * once per request that reached the backend, after its generations are released and after
   * onUsage when it was charged (a request that failed is not): nothing more of it will come
   */
  onEnd?: (request: string) => void;
  /** serve what the swarm cannot from an upstream OpenAI-compatible endpoint (off when absent) */
  fallback?: UpstreamFallback;
}

/** The request as the client sent it, for the fallback: the whole of it, or a continuation. */
interface Original {
  kind: 'completions' | 'chat';
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: Record<string, any>;
  /** completions: the prompt as text (a continuation appends the text so far) */
  promptText?: string;
  /** a continuation from the text so far keeps the request's meaning (one plain choice) */
  continuable: boolean;
}

export interface ApiServer {
  app: FastifyInstance;
  metrics: ApiMetrics;
  /** listen and return the base URL, e.g. http://127.0.0.1:8080 */
  listen(port: number, host?: string): Promise<string>;
  close(): Promise<void>;
}

interface Plan {
  promptIds: number[];
  maxTokens: number;
  stops: string[];
  sampling: BackendSampling;
  /** choices returned */
  n: number;
  /** candidates generated (>= n); the n with the highest total logprob are returned */
  bestOf: number;
  /** top alternatives per token when logprobs are returned; undefined = no logprobs */
  logprobs?: number;
  /** completions' echo: the prompt text, put before each choice's text */
  echoText?: string;
  schema?: SchemaNode;
  deadlineMs?: number;
  timeline: boolean;
  stream: boolean;
  includeUsage: boolean;
  /** this request's key (BackendRequest.requestKey, onUsage, onEnd) */
  request: string;
}

interface Piece {
  text: string;
  timeline?: TokenTimeline;
  tokens?: TokenInfo[];
}

interface RunResult {
  finish: FinishReason;
  completionTokens: number;
  /** sum of the generated tokens' logprobs (when computed) */
  logprobSum: number;
}

export function createApiServer(backend: Backend, opts: ApiServerOptions = {}): ApiServer {
  // only the limits: the other options are not numbers to check
  const { deadlineMs: _deadline, logger: _logger, metrics: _metrics, fallback: _fallback, onUsage: _onUsage, onEnd: _onEnd, ...limitOpts } = opts;
  const fallback = opts.fallback;
  const limits = resolveLimits(limitOpts);
  const app = Fastify({ logger: opts.logger ?? false, ...serverOptions(limits) });
  app.server.maxConnections = limits.maxConnections;
  installJsonParser(app);
  const metrics = opts.metrics ?? createMetrics();
  const maxConcurrent = limits.maxConcurrent;
  let active = 0;
  const tk = backend.tokenizer;
  // computed on first use: both walk the whole vocabulary once
  let tokenChars: number | undefined;
  let trie: TokenTrie | undefined;

  app.setErrorHandler((err, req, reply) => {
    const e = toApiError(err);
    countRequest(req, e.status);
    void reply.code(e.status).send(e.body());
  });
  app.setNotFoundHandler((req, reply) => {
    const e = new ApiError(404, `unknown endpoint ${req.method} ${req.url}`, 'invalid_request_error', 'unknown_url');
    countRequest(req, 404);
    void reply.code(404).send(e.body());
  });

  function countRequest(req: FastifyRequest, status: number): void {
    metrics.requests.inc({ endpoint: req.routeOptions?.url ?? 'unknown', status: String(status) });
  }

  app.get('/healthz', async (_req, reply) => {
    const why = backend.unavailable?.();
    if (why) return reply.code(503).send({ status: 'unavailable', reason: why, model: backend.model.id });
    const st = backend.status?.() ?? { ready: true };
    const body = { status: st.ready ? 'ok' : 'unavailable', reason: st.reason, model: backend.model.id, active, ...st.detail };
    return reply.code(st.ready ? 200 : 503).send(body);
  });

  // odsi's own: the swarm as the gateway sees it (nodes, per-layer coverage, bans, convictions);
  // the shape is src/gateway/swarm-status.ts's SwarmStatus. 404 for a backend with no swarm.
  app.get('/v1/odsi/status', async (req, reply) => {
    if (!backend.swarmStatus) {
      const e = new ApiError(404, 'this server has no swarm (it runs the model in-process)', 'invalid_request_error', 'no_swarm');
      countRequest(req, 404);
      return reply.code(404).send(e.body());
    }
    countRequest(req, 200);
    void reply.header('cache-control', 'no-store');
    return { ...backend.swarmStatus(), ...(fallback ? { fallback: fallback.describe() } : {}) };
  });

  app.get('/metrics', async (_req, reply) => {
    void reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  const modelObject = () => ({ id: backend.model.id, object: 'model', created: backend.model.created, owned_by: backend.model.ownedBy });
  app.get('/v1/models', async (req) => {
    countRequest(req, 200);
    return { object: 'list', data: [modelObject()] };
  });
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
    checkModel(req.params.id);
    countRequest(req, 200);
    return modelObject();
  });

  function checkModel(model: string): void {
    const m = backend.model;
    if (model !== m.id && !m.aliases?.includes(model)) {
      throw new ApiError(
        404,
        `The model '${model}' does not exist (this server serves '${m.id}')`,
        'invalid_request_error',
        'model_not_found',
        'model',
      );
    }
  }

  /** Refuse before any work when the server is full or shutting down. */
  function admit(): void {
    if (active >= maxConcurrent)
      throw new ApiError(
        503,
        `server busy: ${active} requests in progress (limit ${maxConcurrent}); retry later`,
        'service_unavailable',
        'capacity',
      );
    const why = backend.unavailable?.();
    if (why) throw new ApiError(503, why, 'service_unavailable', 'unavailable');
  }

  /** A text that cannot fit the context is refused without blocking on its tokenization. */
  async function checkLength(text: string, parseSpecial: boolean, param: string): Promise<void> {
    tokenChars ??= maxTokenChars(tk);
    await checkPromptLength(
      { tokenizer: tk, contextLength: backend.model.contextLength, maxTokenChars: tokenChars },
      text,
      parseSpecial,
      param,
    );
  }

  /** Checks shared by both endpoints; returns the generation plan. */
  function plan(
    body: CompletionRequest | ChatRequest,
    promptIds: number[],
    x: { defaultMax?: number; n: number; bestOf: number; logprobs?: number; echoText?: string; schema?: SchemaNode },
  ): Plan {
    const promptParam = 'messages' in body ? 'messages' : 'prompt';
    const ctx = backend.model.contextLength;
    if (promptIds.length >= ctx) {
      throw invalid(`prompt is ${promptIds.length} tokens; this model's context is ${ctx} tokens`, promptParam, 'context_length_exceeded');
    }
    const vocab = tk.vocabSize;
    const bad = promptIds.find((t) => t >= vocab);
    if (bad !== undefined) throw invalid(`token id ${bad} is outside the vocabulary (size ${vocab})`, 'prompt');
    const maxParam = 'max_completion_tokens' in body && body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
    const requested = ('max_completion_tokens' in body ? body.max_completion_tokens : undefined) ?? body.max_tokens ?? x.defaultMax;
    const room = ctx - promptIds.length;
    const maxTokens = Math.min(requested ?? room, room);
    if (x.schema && maxTokens < minLength(x.schema))
      throw invalid(`response_format needs room for at least ${minLength(x.schema)} tokens; ${maxParam} allows ${maxTokens}`, maxParam);
    return {
      promptIds,
      maxTokens,
      stops: checkStop(body.stop).filter((s) => s.length > 0),
      sampling: {
        temperature: body.temperature ?? 1,
        topP: body.top_p ?? undefined,
        seed: body.seed ?? undefined,
        presencePenalty: body.presence_penalty ?? undefined,
        frequencyPenalty: body.frequency_penalty ?? undefined,
        logitBias: checkLogitBias(body.logit_bias, vocab),
      },
      n: x.n,
      bestOf: x.bestOf,
      logprobs: x.logprobs,
      echoText: x.echoText,
      schema: x.schema,
      deadlineMs: body.odsi?.deadline_ms ?? opts.deadlineMs,
      timeline: body.odsi?.timeline ?? false,
      stream: body.stream ?? false,
      includeUsage: body.stream_options?.include_usage ?? false,
      request: randomUUID(),
    };
  }

  /** a generated token as the logprobs objects show it */
  function tokenInfo(id: number, logprob: number, top: { id: number; logprob: number }[]): TokenInfo {
    const show = (t: number) => {
      const bytes = tk.pieceBytes(t, true);
      return { token: new TextDecoder().decode(bytes), bytes: Array.from(bytes) };
    };
    return { ...show(id), logprob, top: top.map((a) => ({ ...show(a.id), logprob: a.logprob })) };
  }

  /**
   * Runs one generation (choice `index`): yields text pieces (stop strings held back and cut),
   * returns the finish reason, token count and total logprob. Aborts the backend when the
   * consumer stops.
   */
  async function* run(p: Plan, index: number, signal: AbortSignal, progress?: { tokens: number }): AsyncGenerator<Piece, RunResult> {
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener('abort', onAbort);
    const started = performance.now();
    const seed = p.sampling.seed === undefined ? undefined : p.sampling.seed + index;
    const rank = p.bestOf > p.n;
    if (p.schema) trie ??= new TokenTrie(tk);
    const gen = backend.generate({
      promptIds: p.promptIds,
      maxTokens: p.maxTokens,
      sampling: { ...p.sampling, seed },
      signal: ac.signal,
      deadlineMs: p.deadlineMs,
      constraint: p.schema && trie ? new JsonConstraint(p.schema, trie) : undefined,
      logprobs: p.logprobs ?? (rank ? 0 : undefined),
      requestKey: p.request,
    });
    const stop = new StopMatcher(p.stops);
    let n = 0;
    let logprobSum = 0;
    try {
      for (;;) {
        const r = await gen.next();
        if (r.done) {
          const tail = stop.push(r.value.tailText);
          const text = tail.release + stop.flush();
          if (text) yield { text };
          const finish = tail.stop !== undefined ? 'stop' : r.value.finishReason === 'length' ? 'length' : 'stop';
          return { finish, completionTokens: n, logprobSum };
        }
        const tok = r.value;
        if (n === 0) metrics.timeToFirstToken.observe((performance.now() - started) / 1000);
        n++;
        if (progress) progress.tokens = n;
        metrics.generatedTokens.inc();
        // the first token's latency is the time to first token (prefill included), not a decode step
        if (n > 1) metrics.tokenLatency.observe(tok.stepMs / 1000);
        logprobSum += tok.logprob ?? 0;
        const s = stop.push(tok.text);
        const tokens = p.logprobs !== undefined && tok.logprob !== undefined ? [tokenInfo(tok.id, tok.logprob, tok.top ?? [])] : undefined;
        if (p.timeline || tokens) yield { text: s.release, timeline: p.timeline ? tok.timeline : undefined, tokens };
        else if (s.release) yield { text: s.release };
        if (s.stop !== undefined) return { finish: 'stop', completionTokens: n, logprobSum };
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      ac.abort();
      // let the backend release its sessions before the request is counted as done
      await gen.return(undefined as never).catch(() => undefined);
    }
  }

  /** Common request driver: concurrency gate, abort on disconnect, streaming or not. */
  async function serve(req: FastifyRequest, reply: FastifyReply, p: Plan, shape: Shape, orig: Original): Promise<unknown> {
    admit();
    active++;
    metrics.active.set(active);
    metrics.promptTokens.inc(p.promptIds.length);
    const disconnect = new AbortController();
    const res: ServerResponse = reply.raw;
    const onClose = () => {
      if (!res.writableFinished) disconnect.abort();
    };
    res.on('close', onClose);
    try {
      if (p.stream) {
        // pull the first piece before answering, so route failures get a real status code
        const progress = { tokens: 0 };
        const it = run(p, 0, disconnect.signal, progress);
        try {
          let first: IteratorResult<Piece, RunResult>;
          try {
            first = await it.next();
          } catch (e) {
            // nothing sent yet: the whole request goes upstream when the fallback covers this failure
            const why = fallback?.reasonFor(e);
            if (!why) throw e;
            countFallback(e, why);
            await streamUpstream(reply, orig, why, disconnect.signal);
            countRequest(req, 200);
            return reply;
          }
          await stream(reply, p, shape, first, it, disconnect.signal, orig, progress);
        } finally {
          await it.return(undefined as never).catch(() => undefined);
        }
        countRequest(req, 200);
        return reply;
      }
      const candidates: (ChoiceResult & RunResult & { timeline: TokenTimeline[] })[] = [];
      let fellBack: { reason: FallbackReason; swarmTokens: number } | undefined;
      for (let i = 0; i < p.bestOf && !disconnect.signal.aborted; i++) {
        const progress = { text: '', tokens: 0 };
        try {
          candidates.push(await collect(p, i, disconnect.signal, progress));
        } catch (e) {
          const why = fallback?.reasonFor(e);
          if (!why || !fallback) throw e;
          countFallback(e, why);
          if (progress.tokens === 0 || !orig.continuable) {
            // the whole request upstream, as the client sent it
            const up = await fallback.complete(orig.kind, orig.body, disconnect.signal);
            countRequest(req, 200);
            void reply.header('x-odsi-served-by', 'fallback');
            return { ...up, odsi: { ...((up.odsi ?? {}) as object), served_by: 'fallback', fallback_reason: why } };
          }
          // mid-generation: the upstream continues from the text so far
          const cont = fallback.continueFrom(orig.kind, orig.body, {
            promptText: orig.promptText,
            partial: progress.text,
            maxTokens: Math.max(1, p.maxTokens - progress.tokens),
            signal: disconnect.signal,
          });
          let more = '';
          let r = await cont.next();
          while (!r.done) {
            more += r.value;
            r = await cont.next();
          }
          const text = (p.echoText ?? '') + progress.text + more;
          const tail = new StopMatcher(p.stops).push(progress.text + more);
          candidates.push({
            index: i,
            text: tail.stop !== undefined ? (p.echoText ?? '') + tail.release : text,
            tokens: [],
            textOffset: p.echoText?.length ?? 0,
            timeline: [],
            finish: tail.stop !== undefined ? 'stop' : r.value.finish,
            completionTokens: progress.tokens + r.value.completionTokens,
            logprobSum: 0,
          });
          fellBack = { reason: why, swarmTokens: progress.tokens };
        }
      }
      const chosen = p.bestOf > p.n ? [...candidates].sort((a, b) => b.logprobSum - a.logprobSum).slice(0, p.n) : candidates;
      const completion = candidates.reduce((a, c) => a + c.completionTokens, 0);
      countRequest(req, 200);
      const usage = usageOf(p, completion);
      opts.onUsage?.(usage, p.request);
      const body = shape.full(
        chosen.map((c, index) => ({ ...c, index })),
        usage,
      );
      if (p.timeline) body.odsi = { timeline: candidates[0]?.timeline ?? [] };
      if (fellBack)
        body.odsi = {
          ...((body.odsi ?? {}) as object),
          served_by: 'fallback',
          fallback_reason: fellBack.reason,
          swarm_tokens: fellBack.swarmTokens,
        };
      void reply.header('x-odsi-served-by', fellBack ? 'fallback' : 'swarm');
      return body;
    } catch (e) {
      const reason = routeFailureReason(e);
      if (reason) metrics.routeFailures.inc({ reason });
      throw e;
    } finally {
      res.off('close', onClose);
      active--;
      metrics.active.set(active);
      opts.onEnd?.(p.request);
    }
  }

  /** the swarm failed and the fallback takes over: counted by reason (and as the route failure it is) */
  function countFallback(e: unknown, why: FallbackReason): void {
    metrics.fallbacks.inc({ reason: why });
    const reason = routeFailureReason(e);
    if (reason) metrics.routeFailures.inc({ reason });
  }

  /** The whole request streamed from the upstream, each chunk marked; its first chunk is awaited before answering, so an upstream failure gets a real status. */
  async function streamUpstream(reply: FastifyReply, orig: Original, why: FallbackReason, signal: AbortSignal): Promise<void> {
    const up = fallback!.stream(orig.kind, orig.body, signal);
    const first = await up.next();
    const events = openEventStream(reply, 'fallback');
    const { send } = events;
    const mark = { served_by: 'fallback', fallback_reason: why };
    try {
      for (let cur = first; !cur.done && !signal.aborted; cur = await up.next()) {
        const chunk = cur.value;
        await send({ ...chunk, odsi: { ...(chunk.odsi as object | undefined), ...mark } });
      }
    } catch (e) {
      await send(toApiError(e).body());
    } finally {
      await up.return(undefined).catch(() => undefined);
      events.end();
    }
  }

  /** one whole choice, not streamed */
  async function collect(
    p: Plan,
    index: number,
    signal: AbortSignal,
    progress: { text: string; tokens: number } = { text: '', tokens: 0 },
  ): Promise<ChoiceResult & RunResult & { timeline: TokenTimeline[] }> {
    const it = run(p, index, signal, progress);
    let text = p.echoText ?? '';
    const tokens: TokenInfo[] = [];
    const timeline: TokenTimeline[] = [];
    try {
      for (;;) {
        const cur = await it.next();
        if (cur.done) return { index, text, tokens, textOffset: p.echoText?.length ?? 0, timeline, ...cur.value };
        text += cur.value.text;
        progress.text += cur.value.text;
        if (cur.value.timeline) timeline.push(cur.value.timeline);
        if (cur.value.tokens) tokens.push(...cur.value.tokens);
      }
    } finally {
      await it.return(undefined as never).catch(() => undefined);
    }
  }

  async function stream(
    reply: FastifyReply,
    p: Plan,
    shape: Shape,
    first: IteratorResult<Piece, RunResult>,
    firstIt: AsyncGenerator<Piece, RunResult>,
    signal: AbortSignal,
    orig: Original,
    firstProgress: { tokens: number },
  ): Promise<void> {
    const events = openEventStream(reply, 'swarm');
    const { send } = events;
    const usageField = p.includeUsage ? { usage: null } : {};
    let completion = 0;
    /** tokens the upstream generated in a continuation (reported to the client, so in onUsage too) */
    let upstreamTokens = 0;
    // the choice being streamed, for a continuation upstream when the swarm fails mid-way
    let current = { index: 0, text: '', offset: 0, progress: firstProgress };
    try {
      // the n choices one after the other, each chunk naming its choice
      for (let index = 0; index < p.n; index++) {
        const progress = index === 0 ? firstProgress : { tokens: 0 };
        const it = index === 0 ? firstIt : run(p, index, signal, progress);
        current = { index, text: '', offset: 0, progress };
        try {
          let cur = index === 0 ? first : await it.next();
          const opening = shape.opening(index);
          if (opening) await send({ ...opening, ...usageField });
          let offset = 0;
          if (p.echoText) {
            await send({ ...shape.delta(index, p.echoText, undefined, 0), ...usageField });
            offset = p.echoText.length;
          }
          while (!cur.done) {
            if (signal.aborted) return;
            const chunk = shape.delta(index, cur.value.text, cur.value.tokens, offset);
            offset += cur.value.text.length;
            current.text += cur.value.text;
            current.offset = offset;
            if (cur.value.timeline) chunk.odsi = { timeline: cur.value.timeline };
            await send({ ...chunk, ...usageField });
            cur = await it.next();
          }
          completion += cur.value.completionTokens;
          current.progress = { tokens: 0 }; // counted in `completion` now
          await send({ ...shape.finish(index, cur.value.finish), ...usageField });
        } finally {
          if (index > 0) await it.return(undefined as never).catch(() => undefined);
        }
      }
      if (p.includeUsage) await send(shape.usage(usageOf(p, completion)));
    } catch (e) {
      const why = fallback?.reasonFor(e);
      if (fallback && why && orig.continuable && !signal.aborted) {
        // the swarm failed mid-way: the upstream continues this choice from the text so far
        countFallback(e, why);
        const mark = { odsi: { served_by: 'fallback', fallback_reason: why, swarm_tokens: current.progress.tokens } };
        try {
          const cont = fallback.continueFrom(orig.kind, orig.body, {
            promptText: orig.promptText,
            partial: current.text,
            maxTokens: Math.max(1, p.maxTokens - current.progress.tokens),
            signal,
          });
          const stop = new StopMatcher(p.stops);
          let r = await cont.next();
          let stopped = false;
          while (!r.done && !stopped) {
            const s = stop.push(r.value);
            if (s.release) await send({ ...shape.delta(current.index, s.release, undefined, current.offset), ...mark, ...usageField });
            current.offset += s.release.length;
            stopped = s.stop !== undefined;
            if (!stopped) r = await cont.next();
          }
          if (!stopped) {
            const rest = stop.flush();
            if (rest) await send({ ...shape.delta(current.index, rest, undefined, current.offset), ...mark, ...usageField });
          }
          const done = r.done ? r.value : { finish: 'stop' as const, completionTokens: 0 };
          upstreamTokens = done.completionTokens;
          await send({ ...shape.finish(current.index, stopped ? 'stop' : done.finish), ...mark, ...usageField });
          if (p.includeUsage) await send(shape.usage(usageOf(p, current.progress.tokens + done.completionTokens)));
          await cont.return(undefined as never).catch(() => undefined);
        } catch (e2) {
          await send(toApiError(e2).body());
        }
        return;
      }
      // headers are gone: report in-band, the way OpenAI's SDK expects ({error: ...} event)
      const err = toApiError(e);
      const reason = routeFailureReason(e);
      if (reason) metrics.routeFailures.inc({ reason });
      await send(err.body());
    } finally {
      // what was generated, also for a choice cut off by a disconnect or an error, and what the upstream added
      opts.onUsage?.(usageOf(p, completion + current.progress.tokens + upstreamTokens), p.request);
      events.end();
    }
  }

  const usageOf = (p: Plan, completion: number): Usage => ({
    prompt_tokens: p.promptIds.length,
    completion_tokens: completion,
    total_tokens: p.promptIds.length + completion,
  });

  app.post('/v1/completions', async (req, reply) => {
    const body = parseBody(completionSchema, req.body);
    checkModel(body.model);
    admit();
    const prompt = checkPrompt(body.prompt);
    const n = body.n ?? 1;
    const bestOf = body.best_of ?? n;
    if (bestOf < n) throw invalid(`'best_of' (${bestOf}) must be at least 'n' (${n})`, 'best_of');
    if (bestOf > n && body.stream) throw invalid("'best_of' greater than 'n' cannot be streamed; set stream to false", 'best_of');
    if (body.echo && body.logprobs != null)
      throw invalid(
        "'echo' with 'logprobs' would need the prompt's log-probabilities, which this server does not compute; use one or the other",
        'echo',
      );
    let promptIds: number[];
    if (body.suffix) {
      const fim = fimTokens(tk);
      if (!fim) throw invalid("this model has no fill-in-the-middle tokens, so 'suffix' is not supported", 'suffix');
      if (typeof prompt !== 'string') throw invalid("'suffix' needs a text prompt", 'prompt');
      await checkLength(prompt + body.suffix, false, 'prompt');
      const bos = backend.addBos && tk.bosId !== undefined ? [tk.bosId] : [];
      promptIds = [...bos, fim[0], ...tk.encode(prompt, { addBos: false }), fim[1], ...tk.encode(body.suffix, { addBos: false }), fim[2]];
    } else if (typeof prompt === 'string') {
      await checkLength(prompt, false, 'prompt');
      promptIds = encode(prompt, false);
    } else {
      promptIds = [...prompt];
    }
    const echoText = body.echo ? (typeof prompt === 'string' ? prompt : tk.decode(prompt)) : undefined;
    const p = plan(body, promptIds, { defaultMax: 16, n, bestOf, logprobs: body.logprobs ?? undefined, echoText });
    const orig: Original = {
      kind: 'completions',
      body: body as Record<string, unknown>,
      promptText: typeof prompt === 'string' ? prompt : tk.decode(prompt),
      continuable: !body.suffix && n === 1 && bestOf === 1 && body.logprobs == null,
    };
    return serve(req, reply, p, completionShape(backend.model.id, body.logprobs != null), orig);
  });

  app.post('/v1/chat/completions', async (req, reply) => {
    const body = parseBody(chatSchema, req.body);
    checkModel(body.model);
    admit();
    refuseUnsupportedChat(body);
    const schema = responseFormat(body.response_format);
    const messages = body.messages.map((m, i) => ({
      role: m.role === 'developer' ? 'system' : m.role,
      content: checkContent(m.content, i),
    }));
    let text: string;
    try {
      text = tk.applyChatTemplate(messages, { addGenerationPrompt: true });
    } catch (e) {
      throw invalid(`cannot apply the model's chat template: ${(e as Error).message}`, 'messages');
    }
    await checkLength(text, true, 'messages');
    const n = body.n ?? 1;
    const logprobs = body.logprobs ? (body.top_logprobs ?? 0) : undefined;
    const p = plan(body, encode(text, true), { n, bestOf: n, logprobs, schema });
    const orig: Original = {
      kind: 'chat',
      body: body as Record<string, unknown>,
      continuable: !schema && n === 1 && logprobs === undefined,
    };
    return serve(req, reply, p, chatShape(backend.model.id, logprobs !== undefined), orig);
  });

  function encode(text: string, parseSpecial: boolean): number[] {
    const ids = tk.encode(text, { addBos: backend.addBos, parseSpecial });
    // a template that already wrote BOS does not get two
    if (tk.bosId !== undefined && ids.length >= 2 && ids[0] === tk.bosId && ids[1] === tk.bosId) ids.shift();
    if (!ids.length) throw invalid('prompt is empty after tokenization', 'prompt');
    return ids;
  }

  return {
    app,
    metrics,
    async listen(port: number, host = '127.0.0.1') {
      await app.listen({ port, host });
      const addr = app.server.address();
      const p = typeof addr === 'object' && addr ? addr.port : port;
      return `http://${host.includes(':') ? `[${host}]` : host}:${p}`;
    },
    async close() {
      await app.close();
    },
  };
}
