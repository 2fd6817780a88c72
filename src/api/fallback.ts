// Cloud fallback: when the swarm cannot serve a request (no route covers the model, every route
// refuses for capacity, the deadline cannot be met, or a route fails mid-generation beyond
// repair), the API hands it to an upstream OpenAI-compatible endpoint through the official
// `openai` client — the whole request, or, mid-generation, a continuation from the text so
// far. Off unless configured (`odsi gateway --fallback-url`); every answer it serves is marked
// (header x-odsi-served-by: fallback, body field odsi.served_by, metric). The upstream key is
// handed in once at start-up by the CLI and never echoed.

import OpenAI from 'openai';
import { ApiError } from './errors.js';

/** Why the swarm could not serve: the --fallback-when vocabulary. */
export type FallbackReason = 'no-route' | 'overload' | 'deadline' | 'failure';
export const FALLBACK_REASONS: readonly FallbackReason[] = ['no-route', 'overload', 'deadline', 'failure'];

export interface FallbackConfig {
  /** the upstream's base URL, ending in /v1 as the openai client takes it */
  url: string;
  /** model name sent upstream (default: the name the client asked for) */
  model?: string;
  /** bearer key for the upstream (read once from an environment variable by the CLI) */
  apiKey?: string;
  /** when to fall back (default: all reasons) */
  when?: readonly FallbackReason[];
  /** upstream request time-out, ms (default 120 s) */
  timeoutMs?: number;
}

type Kind = 'completions' | 'chat';
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

/** Which fallback reason a swarm failure is (undefined: not a swarm failure). Matched by name, as errors.ts does. */
export function fallbackReason(e: unknown): FallbackReason | undefined {
  const err = e as { name?: string; code?: unknown; remoteCode?: unknown };
  if (err?.name === 'NoRouteError') return 'no-route';
  if (err?.name === 'EngineError' && err.code === 'capacity') return 'overload';
  if (err?.name !== 'RouteError') return undefined;
  if (err.code === 'busy' || err.remoteCode === 'busy' || err.remoteCode === 'limit') return 'overload';
  if (err.code === 'deadline' || err.code === 'slow' || err.remoteCode === 'deadline') return 'deadline';
  return 'failure';
}

export class UpstreamFallback {
  private readonly client: OpenAI;
  private readonly when: ReadonlySet<FallbackReason>;
  readonly served = { total: 0 };

