// Request validation for the OpenAI-compatible endpoints (zod). Unknown fields are ignored,
// as OpenAI-compatible servers usually do; known fields are checked strictly.
import { z } from 'zod';
import { invalid, type ApiError } from './errors.js';

const stop = z.union([z.string(), z.array(z.string()).max(4)]).nullish();

/** odsi's extension: per-request deadline and the per-token timeline in the response */
const odsiExt = z
  .object({
    deadline_ms: z.number().positive().max(600_000).optional(),
    timeline: z.boolean().optional(),
  })
  .optional();

const common = {
  model: z.string().min(1),
  max_tokens: z.number().int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.number().int().nullish(),
  stop,
  n: z.number().int().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  odsi: odsiExt,
  // accepted only so a request asking for them gets a clear "not supported" instead of silence
  logprobs: z.union([z.boolean(), z.number()]).nullish(),
  echo: z.boolean().nullish(),
  tools: z.array(z.unknown()).nullish(),
};

const tokenArray = z.array(z.number().int().min(0)).min(1);

export const completionSchema = z.object({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()).length(1), tokenArray, z.array(tokenArray).length(1)]),
});

const contentPart = z.object({ type: z.literal('text'), text: z.string() });
export const chatSchema = z.object({
  ...common,
  max_completion_tokens: z.number().int().min(1).nullish(),
  messages: z
    .array(
      z.object({
        role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
        content: z.union([z.string(), z.array(contentPart), z.null()]),
      }),
    )
    .min(1),
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
  const param = issue.path.length ? issue.path.map(String).join('.') : null;
  const err: ApiError = invalid(`invalid value for '${param ?? 'body'}': ${issue.message}`, param);
  throw err;
}
