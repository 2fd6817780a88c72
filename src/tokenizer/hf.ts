// HF tokenizer.json → the same spec the GGUF path uses. Covers byte-level BPE tokenizers
// (Llama 3, SmolLM, Qwen 2, GPT-2): vocab + merges, added tokens as control/user-defined
// tokens, the pre-tokenizer's Split regex / Digits / ByteLevel, BOS from the post-processor.
import { ModelFormatError, type TokenizerSpec } from '../model/types.js';
import { preTokenizerRegexes, regexFromPattern } from './pretokenize.js';
import { TokenType } from './vocab.js';

/** Extra fields filled in when converting a tokenizer.json. */
export interface HfSpec extends TokenizerSpec {
  preRegexes?: RegExp[];
  ignoreMerges?: boolean;
  mergePairs?: [string, string][];
  /** Unicode normalization applied to raw text before encoding */
  normalize?: 'NFC' | 'NFKC';
}

const GPT2_BYTELEVEL = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

interface HfAddedToken {
  id: number;
  content: string;
  special?: boolean;
}
interface HfPre {
  type: string;
  pretokenizers?: HfPre[];
  pattern?: { Regex?: string; String?: string };
  behavior?: string;
  invert?: boolean;
  individual_digits?: boolean;
  use_regex?: boolean;
  add_prefix_space?: boolean;
}
interface HfJson {
  added_tokens?: HfAddedToken[];
  normalizer?: { type: string } | null;
  pre_tokenizer?: HfPre | null;
  post_processor?: { type: string; single?: unknown[]; processors?: { type: string; single?: unknown[] }[] } | null;
  model?: {
    type?: string;
    vocab?: Record<string, number>;
    merges?: (string | [string, string])[];
    ignore_merges?: boolean;
    byte_fallback?: boolean;
  };
}

/** JS has no inline (?i:...) groups before Node 23: spell the letters inside them as [xX]. */
function jsPattern(p: string): string {
  return p.replace(
    /\(\?i:([^()]*)\)/g,
    (_m, body: string) => '(?:' + body.replace(/[A-Za-z]/g, (c) => `[${c.toLowerCase()}${c.toUpperCase()}]`) + ')',
  );
}

function regexesOf(pre: HfPre | null | undefined, bad: (m: string) => never): RegExp[] {
  if (!pre) return [];
  switch (pre.type) {
    case 'Sequence':
      return (pre.pretokenizers ?? []).flatMap((p) => regexesOf(p, bad));
    case 'Split': {
      if (pre.behavior !== 'Isolated' || pre.invert) bad(`Split pre-tokenizer with behavior ${pre.behavior}/invert ${pre.invert}`);
      const src = pre.pattern?.Regex ?? (pre.pattern?.String ?? '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      return [regexFromPattern(jsPattern(src))];
    }
    case 'Digits':
      return [regexFromPattern(pre.individual_digits ? '\\p{N}' : '\\p{N}+')];
    case 'ByteLevel':
      if (pre.add_prefix_space) bad('ByteLevel pre-tokenizer with add_prefix_space');
      return pre.use_regex === false ? [] : [regexFromPattern(GPT2_BYTELEVEL)];
    default:
      return bad(`pre-tokenizer ${pre.type}`);
  }
}

function bosOf(pp: HfJson['post_processor'], toId: (t: string) => number | undefined): number | undefined {
  const tp = pp?.type === 'TemplateProcessing' ? pp : pp?.processors?.find((p) => p.type === 'TemplateProcessing');
  const first = tp?.single?.[0] as { SpecialToken?: { id: string } } | undefined;
  return first?.SpecialToken ? toId(first.SpecialToken.id) : undefined;
}

export function specFromHfTokenizerJson(text: string, base: Partial<TokenizerSpec> = {}): HfSpec {
  const bad = (m: string): never => {
    throw new ModelFormatError(`tokenizer.json: unsupported ${m} (only byte-level BPE tokenizers are supported)`);
  };
  let j: HfJson;
  try {
    j = JSON.parse(text) as HfJson;
  } catch (e) {
    throw new ModelFormatError(`tokenizer.json is not valid JSON: ${(e as Error).message}`);
  }
  const m = j.model;
  if (!m || m.type !== 'BPE' || !m.vocab || !Array.isArray(m.merges)) bad(`model type ${m?.type ?? '(none)'}`);
  if (m!.byte_fallback) bad('SentencePiece-style BPE with byte_fallback (use the GGUF file instead)');
  if (j.normalizer && !['NFC', 'NFKC'].includes(j.normalizer.type)) bad(`normalizer ${j.normalizer.type}`);

  const added = j.added_tokens ?? [];
  // the loader may pad the vocabulary to the embedding rows, as llama.cpp does
  let n = base.tokens?.length ?? 0;
  for (const id of Object.values(m!.vocab!)) n = Math.max(n, id + 1);
  for (const t of added) n = Math.max(n, t.id + 1);
  const tokens: string[] = new Array<string>(n);
  const types = new Int32Array(n).fill(TokenType.Unused);
  for (const [t, id] of Object.entries(m!.vocab!)) {
    tokens[id] = t;
    types[id] = TokenType.Normal;
  }
  for (const t of added) {
    tokens[t.id] = t.content;
    types[t.id] = t.special ? TokenType.Control : TokenType.UserDefined;
  }
  for (let i = 0; i < n; i++) if (tokens[i] === undefined) tokens[i] = `[PAD${i}]`; // llama.cpp pads the same way

  const toId = (t: string) => {
    const i = tokens.indexOf(t);
    return i < 0 ? undefined : i;
  };
  let regexes = regexesOf(j.pre_tokenizer, bad);
  if (regexes.length === 0) regexes = preTokenizerRegexes('gpt2');
  const bosFromTemplate = bosOf(j.post_processor, toId);
  const norm = j.normalizer?.type as 'NFC' | 'NFKC' | undefined;
  return {
    ...base,
    model: 'gpt2',
    tokens,
    tokenTypes: types,
    scores: undefined,
    merges: m!.merges!.map((x) => (Array.isArray(x) ? x.join(' ') : x)),
    mergePairs: m!.merges!.map((x) => {
      if (Array.isArray(x)) return x;
      const sp = x.indexOf(' ', 1);
      return [x.slice(0, sp), x.slice(sp + 1)] as [string, string];
    }),
    preRegexes: regexes,
    ignoreMerges: m!.ignore_merges ?? false,
    normalize: norm,
    bosId: base.bosId ?? bosFromTemplate,
    addBos: bosFromTemplate !== undefined || (base.addBos === true && base.bosId !== undefined),
    addEos: base.addEos ?? false,
    hfTokenizerJson: undefined,
  };
}
