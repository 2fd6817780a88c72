// SentencePiece path on the real stories260K vocabulary: golden prompts, round trips,
// streaming of multi-byte characters, BOS/EOS and special-token handling, bad specs.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { GgufFile } from '../../src/model/gguf.js';
import { ModelFormatError, type TokenizerSpec } from '../../src/model/types.js';
import { createTokenizer, TokenType } from '../../src/tokenizer/index.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';

function storiesSpec(): TokenizerSpec {
  const g = new GgufFile(STORIES_GGUF);
  try {
    return g.tokenizer!;
  } finally {
    g.close();
  }
}
const spec = storiesSpec();
const tok = createTokenizer(spec);

describe('SPM tokenizer (stories260K)', () => {
  it('reproduces golden prompt_tokens (with BOS)', () => {
    for (const c of loadGolden()) assert.deepEqual(tok.encode(c.prompt), c.prompt_tokens);
  });

  it('exposes BOS/EOS, stop ids and vocab size', () => {
    assert.equal(tok.kind, 'spm');
    assert.equal(tok.bosId, 1);
    assert.equal(tok.eosId, 2);
    assert.deepEqual(tok.stopIds, [2]);
    assert.equal(tok.vocabSize, 512);
    assert.equal(tok.hasChatTemplate, false);
  });

  it('addBos: false omits BOS; the empty string is just BOS', () => {
    assert.deepEqual(tok.encode('Once upon a time', { addBos: false }), [403, 407, 261, 378]);
    assert.deepEqual(tok.encode(''), [1]);
    assert.deepEqual(tok.encode('', { addBos: false }), []);
  });

  it('round-trips text through encode/decode', () => {
    const texts = [
      'Once upon a time',
      ' leading',
      'two  spaces',
      'tab\there\nnewline',
      'naïve café',
      '日本語 😀 👨‍👩‍👧‍👦',
      'x'.repeat(200),
      ' ',
      '\n',
    ];
    for (const t of texts) assert.equal(tok.decode(tok.encode(t)), t, JSON.stringify(t));
  });

  it('spells characters missing from the vocabulary as <0xXX> byte tokens', () => {
    const ids = tok.encode('😀', { addBos: false });
    // ▁ then the four UTF-8 bytes F0 9F 98 80
    assert.deepEqual(
      ids.slice(1).map((id) => tok.tokenText(id)),
      ['<0xF0>', '<0x9F>', '<0x98>', '<0x80>'],
    );
  });

  it('parses control tokens only when parseSpecial', () => {
    const text = '\n<s>\n x';
    const plain = tok.encode(text, { addBos: false });
    assert.ok(!plain.includes(1), 'BOS text stays text by default');
    assert.deepEqual(tok.encode(text, { addBos: false, parseSpecial: true }), [1, 410, 410, 444]);
  });

  it('decode hides control tokens unless special, and keeps spaces when not at the start', () => {
    assert.equal(tok.decode([1, 403, 407, 2]), 'Once upon');
    // rendered BOS text is the start of the output, so the prefix space after it stays (as llama.cpp)
    assert.equal(tok.decode([1, 403, 2], { special: true }), '\n<s>\n Once\n</s>\n');
    assert.equal(tok.decode([407, 261], { atStart: false }), ' upon a');
    assert.equal(tok.decode([407, 261]), 'upon a');
  });

  it('rejects out-of-range ids with a clear error', () => {
    assert.throws(() => tok.decode([512]), /outside the vocabulary \(size 512\)/);
    assert.throws(() => tok.decode([-1]), /outside the vocabulary/);
  });
});

