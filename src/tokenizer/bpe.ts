// Byte-level BPE (GPT-2 family: Llama 3, SmolLM, Qwen) as llama.cpp's llm_tokenizer_bpe does
// it: regex pre-tokenization, bytes → GPT-2 alphabet, then merges by rank (lowest first).
import { fromByteLevel, toByteLevel } from './bytelevel.js';
import { Heap } from '../util/heap.js';
import { splitWords } from './pretokenize.js';
import { TokenType, type Vocab } from './vocab.js';
import { ModelFormatError } from '../model/types.js';

interface Bigram {
  left: number;
  right: number;
  rank: number;
  text: string;
}

export class BpeEncoder {
  private readonly ranks = new Map<string, number>();

  constructor(
    private readonly vocab: Vocab,
    merges: (string | [string, string])[],
    private readonly regexes: RegExp[],
    /** take a whole pre-tokenized word when it is itself a token (Llama 3) */
    private readonly ignoreMerges: boolean,
  ) {
    merges.forEach((m, rank) => {
      let a: string, b: string;
      if (Array.isArray(m)) [a, b] = m;
      else {
        const sp = m.indexOf(' ', 1);
        if (sp < 0) throw new ModelFormatError(`BPE merge ${rank} ("${m}") is not two space-separated parts`);
        a = m.slice(0, sp);
        b = m.slice(sp + 1);
      }
      const key = a + ' ' + b;
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
    });
  }

  encodeFragment(text: string, out: number[]): void {
    for (const word of splitWords(text, this.regexes)) this.encodeWord(toByteLevel(word), out);
  }

  private encodeWord(word: string, out: number[]): void {
    if (this.ignoreMerges) {
      const id = this.vocab.toId.get(word);
      if (id !== undefined) {
        out.push(id);
        return;
      }
    }
    const chars = Array.from(word);
    const syms = chars.map((ch, i) => ({ text: ch, prev: i - 1, next: i + 1 < chars.length ? i + 1 : -1 }));
    const queue = new Heap<Bigram>((a, b) => a.rank < b.rank || (a.rank === b.rank && a.left < b.left));
    const add = (left: number, right: number) => {
      if (left < 0 || right < 0) return;
      const l = syms[left]!.text;
      const r = syms[right]!.text;
      const rank = this.ranks.get(l + ' ' + r);
      if (rank !== undefined) queue.push({ left, right, rank, text: l + r });
    };
    for (let i = 1; i < syms.length; i++) add(i - 1, i);
    for (let b = queue.pop(); b; b = queue.pop()) {
      const l = syms[b.left]!;
      const r = syms[b.right]!;
      if (l.text.length === 0 || r.text.length === 0 || l.text + r.text !== b.text) continue; // outdated
      l.text += r.text;
      r.text = '';
      l.next = r.next;
      if (r.next >= 0) syms[r.next]!.prev = b.left;
      add(l.prev, b.left);
      add(b.left, l.next);
    }
    for (const s of syms) {
      if (s.text.length === 0) continue;
      const id = this.vocab.toId.get(s.text);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      // not a token: fall back to single characters that are (llama.cpp drops the rest)
      for (const ch of s.text) {
        const c = this.vocab.toId.get(ch);
        if (c !== undefined) out.push(c);
      }
    }
  }
}

const utf8 = new TextEncoder();

/** UTF-8 bytes of one byte-level BPE token (llama.cpp token_to_piece). */
export function bpePiece(vocab: Vocab, id: number, special: boolean): Uint8Array {
  const text = vocab.tokens[id]!;
  switch (vocab.type(id)) {
    case TokenType.Normal:
    case TokenType.Undefined:
      return fromByteLevel(text);
    case TokenType.UserDefined:
      return utf8.encode(text);
    case TokenType.Control:
    case TokenType.Unknown:
      return special ? utf8.encode(text) : EMPTY;
    default:
      return EMPTY;
  }
}

const EMPTY = new Uint8Array(0);
