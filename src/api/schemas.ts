// Request validation for the OpenAI-compatible endpoints (zod). Every parameter of OpenAI's
// chat and completions create calls is listed: a field this server does not know is refused
// with a 400 naming it (nothing is silently ignored); the ones it knows but cannot honour are
// refused in params.ts. Messages name the parameter and say what is allowed.
import { z } from 'zod';
import { invalid } from './errors.js';

const MAX_STOP = 4;

/** odsi's extension: per-request deadline and the per-token timeline in the response */
const odsiExt = z
  .strictObject({
    deadline_ms: z.number().positive().max(600_000).optional(),
    timeline: z.boolean().optional(),
  })
  .optional();

/** checked by hand (checkStop, checkPrompt, checkContent, checkLogitBias) for specific messages */
const handChecked = z.unknown().optional();

const common = {
  model: z.string().min(1),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop: handChecked,
  n: z.number().int().min(1).max(8).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  logit_bias: handChecked,
  /** an end-user id for abuse tracking: accepted, it does not change the output */
  user: z.string().nullish(),
  odsi: odsiExt,
};

export const completionSchema = z.strictObject({
  ...common,
  prompt: handChecked,
  logprobs: z.number().int().min(0).max(5).nullish(),
  echo: z.boolean().nullish(),
  best_of: z.number().int().min(1).max(8).nullish(),
  suffix: z.string().nullish(),
});

export const chatSchema = z.strictObject({
  ...common,
  max_completion_tokens: z.number().int().min(1).nullish(),
  messages: z
    .array(
      z.strictObject({
        role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
        content: handChecked,
      }),
    )
    .min(1),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
  response_format: handChecked,
  tools: handChecked,
  tool_choice: handChecked,
  parallel_tool_calls: handChecked,
  functions: handChecked,
  function_call: handChecked,
  audio: handChecked,
  modalities: handChecked,
  prediction: handChecked,
  reasoning_effort: handChecked,
  verbosity: handChecked,
  web_search_options: handChecked,
  store: handChecked,
  metadata: handChecked,
  service_tier: handChecked,
  prompt_cache_key: z.string().nullish(),
  safety_identifier: z.string().nullish(),
});

export type CompletionRequest = z.infer<typeof completionSchema>;
export type ChatRequest = z.infer<typeof chatSchema>;

/** Parse or throw a 400 ApiError naming the first offending field. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw invalid('request body must be a JSON object');
  }
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    const param = [...path, key].join('.');
    throw invalid(`unknown parameter '${param}': this server does not support it`, param, 'unknown_parameter');
  }
  const param = path.length ? path.join('.') : null;
  throw invalid(`invalid value for '${param ?? 'body'}': ${issue.message}`, param);
}

/** `stop`: a string or at most 4 strings. */
export function checkStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return [v];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string'))
    throw invalid("'stop' must be a string or an array of up to 4 strings", 'stop');
  if (v.length > MAX_STOP) throw invalid(`'stop' allows at most ${MAX_STOP} sequences, got ${v.length}`, 'stop');
  return v as string[];
}

/** completions `prompt`: a string, one string in an array, token ids, or one array of token ids. */
export function checkPrompt(v: unknown): string | number[] {
  const one = Array.isArray(v) && v.length === 1 ? v[0] : v;
  if (typeof one === 'string') return one;
  if (Array.isArray(v) && v.length > 1 && v.every((s) => typeof s === 'string' || Array.isArray(s)))
    throw invalid(
      `'prompt' must be a single prompt; batches of ${v.length} prompts are not supported (use n for several choices)`,
      'prompt',
    );
  const ids = Array.isArray(one) ? one : undefined;
  if (!ids || ids.length === 0)
    throw invalid("'prompt' must be a string, an array with one string, or a non-empty array of token ids", 'prompt');
  const param = one === v ? 'prompt' : 'prompt.0';
  ids.forEach((t, i) => {
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0)
      throw invalid(`token ids must be non-negative integers; ${param}[${i}] is ${JSON.stringify(t)}`, param);
  });
  return ids as number[];
}

/** a message's `content`: a string, null, or text parts */
export function checkContent(v: unknown, i: number): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  const param = `messages.${i}.content`;
  if (!Array.isArray(v)) throw invalid(`'${param}' must be a string or an array of text parts`, param);
  return v
    .map((part: unknown, j) => {
      const p = part as { type?: unknown; text?: unknown } | null;
      if (p?.type !== 'text')
        throw invalid(`only text content parts are supported; part ${j} has type ${JSON.stringify(p?.type)}`, `${param}.${j}.type`);
      if (typeof p.text !== 'string') throw invalid("a text content part needs a string 'text'", `${param}.${j}.text`);
      return p.text;
    })
    .join('');
}

/** `logit_bias`: token id (as a string key) → bias in [-100, 100]. */
export function checkLogitBias(v: unknown, vocabSize: number): Map<number, number> | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid("'logit_bias' must be an object mapping token ids to biases", 'logit_bias');
  const out = new Map<number, number>();
  for (const [k, b] of Object.entries(v as Record<string, unknown>)) {
    if (!/^\d+$/.test(k) || Number(k) >= vocabSize)
      throw invalid(`'logit_bias' keys must be token ids in [0, ${vocabSize}); got ${JSON.stringify(k)}`, 'logit_bias');
    if (typeof b !== 'number' || !(b >= -100 && b <= 100))
      throw invalid(`'logit_bias' values must be numbers in [-100, 100]; token ${k} has ${JSON.stringify(b)}`, 'logit_bias');
    out.set(Number(k), b);
  }
  return out;
}