describe('stream decoder', () => {
  const bytesOf = (s: string) =>
    Array.from(new TextEncoder().encode(s), (b) => tok.tokenId(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!);

  it('holds partial UTF-8 until the character is complete', () => {
    const sd = tok.createStreamDecoder();
    const ids = bytesOf('’'); // E2 80 99
    assert.deepEqual(
      ids.map((id) => sd.push(id)),
      ['', '', '’'],
    );
    assert.equal(sd.flush(), '');
  });

  it('emits a ZWJ emoji split across many byte tokens as whole characters', () => {
    const family = '👨‍👩‍👧';
    const sd = tok.createStreamDecoder();
    const outs = bytesOf(family).map((id) => sd.push(id));
    assert.equal(outs.join(''), family);
    for (const o of outs) {
      // every emitted chunk is well-formed: no lone surrogate halves, no U+FFFD
      assert.ok(!o.includes('\uFFFD'), JSON.stringify(o));
      assert.ok(
        Array.from(o).every((c) => c.codePointAt(0)! < 0xd800 || c.codePointAt(0)! > 0xdfff),
        'no lone surrogate',
      );
    }
    assert.equal(outs.filter((o) => o !== '').length, 5); // 👨 ZWJ 👩 ZWJ 👧
  });

  it('streams a mixed prompt to the same text as decode', () => {
    const text = 'Lily saw a 🐶 and said “hi” — café!';
    const ids = tok.encode(text);
    const sd = tok.createStreamDecoder();
    const streamed = ids.map((id) => sd.push(id)).join('') + sd.flush();
    assert.equal(streamed, text); // BOS first marks the start of text: prefix space dropped
  });

  it('keeps the leading space of a continuation unless told it starts the text', () => {
    const ids = tok.encode(' upon a time', { addBos: false }).slice(1); // drop the prefix ▁
    const cont = tok.createStreamDecoder();
    assert.equal(ids.map((id) => cont.push(id)).join(''), ' upon a time');
    const start = tok.createStreamDecoder({ atStart: true });
    assert.equal(ids.map((id) => start.push(id)).join(''), 'upon a time');
  });

  it('flush turns an unfinished character into U+FFFD', () => {
    const sd = tok.createStreamDecoder();
    assert.equal(sd.push(bytesOf('😀')[0]!), '');
    assert.equal(sd.flush(), '\uFFFD');
  });
});

describe('bad tokenizer specs', () => {
  const base = (): TokenizerSpec => ({ ...spec });
  it('throws ModelFormatError for unusable specs', () => {
    assert.throws(() => createTokenizer(undefined as unknown as TokenizerSpec), ModelFormatError);
    assert.throws(() => createTokenizer({ ...base(), tokens: [] }), /empty vocabulary/);
    assert.throws(() => createTokenizer({ ...base(), model: 'wordpiece' as 'llama' }), /unsupported tokenizer model 'wordpiece'/);
    assert.throws(() => createTokenizer({ ...base(), bosId: 9999 }), /bos token id 9999 is outside the vocabulary/);
    assert.throws(() => createTokenizer({ ...base(), scores: new Float32Array(3) }), /3 scores for 512 tokens/);
    assert.throws(() => createTokenizer({ ...base(), tokenTypes: new Int32Array(5) }), /5 token types for 512 tokens/);
    assert.throws(() => createTokenizer({ ...base(), model: 'gpt2' }), /no merges/);
    assert.throws(
      () => createTokenizer({ ...base(), model: 'gpt2', merges: ['a b'], pre: 'klingon' }),
      /unsupported BPE pre-tokenizer 'klingon'/,
    );
    assert.throws(() => createTokenizer({ ...base(), chatTemplate: '{% for x in %}' }), /chat template does not parse/);
  });

  it('falls back to the unknown token when a byte token is missing', () => {
    const tokens = ['<unk>', '<s>', '</s>', '▁', 'a'];
    const types = Int32Array.from([TokenType.Unknown, TokenType.Control, TokenType.Control, TokenType.Normal, TokenType.Normal]);
    const t = createTokenizer({
      model: 'llama',
      tokens,
      tokenTypes: types,
      scores: new Float32Array(5),
      bosId: 1,
      eosId: 2,
      unkId: 0,
      addBos: true,
      addEos: false,
    });
    assert.deepEqual(t.encode('a b'), [1, 3, 4, 3, 0]);
  });
});
