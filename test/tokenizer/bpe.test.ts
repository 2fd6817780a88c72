// Byte-level BPE: GGUF-style spec (vocab + merges + pre) and HF tokenizer.json give the same
// ids; merges, pre-tokenizer splits, special tokens, stop ids and streaming behave.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ModelFormatError, type TokenizerSpec } from '../../src/model/types.js';
import { createTokenizer } from '../../src/tokenizer/index.js';
import { splitWords, preTokenizerRegexes } from '../../src/tokenizer/pretokenize.js';
import { bpeSpec, bpeTokenizerJson } from './bpe-fixture.js';
import { parityStrings } from '../parity/strings.js';

describe('byte-level BPE tokenizer', () => {
  const tok = createTokenizer(bpeSpec('llama-bpe'));

  it('round-trips any text exactly (byte-level needs no fallback)', () => {
    for (const s of parityStrings(120)) assert.equal(tok.decode(tok.encode(s)), s, JSON.stringify(s));
  });

  it('applies merges: frequent words become single tokens', () => {
    const ids = tok.encode(' the', { addBos: false });
    assert.equal(ids.length, 1);
    assert.equal(tok.tokenText(ids[0]!), 'Ġthe');
    assert.ok(tok.encode('Once upon a time', { addBos: false }).length < 'Once upon a time'.length);
  });

  it('splits like the Llama 3 pre-tokenizer (digits in threes, contractions)', () => {
    const re = preTokenizerRegexes('llama-bpe');
    assert.deepEqual(splitWords('12345 apples', re), ['123', '45', ' apples']);
    assert.deepEqual(splitWords("it's  done\n\n", re), ['it', "'s", ' ', ' done', '\n\n']);
    assert.deepEqual(splitWords('1234', preTokenizerRegexes('smollm')), ['1', '2', '3', '4']);
  });

  it('adds BOS, parses special tokens only on request, and stops on EOS and <|eot_id|>', () => {
    const bos = tok.bosId!;
    assert.equal(tok.encode('hi')[0], bos);
    const eot = tok.tokenId('<|eot_id|>')!;
    assert.ok(tok.encode('a<|eot_id|>', { addBos: false, parseSpecial: true }).includes(eot));
    assert.ok(!tok.encode('a<|eot_id|>', { addBos: false }).includes(eot));
    const imEnd = tok.tokenId('<|im_end|>')!;
    assert.deepEqual([...tok.stopIds].sort(), [tok.eosId!, eot, imEnd].sort(), '<|im_end|> counts as end of generation');
    assert.ok(!tok.encode('a<|im_end|>', { addBos: false }).includes(imEnd), '...and as a control token');
    const tool = tok.tokenId('<tool>')!;
    assert.ok(tok.encode('a<tool>b', { addBos: false }).includes(tool), 'user-defined tokens are always split out');
    assert.equal(tok.decode([bos, ...tok.encode(' x', { addBos: false }), eot]), ' x', 'BPE keeps leading spaces');
  });

  it('streams multi-byte characters whole', () => {
    const ids = tok.encode('日本語😀', { addBos: false });
    const sd = tok.createStreamDecoder();
    const outs = ids.map((id) => sd.push(id));
    assert.equal(outs.join('') + sd.flush(), '日本語😀');
    for (const o of outs) assert.ok(!o.includes('\uFFFD'));
  });

  it('a HF tokenizer.json with the same vocabulary encodes identically', () => {
    const hf = createTokenizer({ model: 'gpt2', tokens: [], addBos: false, addEos: false, hfTokenizerJson: bpeTokenizerJson() });
    assert.equal(hf.vocabSize, tok.vocabSize);
    assert.equal(hf.bosId, tok.bosId, 'BOS comes from the post-processor template');
    for (const s of parityStrings(120)) assert.deepEqual(hf.encode(s), tok.encode(s), JSON.stringify(s));
  });

  it('keeps what a loader adds around tokenizer.json (padding to the embedding rows, EOS, template)', () => {
    const gguf = bpeSpec('llama-bpe');
    const padded = [...gguf.tokens, '[PAD1]', '[PAD2]'];
    const eos = gguf.tokens.indexOf('<|eot_id|>');
    const hf = createTokenizer({
      model: 'gpt2',
      tokens: padded,
      eosId: eos,
      addBos: true,
      addEos: false,
      chatTemplate: '{{ bos_token }}x',
      hfTokenizerJson: bpeTokenizerJson(),
    });
    assert.equal(hf.vocabSize, padded.length);
    assert.equal(hf.eosId, eos);
    assert.equal(hf.applyChatTemplate([]), '<|begin_of_text|>x');
    assert.deepEqual(hf.encode('Once upon a time'), tok.encode('Once upon a time'));
  });

  it('rejects tokenizer.json files it cannot honour', () => {
    const base: TokenizerSpec = { model: 'gpt2', tokens: [], addBos: false, addEos: false };
    assert.throws(() => createTokenizer({ ...base, hfTokenizerJson: '{not json' }), /not valid JSON/);
    assert.throws(() => createTokenizer({ ...base, hfTokenizerJson: '{"model":{"type":"Unigram"}}' }), ModelFormatError);
    const j = JSON.parse(bpeTokenizerJson());
    j.model.byte_fallback = true;
    assert.throws(() => createTokenizer({ ...base, hfTokenizerJson: JSON.stringify(j) }), /byte_fallback/);
  });
});
