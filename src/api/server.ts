// OpenAI-compatible HTTP API over any Backend: /v1/completions, /v1/chat/completions,
// /v1/models, SSE streaming, /metrics and /healthz. Prompts are tokenized and sampled here
// (the gateway); only activations travel the swarm.

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { Backend, TokenTimeline } from './backend.js';
import { ApiError, invalid, routeFailureReason, toApiError } from './errors.js';
import { createMetrics, type ApiMetrics } from './metrics.js';
import { chatSchema, completionSchema, parseBody, type ChatRequest, type CompletionRequest } from './schemas.js';
import { StopMatcher } from '../engine/generate.js';

export interface ApiServerOptions {
  /** requests generating at once before new ones get 503 (default 64) */
  maxConcurrent?: number;
  /** default per-token deadline budget (ms) when a request does not set odsi.deadline_ms */
  deadlineMs?: number;
  /** pino logging (default off) */
  logger?: boolean;
  metrics?: ApiMetrics;
}

export interface ApiServer {
  app: FastifyInstance;
  metrics: ApiMetrics;
  /** listen and return the base URL, e.g. http://127.0.0.1:8080 */
  listen(port: number, host?: string): Promise<string>;
  close(): Promise<void>;
}

type FinishReason = 'stop' | 'length';

interface Plan {
  promptIds: number[];
  maxTokens: number;
  stops: string[];
  temperature: number;
  topP?: number;
  seed?: number;
  deadlineMs?: number;
  timeline: boolean;
  stream: boolean;
  includeUsage: boolean;
}

interface Piece {
  text: string;
  timeline?: TokenTimeline;
}