  constructor(private readonly cfg: FallbackConfig) {
    let u: URL;
    try {
      u = new URL(cfg.url);
    } catch {
      throw new Error(`fallback URL is not a URL: ${cfg.url}`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`fallback URL must be http(s): ${cfg.url}`);
    for (const w of cfg.when ?? [])
      if (!FALLBACK_REASONS.includes(w)) throw new Error(`unknown fallback reason '${w}' (use ${FALLBACK_REASONS.join(', ')})`);
    this.when = new Set(cfg.when ?? FALLBACK_REASONS);
    // no retries: a failing upstream is reported at once; the key is never logged or echoed
    this.client = new OpenAI({ baseURL: cfg.url, apiKey: cfg.apiKey ?? 'none', maxRetries: 0, timeout: cfg.timeoutMs ?? 120_000 });
  }

  /** what status pages show (never the key) */
  describe(): { url: string; model?: string; when: FallbackReason[]; served: number } {
    const u = new URL(this.cfg.url);
    u.username = '';
    u.password = '';
    return { url: u.href, ...(this.cfg.model ? { model: this.cfg.model } : {}), when: [...this.when], served: this.served.total };
  }

  /** The reason to fall back for this failure, if it is one this gateway falls back for. */
  reasonFor(e: unknown): FallbackReason | undefined {
    const r = fallbackReason(e);
    return r && this.when.has(r) ? r : undefined;
  }

  /** the request as the upstream gets it: its model name, no odsi extension */
  private upstreamBody(body: Json, stream: boolean): Json {
    const { odsi: _odsi, ...rest } = body;
    return { ...rest, model: this.cfg.model ?? body.model, stream, ...(stream ? {} : { stream_options: undefined }) };
  }

  /** The whole request, not streamed: the upstream's answer. */
  async complete(kind: Kind, body: Json, signal?: AbortSignal): Promise<Json> {
    const b = this.upstreamBody(body, false);
    this.served.total++;
    try {
      return (kind === 'chat'
        ? await this.client.chat.completions.create(b as never, { signal })
        : await this.client.completions.create(b as never, { signal })) as unknown as Json;
    } catch (e) {
      throw upstreamError(e);
    }
  }

  /** The whole request, streamed: the upstream's chunks as they come. */
  async *stream(kind: Kind, body: Json, signal?: AbortSignal): AsyncGenerator<Json> {
    const b = this.upstreamBody(body, true);
    this.served.total++;
    try {
      const s = (kind === 'chat'
        ? await this.client.chat.completions.create(b as never, { signal })
        : await this.client.completions.create(b as never, { signal })) as unknown as AsyncIterable<Json>;
      for await (const chunk of s) yield chunk;
    } catch (e) {
      throw upstreamError(e);
    }
  }

  /**
   * A continuation of one choice from the text generated so far (one choice, streamed): the
   * completion prompt followed by that text, or the chat with the text as the assistant's
   * unfinished turn. Yields text pieces; returns the finish reason and the upstream's tokens.
   */
  async *continueFrom(
    kind: Kind,
    body: Json,
    c: { promptText?: string; partial: string; maxTokens: number; signal?: AbortSignal },
  ): AsyncGenerator<string, { finish: 'stop' | 'length'; completionTokens: number }> {
    const base = this.upstreamBody(body, true);
    const b: Json = { ...base, n: 1, max_tokens: c.maxTokens, stream_options: { include_usage: true } };
    delete b.max_completion_tokens;
    delete b.best_of;
    delete b.echo;
    delete b.logprobs;
    delete b.top_logprobs;
    if (kind === 'completions') b.prompt = (c.promptText ?? '') + c.partial;
    else b.messages = [...(body.messages as Json[]), { role: 'assistant', content: c.partial }];
    this.served.total++;
    let finish: 'stop' | 'length' = 'stop';
    let tokens = 0;
    let pieces = 0;
    try {
      const s = (kind === 'chat'
        ? await this.client.chat.completions.create(b as never, { signal: c.signal })
        : await this.client.completions.create(b as never, { signal: c.signal })) as unknown as AsyncIterable<Json>;
      for await (const chunk of s) {
        if (chunk.usage?.completion_tokens !== undefined) tokens = chunk.usage.completion_tokens;
        const ch = chunk.choices?.[0];
        if (!ch) continue;
        const text: string = (kind === 'chat' ? ch.delta?.content : ch.text) ?? '';
        if (text) {
          pieces++;
          yield text;
        }
        if (ch.finish_reason) finish = ch.finish_reason === 'length' ? 'length' : 'stop';
      }
    } catch (e) {
      throw upstreamError(e);
    }
    return { finish, completionTokens: tokens || pieces };
  }
}

/** An upstream failure as a clear OpenAI-shaped error (its key or body never echoed beyond its message). */
export function upstreamError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof OpenAI.APIConnectionTimeoutError)
    return new ApiError(
      504,
      'the swarm could not serve this request and the fallback upstream timed out',
      'timeout_error',
      'fallback_timeout',
    );
  if (e instanceof OpenAI.APIUserAbortError) return new ApiError(499, 'request aborted', 'invalid_request_error', 'aborted');
  if (e instanceof OpenAI.APIConnectionError)
    return new ApiError(
      502,
      'the swarm could not serve this request and the fallback upstream is unreachable',
      'service_unavailable',
      'fallback_unreachable',
    );
  if (e instanceof OpenAI.APIError) {
    const msg = (e.error as { message?: string } | undefined)?.message ?? e.message;
    return new ApiError(
      502,
      `the swarm could not serve this request and the fallback upstream answered ${e.status ?? 'an error'}: ${String(msg).slice(0, 500)}`,
      'service_unavailable',
      'fallback_error',
    );
  }
  return new ApiError(502, `fallback upstream failed: ${(e as Error)?.message ?? String(e)}`, 'service_unavailable', 'fallback_error');
}
