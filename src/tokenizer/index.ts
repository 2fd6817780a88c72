// createTokenizer: one entry point for every tokenizer a model can carry.
//  - 'llama' (SentencePiece-style, GGUF scores): bit-exact with llama.cpp's SPM tokenizer.
//  - 'gpt2' (byte-level BPE from GGUF vocab + merges, regex chosen by tokenizer.ggml.pre),
//    or a HF tokenizer.json (converted to the same form, see hf.ts).
import { ModelFormatError, type TokenizerSpec } from '../model/types.js';
import { BpeEncoder, bpePiece } from './bpe.js';
import { createChatRenderer, type ChatRenderer } from './chat.js';
import { specFromHfTokenizerJson, type HfSpec } from './hf.js';
import { preTokenizerRegexes } from './pretokenize.js';
import { SpmEncoder, spmPiece } from './spm.js';
import { createStreamDecoder, decodeAll, type PieceSource } from './stream.js';
import type { ChatMessage, DecodeOptions, EncodeOptions, StreamDecoder, StreamDecoderOptions, Tokenizer } from './types.js';
import { EOG_TEXTS, TokenType, Vocab } from './vocab.js';

export type { ChatMessage, DecodeOptions, EncodeOptions, StreamDecoder, StreamDecoderOptions, Tokenizer } from './types.js';
export { ChatTemplateError, FALLBACK_CHAT_TEMPLATE } from './chat.js';
export { TokenType } from './vocab.js';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

interface Encoder {
  encodeFragment(text: string, out: number[]): void;
}

class OdsiTokenizer implements Tokenizer, PieceSource {
  readonly kind: 'spm' | 'bpe';
  readonly bosId?: number;
  readonly eosId?: number;
  readonly stopIds: number[];
  readonly vocabSize: number;
  readonly stripLeadingSpace: boolean;
  readonly hasChatTemplate: boolean;
  private readonly vocab: Vocab;
  private readonly encoder: Encoder;
  private readonly addSpacePrefix: boolean;
  private readonly addBosDefault: boolean;
  private readonly addEos: boolean;
  /** token bytes, computed on first use (a 128k vocabulary is mostly never decoded) */
  private readonly pieces: (Uint8Array | undefined)[] = [];
  private readonly specialPieces: (Uint8Array | undefined)[] = [];
  private readonly piece: (vocab: Vocab, id: number, special: boolean) => Uint8Array;
  private readonly chat: ChatRenderer;
  private readonly normalize?: 'NFC' | 'NFKC';

  constructor(spec: TokenizerSpec) {
    this.vocab = new Vocab(spec);
    this.vocabSize = this.vocab.size;
    this.bosId = spec.bosId;
    this.eosId = spec.eosId;
    this.addBosDefault = spec.addBos && spec.bosId !== undefined;
    this.addEos = spec.addEos && spec.eosId !== undefined;
    if (spec.model === 'llama') {
      this.kind = 'spm';
      this.addSpacePrefix = spec.addSpacePrefix ?? true;
      this.encoder = new SpmEncoder(this.vocab, spec.scores, spec.unkId);
      this.piece = spmPiece;
    } else {
      this.kind = 'bpe';
      this.addSpacePrefix = spec.addSpacePrefix ?? false;
      if (!spec.merges || spec.merges.length === 0) {
        throw new ModelFormatError('byte-level BPE tokenizer has no merges (tokenizer.ggml.merges)');
      }
      const regexes = (spec as HfSpec).preRegexes ?? preTokenizerRegexes(spec.pre);
      const ignoreMerges = (spec as HfSpec).ignoreMerges ?? (spec.pre === 'llama-bpe' || spec.pre === 'llama3');
      this.encoder = new BpeEncoder(this.vocab, (spec as HfSpec).mergePairs ?? spec.merges, regexes, ignoreMerges);
      this.piece = bpePiece;
    }
    this.normalize = (spec as HfSpec).normalize;
    this.stripLeadingSpace = this.kind === 'spm' && this.addSpacePrefix;

    const stops = new Set<number>();
    if (spec.eosId !== undefined) stops.add(spec.eosId);
    for (const id of spec.eotIds ?? []) {
      this.vocab.checkId(id);
      stops.add(id);
    }
    this.vocab.tokens.forEach((t, id) => {
      if (EOG_TEXTS.has(t) && this.vocab.type(id) === TokenType.Control) stops.add(id);
    });
    this.stopIds = [...stops];

    const tokenText = (id: number | undefined) => (id === undefined ? '' : this.vocab.tokens[id]!);
    this.hasChatTemplate = typeof spec.chatTemplate === 'string' && spec.chatTemplate.length > 0;
    this.chat = createChatRenderer(this.hasChatTemplate ? spec.chatTemplate : undefined, tokenText(spec.bosId), tokenText(spec.eosId));
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') throw new TypeError('encode() needs a string');
    // lone surrogates cannot be UTF-8; llama.cpp sees U+FFFD for them too
    const input = text.replace(LONE_SURROGATE, '\uFFFD');
    const addSpecial = opts.addBos ?? this.addBosDefault;
    const out: number[] = [];
    if (addSpecial && this.bosId !== undefined) out.push(this.bosId);
    let prevSpecial = true; // SPM: a prefix space goes before text that starts the input or follows a special token
    for (const f of this.vocab.partition(input, opts.parseSpecial ?? false)) {
      if (typeof f === 'number') {
        out.push(f);
        prevSpecial = true;
        continue;
      }
      const raw = this.normalize ? f.normalize(this.normalize) : f;
      this.encoder.encodeFragment(this.kind === 'spm' && this.addSpacePrefix && prevSpecial ? ' ' + raw : raw, out);
      prevSpecial = false;
    }
    if (addSpecial && this.addEos) out.push(this.eosId!);
    return out;
  }

  pieceBytes(id: number, special = false): Uint8Array {
    this.vocab.checkId(id);
    const cache = special ? this.specialPieces : this.pieces;
    return (cache[id] ??= this.piece(this.vocab, id, special));
  }

  decode(ids: number[], opts: DecodeOptions = {}): string {
    return decodeAll(this, ids, opts);
  }

  createStreamDecoder(opts: StreamDecoderOptions = {}): StreamDecoder {
    return createStreamDecoder(this, opts);
  }

  tokenText(id: number): string {
    this.vocab.checkId(id);
    return this.vocab.tokens[id]!;
  }

  tokenId(text: string): number | undefined {
    return this.vocab.toId.get(text);
  }

  isControl(id: number): boolean {
    return this.vocab.isControl(id);
  }

  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    return this.chat.render(messages, opts.addGenerationPrompt ?? true);
  }
}

export function createTokenizer(spec: TokenizerSpec): Tokenizer {
  if (!spec || typeof spec !== 'object') throw new ModelFormatError('the model carries no tokenizer');
  // Byte-level BPE from tokenizer.json: its own pre-tokenizer regexes are more exact than a
  // guessed tokenizer.ggml.pre. SentencePiece-style HF tokenizers (byte_fallback, ▁) come
  // converted by the loader (scores = -id, as sentencepiece stores BPE pieces) and are used as is.
  if (spec.hfTokenizerJson !== undefined && spec.model !== 'llama') spec = specFromHfTokenizerJson(spec.hfTokenizerJson, spec);
  if (spec.model !== 'llama' && spec.model !== 'gpt2') {
    throw new ModelFormatError(`unsupported tokenizer model '${String(spec.model)}' (supported: llama, gpt2)`);
  }
  return new OdsiTokenizer(spec);
}
