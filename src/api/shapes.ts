// The OpenAI response objects of /v1/completions and /v1/chat/completions: full responses with
// one or more choices, streamed chunks, usage, and the two endpoints' logprobs shapes.

import { randomBytes } from 'node:crypto';

export type FinishReason = 'stop' | 'length';

export interface TopToken {
  token: string;
  bytes: number[];
  logprob: number;
}

/** one generated token with its log-probability and the most likely alternatives */
export interface TokenInfo extends TopToken {
  top: TopToken[];
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChoiceResult {
  index: number;
  text: string;
  finish: FinishReason;
  /** with logprobs: every generated token */
  tokens?: TokenInfo[];
  /** where the generated text starts in `text` (after an echoed prompt) */
  textOffset: number;
}

type Obj = Record<string, unknown>;

export interface Shape {
  full(choices: ChoiceResult[], usage: Usage): Obj;
  opening(index: number): Obj | undefined;
  /** `offset`: where `text` starts in the choice's text (completions' text_offset) */
  delta(index: number, text: string, tokens: TokenInfo[] | undefined, offset: number): Obj;
  finish(index: number, finish: FinishReason): Obj;
  usage(usage: Usage): Obj;
}

const newId = (prefix: string) => `${prefix}-${randomBytes(12).toString('hex')}`;
const now = () => Math.floor(Date.now() / 1000);

/** completions' logprobs object: parallel arrays, top alternatives as {token: logprob} */
function completionLogprobs(tokens: TokenInfo[], offset: number): Obj {
  const text_offset: number[] = [];
  let at = offset;
  for (const t of tokens) {
    text_offset.push(at);
    at += t.token.length;
  }
  return {
    tokens: tokens.map((t) => t.token),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map((a) => [a.token, a.logprob]))),
    text_offset,
  };
}

/** chat's logprobs object */
function chatLogprobs(tokens: TokenInfo[]): Obj {
  return {
    content: tokens.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes, top_logprobs: t.top })),
    refusal: null,
  };
}

export function completionShape(model: string, logprobs: boolean): Shape {
  const base = { id: newId('cmpl'), object: 'text_completion', created: now(), model, system_fingerprint: 'odsi' };
  const choice = (index: number, text: string, finish: FinishReason | null, lp: Obj | null) => ({
    text,
    index,
    logprobs: lp,
    finish_reason: finish,
  });
  return {
    full: (choices, usage) => ({
      ...base,
      choices: choices.map((c) => choice(c.index, c.text, c.finish, logprobs ? completionLogprobs(c.tokens ?? [], c.textOffset) : null)),
      usage,
    }),
    opening: () => undefined,
    delta: (index, text, tokens, offset) => ({
      ...base,
      choices: [choice(index, text, null, logprobs && tokens ? completionLogprobs(tokens, offset) : null)],
    }),
    finish: (index, finish) => ({ ...base, choices: [choice(index, '', finish, null)] }),
    usage: (usage) => ({ ...base, choices: [], usage }),
  };
}

export function chatShape(model: string, logprobs: boolean): Shape {
  const id = newId('chatcmpl');
  const created = now();
  const full = { id, object: 'chat.completion', created, model, system_fingerprint: 'odsi', service_tier: 'default' };
  const chunk = { id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'odsi', service_tier: 'default' };
  const delta = (index: number, d: Obj, finish: FinishReason | null, lp: Obj | null) => ({
    ...chunk,
    choices: [{ index, delta: d, logprobs: lp, finish_reason: finish }],
  });
  return {
    full: (choices, usage) => ({
      ...full,
      choices: choices.map((c) => ({
        index: c.index,
        message: { role: 'assistant', content: c.text, refusal: null },
        logprobs: logprobs ? chatLogprobs(c.tokens ?? []) : null,
        finish_reason: c.finish,
      })),
      usage,
    }),
    opening: (index) => delta(index, { role: 'assistant', content: '' }, null, null),
    delta: (index, text, tokens) => delta(index, { content: text }, null, logprobs && tokens ? chatLogprobs(tokens) : null),
    finish: (index, finish) => delta(index, {}, finish, null),
    usage: (usage) => ({ ...chunk, choices: [], usage }),
  };
}
