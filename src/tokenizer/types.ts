// The tokenizer contract every other part of odsi codes against.

export interface ChatMessage {
  role: string;
  content: string;
}

export interface EncodeOptions {
  /** prepend BOS (default: the model's add_bos flag); also appends EOS when the model asks for it */
  addBos?: boolean;
  /** recognise control tokens written in the text, e.g. "<|eot_id|>" (default false: they stay text) */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** render control tokens as their text instead of nothing (default false) */
  special?: boolean;
  /**
   * true (default): the ids begin the text, so the SentencePiece prefix space of the first
   * piece is dropped. false: they continue earlier text and keep every space.
   */
  atStart?: boolean;
}

export interface StreamDecoder {
  /** text that became complete with this token ('' while a UTF-8 character is still partial) */
  push(id: number): string;
  /** whatever is left; an unfinished UTF-8 sequence becomes U+FFFD */
  flush(): string;
}

export interface StreamDecoderOptions {
  /**
   * false (default): the tokens continue a prompt, so every space is kept (a generated "▁the"
   * after "Once upon a" must print " the"). true: they begin the text. Pushing BOS first also
   * marks the start. Only SentencePiece models (add_space_prefix) strip anything.
   */
  atStart?: boolean;
  special?: boolean;
}

export interface Tokenizer {
  readonly kind: 'spm' | 'bpe';
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: number[], opts?: DecodeOptions): string;
  createStreamDecoder(opts?: StreamDecoderOptions): StreamDecoder;
  /** the UTF-8 bytes a token stands for (control tokens: empty unless special) */
  pieceBytes(id: number, special?: boolean): Uint8Array;
  /** the raw vocabulary text of a token, e.g. "▁the" or "<0x0A>" */
  tokenText(id: number): string;
  /** id of an exact vocabulary string, or undefined */
  tokenId(text: string): number | undefined;
  isControl(id: number): boolean;
  readonly bosId?: number;
  readonly eosId?: number;
  /** ids that end generation: EOS, EOT and other end-of-turn tokens */
  readonly stopIds: number[];
  readonly vocabSize: number;
  readonly hasChatTemplate: boolean;
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}
