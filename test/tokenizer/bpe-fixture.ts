// A small byte-level BPE vocabulary trained here, deterministically, so BPE code paths can be
// tested (and compared with llama.cpp) without downloading a real model.
import type { TokenizerSpec } from '../../src/model/types.js';
import { BYTE_TO_CHAR, toByteLevel } from '../../src/tokenizer/bytelevel.js';
import { splitWords, preTokenizerRegexes } from '../../src/tokenizer/pretokenize.js';
import { TokenType } from '../../src/tokenizer/vocab.js';

export const BPE_CORPUS = `Once upon a time, there was a little girl named Lily. She loved to play outside in the park.
One day, she saw a big dog. The dog was happy and wanted to play with the ball. "Hello!" said Lily.
They played all day until the sun went down. It's a nice story, isn't it? We'll see 1234 apples and 56 pears.
Café au lait, naïve résumé. 日本語のテキスト。 Привет, мир! مرحبا بالعالم 😀😀 the the the then there these those
	tabs	and    spaces   and
newlines and the end.`;

export const SPECIALS = ['<|begin_of_text|>', '<|end_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'];
/** user-defined tokens: '<tool>' is split out even without parseSpecial; '<|im_end|>' is an
 * end-of-generation marker, which llama.cpp turns into a control token whatever the file says */
export const USER_DEFINED = ['<tool>', '<|im_end|>'];

/** Llama 3 Instruct's chat template (Meta-Llama-3-8B-Instruct tokenizer_config.json). */
export const LLAMA3_TEMPLATE =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

export function trainBpe(nMerges = 300, pre = 'gpt2'): { tokens: string[]; merges: string[] } {
  const counts = new Map<string, number>();
  for (const w of splitWords(BPE_CORPUS, preTokenizerRegexes(pre))) {
    const b = toByteLevel(w);
    counts.set(b, (counts.get(b) ?? 0) + 1);
  }
  const words = [...counts].map(([w, c]) => ({ syms: Array.from(w), c }));
  const tokens = [...BYTE_TO_CHAR];
  const merges: string[] = [];
  for (let m = 0; m < nMerges; m++) {
    const pairs = new Map<string, number>();
    for (const { syms, c } of words)
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = syms[i] + ' ' + syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + c);
      }
    let best: string | undefined;
    let bestN = 1;
    for (const [k, n] of pairs) if (n > bestN || (n === bestN && best !== undefined && k < best)) [best, bestN] = [k, n];
    if (!best) break;
    const [a, b] = best.split(' ') as [string, string];
    merges.push(best);
    tokens.push(a + b);
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(a + b);
          i++;
        } else out.push(w.syms[i]!);
      }
      w.syms = out;
    }
  }
  return { tokens, merges };
}

export function bpeSpec(pre: string, opts: { chatTemplate?: string } = {}): TokenizerSpec {
  const { tokens, merges } = trainBpe();
  const all = [...tokens, ...SPECIALS, ...USER_DEFINED];
  const types = new Int32Array(all.length).fill(TokenType.Normal);
  for (let i = tokens.length; i < all.length; i++)
    types[i] = i < tokens.length + SPECIALS.length ? TokenType.Control : TokenType.UserDefined;
  return {
    model: 'gpt2',
    pre,
    tokens: all,
    tokenTypes: types,
    merges,
    bosId: tokens.length,
    eosId: tokens.length + 1,
    addBos: true,
    addEos: false,
    chatTemplate: opts.chatTemplate,
  };
}

/** The same vocabulary as a HF tokenizer.json (Llama 3 style pre-tokenizer and post-processor). */
export function bpeTokenizerJson(): string {
  const spec = bpeSpec('llama-bpe');
  const vocab: Record<string, number> = {};
  spec.tokens.forEach((t, i) => {
    if (spec.tokenTypes![i] === TokenType.Normal) vocab[t] = i;
  });
  return JSON.stringify({
    version: '1.0',
    added_tokens: [...SPECIALS, ...USER_DEFINED].map((content, k) => ({
      id: spec.tokens.length - SPECIALS.length - USER_DEFINED.length + k,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: k < SPECIALS.length,
    })),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: {
            Regex:
              "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
          },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [],
          special_tokens: {},
        },
      ],
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab,
      merges: spec.merges!.map((m) => m.split(' ')),
    },
  });
}
