// Deterministic, varied test strings for tokenizer parity (no randomness between runs).

const WORDS = [
  'Once', 'upon', 'a', 'time', 'Lily', 'wanted', 'to', 'play', 'the', 'park', 'happy', 'dog', 'ball', 'said',
  'supercalifragilisticexpialidocious', 'antidisestablishmentarianism', 'Tom', "don't", "it's", "we'll",
  'naïve', 'café', 'résumé', 'Zürich', 'façade', 'jalapeño', 'Ægir', 'Øresund', 'straße', 'İstanbul',
  '日本語', '中文字符', '한국어', 'こんにちは', 'Привет', 'Ελληνικά', 'שלום', 'مرحبا', 'हिन्दी', 'ภาษาไทย',
  '😀', '🎉', '👍🏽', '👨‍👩‍👧‍👦', '🏳️‍🌈', '❤️', '🇯🇵', '🧑‍💻', '👩🏾‍🚀',
  '0', '7', '42', '123', '2026', '3.14159', '1,000,000', '-5', '+12', '0x1F', '1e-9',
  '.', ',', '!', '?', ';', ':', '...', '—', '–', '“quoted”', "'single'", '(paren)', '[bracket]', '{brace}',
  '<s>', '</s>', '<unk>', '<0x41>', '<|eot_id|>', '<|im_end|>', '<tool>', '<|begin_of_text|>', '\n<s>\n', '\n</s>\n', '@', '#hashtag', '$100', '%', '^', '&', '*', '~',
  'a\u0301', '\u200b', '\u00a0', '\ufeff', 'e\u0308\u0323', '\u202e', 'ﬁ', 'Ⅻ', '½', '²', '𝕏', '\u{10348}',
];
const SPACES = [' ', ' ', ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', ' \t ', '\u3000', '', ''];

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Hand-picked edge cases followed by seeded random mixes: `count` strings in all. */
export function parityStrings(count = 240, seed = 20261122): string[] {
  const fixed = [
    '', ' ', '  ', '    ', '\t', '\n', '\n\n\n', ' \n ', 'a', ' a', '  a', 'a ', 'a  ', '\ta\t', 'Once upon a time',
    'Lily wanted to', ' Once upon a time', 'Once upon a time ', 'ONCE UPON A TIME', 'once upon a time there was a little girl named Lily.',
    '1234567890', '3.14159265358979', '   leading spaces', 'trailing spaces   ', 'tabs\tand\nnewlines\r\n',
    'Hello, world!', "It's a dog's life, isn't it?", '日本語のテキスト', 'مرحبا بالعالم', 'שלום עולם', 'Ελληνικά κείμενα',
    '👨‍👩‍👧‍👦 family', '🏳️‍🌈🏳️‍🌈', 'emoji😀in😀text', 'naïve café résumé', 'x'.repeat(300), 'ab'.repeat(100),
    'The quick brown fox jumps over the lazy dog.', '\n<s>\nstory\n</s>\n', '<s>', '<unk>', '<0x0A>', '▁', '▁▁x',
    'a\u0301e\u0301', '\u00a0nbsp', 'zero\u200bwidth', '\ufeffbom', '\u{1F600}\u{1F601}\u{1F602}', 'mixed 中文 and English 123',
  ];
  const rnd = mulberry32(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)]!;
  const out = [...fixed];
  while (out.length < count) {
    const n = 1 + Math.floor(rnd() * 12);
    let s = rnd() < 0.2 ? pick(SPACES) : '';
    for (let i = 0; i < n; i++) s += pick(WORDS) + (i + 1 < n ? pick(SPACES) : '');
    if (rnd() < 0.2) s += pick(SPACES);
    out.push(s);
  }
  return out;
}
