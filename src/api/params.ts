// The OpenAI parameters this server knows but cannot honour (each refused with a 400 naming
// it and saying what is allowed), response_format (compiled to a schema for constrained
// decoding), and fill-in-the-middle prompts for `suffix`.

import { invalid } from './errors.js';
import { ANY_OBJECT, compileSchema, type SchemaNode } from './json-schema.js';
import type { ChatRequest } from './schemas.js';
import type { Tokenizer } from '../tokenizer/types.js';

const set = (v: unknown): boolean => v !== undefined && v !== null;

/** Chat parameters odsi refuses unless they ask for what it does anyway. */
export function refuseUnsupportedChat(body: ChatRequest): void {
  const noTools = "this model's chat template does not support tools, so tool calling is unavailable";
  if (set(body.tools) && !(Array.isArray(body.tools) && body.tools.length === 0)) throw invalid(`${noTools}; omit 'tools'`, 'tools');
  if (set(body.tool_choice) && body.tool_choice !== 'none') throw invalid(`${noTools}; 'tool_choice' may only be "none"`, 'tool_choice');
  if (set(body.parallel_tool_calls)) throw invalid(`${noTools}; omit 'parallel_tool_calls'`, 'parallel_tool_calls');
  if (set(body.functions)) throw invalid(`${noTools}; omit 'functions'`, 'functions');
  if (set(body.function_call) && body.function_call !== 'none')
    throw invalid(`${noTools}; 'function_call' may only be "none"`, 'function_call');
  if (set(body.audio)) throw invalid("audio output is not supported; omit 'audio'", 'audio');
  if (set(body.modalities) && !(Array.isArray(body.modalities) && body.modalities.every((m) => m === 'text')))
    throw invalid('only the "text" modality is supported', 'modalities');
  if (set(body.prediction)) throw invalid("predicted outputs are not supported; omit 'prediction'", 'prediction');
  if (set(body.reasoning_effort)) throw invalid("this model does not reason; omit 'reasoning_effort'", 'reasoning_effort');
  if (set(body.verbosity)) throw invalid("output verbosity cannot be set; omit 'verbosity'", 'verbosity');
  if (set(body.web_search_options)) throw invalid("web search is not available; omit 'web_search_options'", 'web_search_options');
  if (set(body.store) && body.store !== false) throw invalid("completions are never stored; 'store' may only be false", 'store');
  if (set(body.metadata) && !(typeof body.metadata === 'object' && Object.keys(body.metadata as object).length === 0))
    throw invalid("'metadata' applies to stored completions, which this server does not keep; omit it", 'metadata');
  if (set(body.service_tier) && body.service_tier !== 'auto' && body.service_tier !== 'default')
    throw invalid('\'service_tier\' may only be "auto" or "default"', 'service_tier');
  if (set(body.top_logprobs) && !body.logprobs) throw invalid("'top_logprobs' needs 'logprobs': true", 'top_logprobs');
}

/** response_format → the schema constrained decoding enforces, or undefined for plain text. */
export function responseFormat(v: unknown): SchemaNode | undefined {
  if (!set(v)) return undefined;
  const rf = v as { type?: unknown; json_schema?: unknown };
  const allowed = '\'response_format.type\' must be "text", "json_object" or "json_schema"';
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid(allowed, 'response_format');
  for (const k of Object.keys(rf)) {
    if (k !== 'type' && k !== 'json_schema') throw invalid(`unknown field '${k}' in 'response_format'`, `response_format.${k}`);
  }
  if (rf.type === 'text') return undefined;
  if (rf.type === 'json_object') return ANY_OBJECT;
  if (rf.type !== 'json_schema') throw invalid(allowed, 'response_format.type');
  const js = rf.json_schema as { name?: unknown; schema?: unknown; strict?: unknown; description?: unknown } | undefined;
  if (!js || typeof js !== 'object')
    throw invalid("'response_format.json_schema' must be an object with 'name' and 'schema'", 'response_format.json_schema');
  for (const k of Object.keys(js)) {
    if (!['name', 'schema', 'strict', 'description'].includes(k))
      throw invalid(`unknown field '${k}' in 'response_format.json_schema'`, `response_format.json_schema.${k}`);
  }
  if (typeof js.name !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(js.name))
    throw invalid("'response_format.json_schema.name' must be 1-64 letters, digits, '_' or '-'", 'response_format.json_schema.name');
  if (js.schema === undefined) throw invalid("'response_format.json_schema.schema' is required", 'response_format.json_schema.schema');
  return compileSchema(js.schema, 'response_format.json_schema.schema');
}

/** The model's fill-in-the-middle tokens (prefix, suffix, middle), if it has them. */
export function fimTokens(tk: Tokenizer): [number, number, number] | undefined {
  for (const names of [
    ['<|fim_prefix|>', '<|fim_suffix|>', '<|fim_middle|>'],
    ['<fim_prefix>', '<fim_suffix>', '<fim_middle>'],
    ['<PRE>', '<SUF>', '<MID>'],
  ]) {
    const ids = names.map((n) => tk.tokenId(n));
    if (ids.every((id) => id !== undefined)) return ids as [number, number, number];
  }
  return undefined;
}
