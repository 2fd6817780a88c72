// SentencePiece-style encoding as llama.cpp does it (llm_tokenizer_spm): start from single
// characters, repeatedly merge the adjacent pair whose joined text is the highest-scoring
// vocabulary entry (ties: leftmost first), and spell characters missing from the vocabulary
// as <0xXX> byte tokens.
import { Heap } from '../util/heap.js';
import { TokenType, type Vocab } from './vocab.js';

interface Sym {
  start: number; // UTF-16 offset into the text
  n: number; // UTF-16 length; 0 once merged into its left neighbour
  prev: number;
  next: number;
}

interface Bigram {
  left: number;
  right: number;
  score: number;
  size: number;
}

const utf8 = new TextEncoder();
const SPACE_MARK = '\u2581'; // ▁

export class SpmEncoder {
  constructor(
    private readonly vocab: Vocab,
    private readonly scores: Float32Array | undefined,
    private readonly unkId: number | undefined,
  ) {}

  /** Tokenize one raw-text fragment (prefix space already added by the caller). */
  encodeFragment(raw: string, out: number[]): void {
    const text = raw.replaceAll(' ', SPACE_MARK);
    const syms: Sym[] = [];
    for (let off = 0; off < text.length;) {
      const cp = text.codePointAt(off)!;
      const n = cp > 0xffff ? 2 : 1;
      syms.push({ start: off, n, prev: syms.length - 1, next: off + n < text.length ? syms.length + 1 : -1 });
      off += n;
    }
    const revMerge = new Map<string, [number, number]>();
    const queue = new Heap<Bigram>((a, b) => a.score > b.score || (a.score === b.score && a.left < b.left));
    const symText = (s: Sym) => text.slice(s.start, s.start + s.n);
    const tryAdd = (left: number, right: number) => {
      if (left === -1 || right === -1) return;
      const l = syms[left]!;
      const r = syms[right]!;
      const joined = text.slice(l.start, r.start + r.n);
      const id = this.vocab.toId.get(joined);
      if (id === undefined) return;
      queue.push({ left, right, score: this.scores ? this.scores[id]! : 0, size: l.n + r.n });
      revMerge.set(joined, [left, right]);
    };
    for (let i = 1; i < syms.length; i++) tryAdd(i - 1, i);

    for (let b = queue.pop(); b; b = queue.pop()) {
      const l = syms[b.left]!;
      const r = syms[b.right]!;
      // stale entry: one side was merged away or grew since it was queued
      if (l.n === 0 || r.n === 0 || l.n + r.n !== b.size) continue;
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) syms[r.next]!.prev = b.left;
      tryAdd(l.prev, b.left);
      tryAdd(b.left, l.next);
    }

    const resegment = (s: Sym) => {
      const t = symText(s);
      const id = this.vocab.toId.get(t);
      if (id !== undefined) {
        out.push(id);
        return;
      }
      const p = revMerge.get(t);
      if (!p) {
        for (const byte of utf8.encode(t)) out.push(this.byteToken(byte));
        return;
      }
      resegment(syms[p[0]]!);
      resegment(syms[p[1]]!);
    };
    if (syms.length > 0) for (let i = 0; i !== -1; i = syms[i]!.next) resegment(syms[i]!);
  }

  private byteToken(byte: number): number {
    const hex = byte.toString(16).toUpperCase().padStart(2, '0');
    const id = this.vocab.toId.get(`<0x${hex}>`) ?? (byte < 0x80 ? this.vocab.toId.get(String.fromCharCode(byte)) : undefined);
    if (id !== undefined) return id;
    if (this.unkId !== undefined) return this.unkId;
    throw new RangeError(`the vocabulary has no byte token <0x${hex}> and no unknown token`);
  }
}

/** UTF-8 bytes of one SPM token as llama.cpp renders it (token_to_piece). */
export function spmPiece(vocab: Vocab, id: number, special: boolean): Uint8Array {
  const text = vocab.tokens[id]!;
  switch (vocab.type(id)) {
    case TokenType.Normal:
      return utf8.encode(text.replaceAll(SPACE_MARK, ' '));
    case TokenType.Byte: {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(text);
      return m ? Uint8Array.of(parseInt(m[1]!, 16)) : utf8.encode(text);
    }
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
