// Refusing prompts that cannot fit the context without blocking the event loop on them.
// Tokenizing is synchronous and costs about a microsecond per character, so a long text is
// first bounded by its length (no token stands for more than maxTokenChars characters), then
// counted in slices cut before a space, with a turn of the event loop between slices, and
// refused as soon as it surely exceeds the context. Only a text that may fit is tokenized whole.

import type { Tokenizer } from '../tokenizer/types.js';
import { invalid } from './errors.js';

export interface LengthCheck {
  tokenizer: Tokenizer;
  /** the model's context length, tokens */
  contextLength: number;
  /** the most characters one token stands for (limits.ts maxTokenChars) */
  maxTokenChars: number;
  /** characters per slice when counting (default 16 384) */
  sliceChars?: number;
}

/** tokens a cut can save at most: the pre-tokenizers split before a space, so in practice none */
const SLACK_PER_CUT = 2;

/** Throws a 400 context_length_exceeded when `text` surely has >= contextLength tokens. */
export async function checkPromptLength(c: LengthCheck, text: string, parseSpecial: boolean, param: string): Promise<void> {
  const ctx = c.contextLength;
  const refuse = (atLeast: number) =>
    invalid(
      `the prompt is at least ${atLeast} tokens (${text.length} characters); this model's context is ${ctx} tokens`,
      param,
      'context_length_exceeded',
    );
  const bound = Math.ceil(text.length / c.maxTokenChars);
  if (bound >= ctx) throw refuse(bound);
  const slice = c.sliceChars ?? 16_384;
  if (text.length <= 2 * slice) return;
  let tokens = 0;
  let cuts = 0;
  for (let at = 0; at < text.length;) {
    let end = Math.min(text.length, at + slice);
    if (end < text.length) {
      const space = text.lastIndexOf(' ', end);
      if (space > at) end = space;
    }
    tokens += c.tokenizer.encode(text.slice(at, end), { addBos: false, parseSpecial }).length;
    if (at > 0) cuts++;
    at = end;
    if (tokens - cuts * SLACK_PER_CUT >= ctx) throw refuse(tokens - cuts * SLACK_PER_CUT);
    await new Promise<void>((r) => setImmediate(r));
  }
}
