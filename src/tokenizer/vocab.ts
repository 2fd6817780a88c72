// Vocabulary shared by both tokenizer kinds: token texts, llama.cpp-style token attributes,
// the text→id map, and the special-token split that runs before any model-specific encoding.
import { ModelFormatError, type TokenizerSpec } from '../model/types.js';

/** GGUF tokenizer.ggml.token_type values. */
export const TokenType = {
  Undefined: 0,
  Normal: 1,
  Unknown: 2,
  Control: 3,
  UserDefined: 4,
  Unused: 5,
  Byte: 6,
} as const;

/** Texts llama.cpp treats as end-of-generation (and as control tokens) in any vocabulary. */
export const EOG_TEXTS = new Set([
  '<|eot_id|>',
  '<|eom_id|>',
  '<|im_end|>',
  '<|end|>',
  '<|return|>',
  '<|call|>',
  '<end_of_turn>',
  '<|endoftext|>',
  '<EOT>',
  '_<EOT>',
  '<|end_of_text|>',
  '<end_of_utterance>',
  '<｜end▁of▁sentence｜>',
]);

/** A piece of input after the special-token split: raw text, or an already-known token id. */
export type Fragment = string | number;

const utf8 = new TextEncoder();

export class Vocab {
  readonly tokens: string[];
  readonly types: Int32Array;
  /** text → id; like llama.cpp the last duplicate wins */
  readonly toId = new Map<string, number>();
  /** control / user-defined / unknown tokens, longest text first (llama.cpp's cache_special_tokens) */
  private readonly specials: number[];

  constructor(spec: TokenizerSpec) {
    if (!Array.isArray(spec.tokens) || spec.tokens.length === 0) {
      throw new ModelFormatError('tokenizer has an empty vocabulary (tokenizer.ggml.tokens)');
    }
    this.tokens = spec.tokens;
    const n = spec.tokens.length;
    if (spec.tokenTypes && spec.tokenTypes.length !== n) {
      throw new ModelFormatError(`tokenizer has ${spec.tokenTypes.length} token types for ${n} tokens`);
    }
    if (spec.scores && spec.scores.length !== n) {
      throw new ModelFormatError(`tokenizer has ${spec.scores.length} scores for ${n} tokens`);
    }
    this.types = spec.tokenTypes ? Int32Array.from(spec.tokenTypes) : new Int32Array(n).fill(TokenType.Normal);
    for (const [k, v] of [
      ['bos', spec.bosId],
      ['eos', spec.eosId],
      ['unk', spec.unkId],
      ['pad', spec.padId],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v >= n)) {
        throw new ModelFormatError(`tokenizer ${k} token id ${v} is outside the vocabulary (size ${n})`);
      }
    }
    for (let i = 0; i < n; i++) {
      const t = this.tokens[i];
      if (typeof t !== 'string') throw new ModelFormatError(`tokenizer token ${i} is not a string`);
      this.toId.set(t, i);
      // llama.cpp forces end-of-generation markers to be control tokens, whatever the file says
      if (EOG_TEXTS.has(t)) this.types[i] = TokenType.Control;
    }
    const special: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = this.types[i];
      if ((t === TokenType.Control || t === TokenType.UserDefined || t === TokenType.Unknown) && this.tokens[i]!.length > 0) {
        special.push(i);
      }
    }
    const byteLen = (id: number) => utf8.encode(this.tokens[id]!).length;
    special.sort((a, b) => byteLen(b) - byteLen(a) || a - b);
    this.specials = special;
  }

  get size(): number {
    return this.tokens.length;
  }

  type(id: number): number {
    return this.types[id] ?? TokenType.Undefined;
  }

  isControl(id: number): boolean {
    return this.type(id) === TokenType.Control;
  }

  checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.tokens.length) {
      throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.tokens.length})`);
    }
  }

  /**
   * Split text at special tokens, longest first (llama.cpp tokenizer_st_partition). Control and
   * unknown tokens count only when parseSpecial; user-defined tokens always do.
   */
  partition(text: string, parseSpecial: boolean): Fragment[] {
    let frags: Fragment[] = text.length > 0 ? [text] : [];
    for (const id of this.specials) {
      const t = this.type(id);
      if (!parseSpecial && (t === TokenType.Control || t === TokenType.Unknown)) continue;
      const needle = this.tokens[id]!;
      const next: Fragment[] = [];
      for (const f of frags) {
        if (typeof f === 'number' || !f.includes(needle)) {
          next.push(f);
          continue;
        }
        let from = 0;
        for (let at = f.indexOf(needle); at >= 0; at = f.indexOf(needle, from)) {
          if (at > from) next.push(f.slice(from, at));
          next.push(id);
          from = at + needle.length;
        }
        if (from < f.length) next.push(f.slice(from));
      }
      frags = next;
    }
    return frags;
  }
}