export function createApiServer(backend: Backend, opts: ApiServerOptions = {}): ApiServer {
  const app = Fastify({ logger: opts.logger ?? false, bodyLimit: 8 * 1024 * 1024 });
  const metrics = opts.metrics ?? createMetrics();
  const maxConcurrent = opts.maxConcurrent ?? 64;
  let active = 0;

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

  /** Checks shared by both endpoints; returns the generation plan. */
  function plan(body: CompletionRequest | ChatRequest, promptIds: number[], defaultMax: number | undefined): Plan {
    if (body.n !== undefined && body.n !== null && body.n !== 1) throw invalid(`only n=1 is supported, got n=${body.n}`, 'n');
    if (body.logprobs) throw invalid('logprobs are not supported by this server', 'logprobs');
    if (body.echo) throw invalid('echo is not supported by this server', 'echo');
    if (body.tools?.length) throw invalid('tools / function calling are not supported by this server', 'tools');
    const ctx = backend.model.contextLength;
    if (promptIds.length >= ctx) {
      throw invalid(
        `prompt is ${promptIds.length} tokens; this model's context is ${ctx} tokens`,
        'messages' in body ? 'messages' : 'prompt',
        'context_length_exceeded',
      );
    }
    const vocab = backend.tokenizer.vocabSize;
    const bad = promptIds.find((t) => t >= vocab);
    if (bad !== undefined) throw invalid(`token id ${bad} is outside the vocabulary (size ${vocab})`, 'prompt');
    const requested = ('max_completion_tokens' in body ? body.max_completion_tokens : undefined) ?? body.max_tokens ?? defaultMax;
    const room = ctx - promptIds.length;
    const stops = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
    return {
      promptIds,
      maxTokens: Math.min(requested ?? room, room),
      stops: stops.filter((s) => s.length > 0),
      temperature: body.temperature ?? 1,
      topP: body.top_p ?? undefined,
      seed: body.seed ?? undefined,
      deadlineMs: body.odsi?.deadline_ms ?? opts.deadlineMs,
      timeline: body.odsi?.timeline ?? false,
      stream: body.stream ?? false,
      includeUsage: body.stream_options?.include_usage ?? false,
    };
  }

  /**
   * Runs one generation: yields text pieces (stop strings held back and cut), returns the
   * finish reason and completion token count. Aborts the backend when the consumer stops.
   */
  async function* run(p: Plan, signal: AbortSignal): AsyncGenerator<Piece, { finish: FinishReason; completionTokens: number }> {
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener('abort', onAbort);
    const started = performance.now();
    const gen = backend.generate({
      promptIds: p.promptIds,
      maxTokens: p.maxTokens,
      sampling: { temperature: p.temperature, topP: p.topP, seed: p.seed },
      signal: ac.signal,
      deadlineMs: p.deadlineMs,
    });
    const stop = new StopMatcher(p.stops);
    let n = 0;
    try {
      for (;;) {
        const r = await gen.next();
        if (r.done) {
          const tail = stop.push(r.value.tailText);
          const text = tail.release + stop.flush();
          if (text) yield { text };
          return { finish: tail.stop !== undefined ? 'stop' : r.value.finishReason === 'length' ? 'length' : 'stop', completionTokens: n };
        }
        const tok = r.value;
        if (n === 0) metrics.timeToFirstToken.observe((performance.now() - started) / 1000);
        n++;
        metrics.generatedTokens.inc();
        // the first token's latency is the time to first token (prefill included), not a decode step
        if (n > 1) metrics.tokenLatency.observe(tok.stepMs / 1000);
        const s = stop.push(tok.text);
        if (p.timeline) yield { text: s.release, timeline: tok.timeline };
        else if (s.release) yield { text: s.release };
        if (s.stop !== undefined) return { finish: 'stop', completionTokens: n };
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      ac.abort();
      // let the backend release its sessions before the request is counted as done
      await gen.return(undefined as never).catch(() => undefined);
    }
  }

  /** Common request driver: concurrency gate, abort on disconnect, streaming or not. */
  async function serve(req: FastifyRequest, reply: FastifyReply, p: Plan, shape: Shape): Promise<unknown> {
    if (active >= maxConcurrent)
      throw new ApiError(503, `server busy: ${active} requests in progress (limit ${maxConcurrent})`, 'service_unavailable', 'capacity');
    const why = backend.unavailable?.();
    if (why) throw new ApiError(503, why, 'service_unavailable', 'unavailable');
    active++;
    metrics.active.set(active);
    metrics.promptTokens.inc(p.promptIds.length);
    const disconnect = new AbortController();
    const res: ServerResponse = reply.raw;
    const onClose = () => {
      if (!res.writableFinished) disconnect.abort();
    };
    res.on('close', onClose);
    const it = run(p, disconnect.signal);
    try {
      // pull the first piece before answering, so route failures get a real status code
      const first = await it.next();
      if (p.stream) {
        await stream(reply, p, shape, first, it, disconnect.signal);
        countRequest(req, 200);
        return reply;
      }
      let text = '';
      const timeline: TokenTimeline[] = [];
      let cur = first;
      while (!cur.done) {
        text += cur.value.text;
        if (cur.value.timeline) timeline.push(cur.value.timeline);
        cur = await it.next();
      }
      const usage = usageOf(p, cur.value.completionTokens);
      countRequest(req, 200);
      const body = shape.full(text, cur.value.finish, usage);
      if (p.timeline) body.odsi = { timeline };
      return body;
    } catch (e) {
      const reason = routeFailureReason(e);
      if (reason) metrics.routeFailures.inc({ reason });
      throw e;
    } finally {
      res.off('close', onClose);
      await it.return(undefined as never).catch(() => undefined);
      active--;
      metrics.active.set(active);
    }
  }

  async function stream(
    reply: FastifyReply,
    p: Plan,
    shape: Shape,
    first: IteratorResult<Piece, { finish: FinishReason; completionTokens: number }>,
    it: AsyncGenerator<Piece, { finish: FinishReason; completionTokens: number }>,
    signal: AbortSignal,
  ): Promise<void> {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    // a slow reader holds generation back rather than letting the buffer grow
    const send = async (obj: unknown) => {
      if (res.writableEnded || res.destroyed) return;
      if (!res.write(`data: ${JSON.stringify(obj)}\n\n`)) {
        await new Promise<void>((r) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            r();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    };
    const usageField = p.includeUsage ? { usage: null } : {};
    const opening = shape.opening();
    if (opening) await send({ ...opening, ...usageField });
    try {
      let cur = first;
      while (!cur.done) {
        if (signal.aborted) return;
        const chunk = shape.delta(cur.value.text);
        if (cur.value.timeline) chunk.odsi = { timeline: cur.value.timeline };
        await send({ ...chunk, ...usageField });
        cur = await it.next();
      }
      await send({ ...shape.finish(cur.value.finish), ...usageField });
      if (p.includeUsage) await send(shape.usage(usageOf(p, cur.value.completionTokens)));
    } catch (e) {
      // headers are gone: report in-band, the way OpenAI's SDK expects ({error: ...} event)
      const err = toApiError(e);
      const reason = routeFailureReason(e);
      if (reason) metrics.routeFailures.inc({ reason });
      await send(err.body());
    } finally {
      if (!res.writableEnded && !res.destroyed) res.end('data: [DONE]\n\n');
    }
  }

  const usageOf = (p: Plan, completion: number) => ({
    prompt_tokens: p.promptIds.length,
    completion_tokens: completion,
    total_tokens: p.promptIds.length + completion,
  });

  app.post('/v1/completions', async (req, reply) => {
    const body = parseBody(completionSchema, req.body);
    checkModel(body.model);
    const promptIds = completionPrompt(body.prompt);
    const p = plan(body, promptIds, 16);
    return serve(req, reply, p, completionShape(backend.model.id));
  });

  app.post('/v1/chat/completions', async (req, reply) => {
    const body = parseBody(chatSchema, req.body);
    checkModel(body.model);
    const messages = body.messages.map((m, i) => ({
      role: m.role === 'developer' ? 'system' : m.role,
      content:
        m.content === null
          ? ''
          : typeof m.content === 'string'
            ? m.content
            : m.content
                .map((part, j) => {
                  if (part.type !== 'text') throw invalid(`only text content parts are supported`, `messages.${i}.content.${j}`);
                  return part.text;
                })
                .join(''),
    }));
    let text: string;
    try {
      text = backend.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
    } catch (e) {
      throw invalid(`cannot apply the model's chat template: ${(e as Error).message}`, 'messages');
    }
    const p = plan(body, encode(text, true), undefined);
    return serve(req, reply, p, chatShape(backend.model.id));
  });

  function completionPrompt(prompt: CompletionRequest['prompt']): number[] {
    if (typeof prompt === 'string') return encode(prompt, false);
    if (prompt.length === 1 && typeof prompt[0] === 'string') return encode(prompt[0], false);
    if (Array.isArray(prompt[0])) return [...(prompt[0] as number[])];
    return [...(prompt as number[])];
  }

  /** Encode with the model's BOS rule; a template that already wrote BOS does not get two. */
  function encode(text: string, parseSpecial: boolean): number[] {
    const tk = backend.tokenizer;
    const ids = tk.encode(text, { addBos: backend.addBos, parseSpecial });
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

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** The OpenAI object shapes of one endpoint. */
type Obj = Record<string, unknown>;
interface Shape {
  full(text: string, finish: FinishReason, usage: Usage): Obj;
  opening(): Obj | undefined;
  delta(text: string): Obj;
  finish(finish: FinishReason): Obj;
  usage(usage: Usage): Obj;
}

const newId = (prefix: string) => `${prefix}-${randomBytes(12).toString('hex')}`;
const now = () => Math.floor(Date.now() / 1000);

function completionShape(model: string): Shape {
  const id = newId('cmpl');
  const created = now();
  const base = { id, object: 'text_completion', created, model, system_fingerprint: 'odsi' };
  const choice = (text: string, finish: FinishReason | null) => ({ text, index: 0, logprobs: null, finish_reason: finish });
  return {
    full: (text, finish, usage) => ({ ...base, choices: [choice(text, finish)], usage }),
    opening: () => undefined,
    delta: (text) => ({ ...base, choices: [choice(text, null)] }),
    finish: (finish) => ({ ...base, choices: [choice('', finish)] }),
    usage: (usage) => ({ ...base, choices: [], usage }),
  };
}

function chatShape(model: string): Shape {
  const id = newId('chatcmpl');
  const created = now();
  const full = { id, object: 'chat.completion', created, model, system_fingerprint: 'odsi' };
  const chunk = { id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'odsi' };
  const delta = (d: Record<string, unknown>, finish: FinishReason | null) => ({
    ...chunk,
    choices: [{ index: 0, delta: d, logprobs: null, finish_reason: finish }],
  });
  return {
    full: (text, finish, usage) => ({
      ...full,
      choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: finish }],
      usage,
    }),
    opening: () => delta({ role: 'assistant', content: '' }, null),
    delta: (text) => delta({ content: text }, null),
    finish: (finish) => delta({}, finish),
    usage: (usage) => ({ ...chunk, choices: [], usage }),
  };
}
