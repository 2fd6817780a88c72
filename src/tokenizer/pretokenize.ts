// Pre-tokenizer regexes of byte-level BPE models, keyed by GGUF tokenizer.ggml.pre, as
// llama.cpp (llm_tokenizer_bpe) applies them: each regex in turn splits every piece left by
// the previous one, and text between matches is kept as its own piece.
import { ModelFormatError } from '../model/types.js';

const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const LLAMA3 =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2 =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const PRE: Record<string, string[]> = {
  default: ['[\\p{P}\\$\\+<=>\\^~\\|]+', GPT2, '\\p{N}+', '[0-9][0-9][0-9]'],
  'llama-bpe': [LLAMA3],
  llama3: [LLAMA3],
  falcon3: [LLAMA3],
  smollm: ['\\p{N}', GPT2],
  starcoder: ['\\p{N}', GPT2],
  refact: ['\\p{N}', GPT2],
  'command-r': ['\\p{N}', GPT2],
  gpt2: [GPT2],
  'gpt-2': [GPT2],
  'phi-2': [GPT2],
  mpt: [GPT2],
  olmo: [GPT2],
  qwen2: [QWEN2],
};

export const SUPPORTED_PRE = Object.keys(PRE);

export function preTokenizerRegexes(pre: string | undefined): RegExp[] {
  const src = PRE[pre ?? 'default'];
  if (!src) {
    throw new ModelFormatError(`unsupported BPE pre-tokenizer '${pre}' (tokenizer.ggml.pre); supported: ${SUPPORTED_PRE.join(', ')}`);
  }
  return src.map(regexFromPattern);
}

// llama.cpp's whitespace (unicode.cpp): U+0009..U+000D, space, U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000. JavaScript's \s differs: it has
// U+FEFF (a byte order mark, not a space for llama.cpp) and lacks U+0085.
const WHITESPACE = '\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';

/** `pattern` with \s and \S meaning llama.cpp's whitespace, inside and outside character classes. */
function withLlamaWhitespace(pattern: string): string {
  let out = '';
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\' && i + 1 < pattern.length) {
      const n = pattern[++i]!;
      if (n === 's') out += inClass ? WHITESPACE : `[${WHITESPACE}]`;
      else if (n === 'S' && !inClass) out += `[^${WHITESPACE}]`;
      else if (n === 'S') throw new ModelFormatError('tokenizer pre-tokenizer regex uses \\S inside a character class');
      else out += c + n;
      continue;
    }
    if (c === '[' && !inClass) inClass = true;
    else if (c === ']' && inClass) inClass = false;
    out += c;
  }
  return out;
}

export function regexFromPattern(pattern: string): RegExp {
  try {
    return new RegExp(withLlamaWhitespace(pattern), 'gu');
  } catch (e) {
    throw new ModelFormatError(`tokenizer pre-tokenizer regex does not compile in JavaScript: ${(e as Error).message}`);
  }
}

export function splitWords(text: string, regexes: RegExp[]): string[] {
  let pieces = [text];
  for (const re of regexes) {
    const next: string[] = [];
    for (const p of pieces) {
      let last = 0;
      for (const m of p.matchAll(re)) {
        if (m[0].length === 0) continue;
        if (m.index > last) next.push(p.slice(last, m.index));
        next.push(m[0]);
        last = m.index + m[0].length;
      }
      if (last < p.length) next.push(p.slice(last));
    }
    pieces = next;
  }
  return pieces;
}
