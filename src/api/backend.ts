// What the HTTP API needs from whatever runs the model: the swarm gateway (src/gateway/gateway.ts)
// or an in-process pipeline (src/gateway/local.ts). Token ids in, token events out; the API
// owns prompts, chat templates, stop strings and the wire format.

import type { TokenConstraint, TokenLogprob } from '../engine/sampling.js';
import type { Tokenizer } from '../tokenizer/types.js';

export interface BackendModelInfo {
  /** the name clients put in `model` */
  id: string;
  /** other accepted names (e.g. the model digest) */
  aliases?: string[];
  contextLength: number;
  /** unix seconds */
  created: number;
  ownedBy: string;
}

export interface BackendSampling {
  temperature: number;
  topP?: number;
  topK?: number;
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** token id → bias in [-100, 100]; -100 bans */
  logitBias?: ReadonlyMap<number, number>;
}

export interface BackendRequest {
  promptIds: number[];
  maxTokens: number;
  sampling: BackendSampling;
  signal?: AbortSignal;
  /** per-token deadline budget for the whole route, ms (swarm backends) */
  deadlineMs?: number;
  /** restricts the tokens drawn (structured output); generation ends when it is done */
  constraint?: TokenConstraint;
  /** report each token's log-probability and this many top alternatives (0..20) */
  logprobs?: number;
  /**
   * the API request this generation belongs to (its n / best_of generations share it), as
   * ApiServerOptions.onUsage and onEnd name it: a swarm backend settles the generation's
   * payment with that request's charge (none: the generation is a request of its own)
   */
  requestKey?: string;
}

/** One stage's share of one decoding step. */
export interface TimelineHop {
  /** peer id for remote hops, 'gateway' / 'local' for in-process stages */
  node: string;
  /** decoder layers [start, end) (start = end for embed/head-only stages) */
  start: number;
  end: number;
  computeMs: number;
  queueMs?: number;
  /** time to send this hop's output onward */
  sendMs?: number;
  budgetInMs?: number;
  slackMs?: number;
  /** 'embed' | 'layers' | 'head' */
  role: string;
}

export interface TokenTimeline {
  step: number;
  /** the generated token id */
  token: number;
  /** time since the previous token was released to the client of the pipeline (this token's share of the generation's wall time), ms */
  stepMs: number;
  /**
   * this step's own round trip over its remote route(s), STEP sent → RESULT in, ms (absent when
   * every stage is in-process). With receipts pipelined, tokens are released when their receipts
   * verified, so stepMs can be longer or shorter than this step took; routeMs is what it took.
   */
  routeMs?: number;
  hops: TimelineHop[];
}

export interface BackendToken {
  id: number;
  /** text this token completed (may be '' while a UTF-8 character is partial) */
  text: string;
  step: number;
  stepMs: number;
  timeline: TokenTimeline;
  /** with BackendRequest.logprobs */
  logprob?: number;
  top?: TokenLogprob[];
}

export interface BackendResult {
  tokens: number[];
  finishReason: 'stop' | 'length' | 'abort';
  promptTokens: number;
  /** text left in the stream decoder at the end */
  tailText: string;
}

export interface Backend {
  readonly model: BackendModelInfo;
  readonly tokenizer: Tokenizer;
  /** whether encode() should add BOS by default (the model's add_bos flag) */
  readonly addBos: boolean;
  /** yields one event per generated token; returns how it ended */
  generate(req: BackendRequest): AsyncGenerator<BackendToken, BackendResult, void>;
  /** reason the backend cannot take requests at all (shutting down), or undefined */
  unavailable?(): string | undefined;
  /** readiness for /healthz: e.g. whether a route covers every layer, and the swarm seen */
  status?(): { ready: boolean; reason?: string; detail?: Record<string, unknown> };
  /** the swarm behind it (nodes, per-layer coverage; GET /v1/odsi/status), for backends that have one */
  swarmStatus?(): object;
  close(): Promise<void>;
}
