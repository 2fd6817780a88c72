// What one HTTP client can cost the gateway, and the bounds on it: request body size, slow
// bodies and headers, idle and total connections, requests generating at once, and prompts
// refused by their length before any tokenizing (tokenizing is synchronous: a multi-megabyte
// prompt would block the event loop for every user).

import type { FastifyServerOptions } from 'fastify';
import type { Tokenizer } from '../tokenizer/types.js';

export interface ApiLimits {
  /** largest request body accepted, bytes (default 2 MiB); larger → 413 */
  maxBodyBytes?: number;
  /** requests generating at once before new ones get 503 (default 64) */
  maxConcurrent?: number;
  /** open HTTP connections; further ones are closed at once (default 256) */
  maxConnections?: number;
  /** the whole request (headers and body) must arrive within this, ms (default 30 000); else the connection is ended */
  requestTimeoutMs?: number;
  /** the headers must arrive within this, ms (default 10 000, at most requestTimeoutMs) */
  headersTimeoutMs?: number;
  /** an idle keep-alive connection is closed after this, ms (default 5 000) */
  keepAliveTimeoutMs?: number;
  /** a connection with no traffic either way is closed after this, ms (default 300 000) */
  idleTimeoutMs?: number;
}

export const DEFAULT_LIMITS: Required<ApiLimits> = {
  maxBodyBytes: 2 * 1024 * 1024,
  maxConcurrent: 64,
  maxConnections: 256,
  requestTimeoutMs: 30_000,
  headersTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 300_000,
};

export function resolveLimits(l: ApiLimits): Required<ApiLimits> {
  const r = { ...DEFAULT_LIMITS };
  for (const [k, v] of Object.entries(l) as [keyof ApiLimits, number | undefined][]) {
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`API limit ${k} must be a positive integer, got ${v}`);
    r[k] = v;
  }
  r.headersTimeoutMs = Math.min(r.headersTimeoutMs, r.requestTimeoutMs);
  return r;
}

/** fastify / node:http options enforcing the limits (maxConnections is set on the server after). */
export function serverOptions(l: Required<ApiLimits>): FastifyServerOptions {
  return {
    bodyLimit: l.maxBodyBytes,
    requestTimeout: l.requestTimeoutMs,
    keepAliveTimeout: l.keepAliveTimeoutMs,
    connectionTimeout: l.idleTimeoutMs,
    // node checks the request/headers time-outs on this period (default 30 s: far too coarse)
    http: { headersTimeout: l.headersTimeoutMs, connectionsCheckingInterval: Math.max(50, Math.min(1000, l.headersTimeoutMs / 4)) },
  } as FastifyServerOptions;
}

/**
 * The most UTF-16 code units one token can stand for in this vocabulary (special tokens by
 * their written form): a text of L units is at least ceil(L / this) tokens long.
 */
export function maxTokenChars(tk: Tokenizer): number {
  let max = 1;
  for (let id = 0; id < tk.vocabSize; id++) max = Math.max(max, tk.pieceBytes(id, true).length, tk.tokenText(id).length);
  return max;
}
