// odsi vs llama.cpp (node-llama-cpp 3.22.1, CPU prebuilt, 1 thread, temperature 0).
//
//   node dist/bench/parity.js [--tokens 60] [--out bench/results/parity.json]
//
// For each storage precision stories260K is converted by odsi's convertModel (f32 = the
// original file); llama.cpp loads that exact file, and both engines continue every golden prompt
// greedily. The table gives, per precision, the index of the first token where odsi's reference
// engine and llama.cpp disagree ("-" = all tokens agree), and whether llama.cpp's own output
// still equals golden.json (llama2.c, f32). It also re-checks tokenizer parity on the same model.
// Expect late divergences at q8_0/q4_0 on some prompts: llama.cpp quantizes activations to Q8_0
// for its quantized dot products, odsi's reference engine multiplies dequantized f32 weights.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { GgufFile } from '../src/model/gguf.js';
import { createTokenizer } from '../src/tokenizer/index.js';
import { STORIES_GGUF, loadGolden } from '../test/helpers/paths.js';
import { comparePrecision, modelAt, odsiNextLogits, PRECISIONS, type PrecisionResult } from '../test/parity/compare.js';
import { getCpuLlama, loadLlamaModel } from '../test/parity/llama.js';
import { parityStrings } from '../test/parity/strings.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { table, writeResult } from './lib/results.js';

/** more prompts beyond golden.json's two, tokenized by odsi (identical to llama.cpp's, see tokenizer parity) */
const EXTRA_PROMPTS = [
  'The dog',
  'Tom and Lily went to the park',
  'One day, a little bird',
  'She was very happy because',
  'The sun was',
  'Once there was a big red ball',
];

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');

async function tokenizerParity(): Promise<{ strings: number; comparisons: number; exact: number }> {
  const g = new GgufFile(STORIES_GGUF);
  const tok = createTokenizer(g.tokenizer!);
  g.close();
  const model = await loadLlamaModel(STORIES_GGUF, { vocabOnly: true });
  const strings = parityStrings(240);
  let exact = 0;
  for (const s of strings) {
    for (const special of [false, true]) {
      const a = JSON.stringify(Array.from(model.tokenize(s, special)));
      if (a === JSON.stringify(tok.encode(s, { addBos: false, parseSpecial: special }))) exact++;
    }
  }
  await model.dispose();
  return { strings: strings.length, comparisons: strings.length * 2, exact };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { tokens: { type: 'string', default: '60' }, out: { type: 'string' } } });
  const n = Number(values.tokens);
  if (!Number.isInteger(n) || n < 1 || n > 200) throw new Error(`--tokens must be an integer in 1..200, got ${values.tokens}`);
  const out = values.out ?? join(ROOT, 'bench/results/parity.json');
  const machine = describeMachine();
  console.log(machineLine(machine));

  const g = new GgufFile(STORIES_GGUF);
  const tok = createTokenizer(g.tokenizer!);
  g.close();
  const golden = loadGolden();
  const extra = EXTRA_PROMPTS.map((prompt) => ({ prompt, ids: tok.encode(prompt) }));
  const llama = await getCpuLlama();
  const dir = mkdtempSync(join(tmpdir(), 'odsi-parity-bench-'));
  const results: PrecisionResult[] = [];
  // at each divergence: how far apart odsi's own logits put the two engines' choices
  const margins: { precision: string; prompt: string; at: number; odsiToken: number; llamacppToken: number; odsiLogitMargin: number }[] =
    [];
  try {
    for (const p of PRECISIONS) {
      const r = await comparePrecision(p, dir, n, extra);
      results.push(r);
      const file = await modelAt(p, dir);
      const promptIds = [...golden.map((c) => c.prompt_tokens), ...extra.map((e) => e.ids)];
      for (const [i, c] of r.cases.entries()) {
        if (c.firstDivergence === null) continue;
        const at = c.firstDivergence;
        const logits = await odsiNextLogits(file, [...promptIds[i]!, ...c.odsi.slice(0, at)]);
        const a = c.odsi[at]!;
        const b = c.llamacpp[at]!;
        margins.push({
          precision: p,
          prompt: c.prompt,
          at,
          odsiToken: a,
          llamacppToken: b,
          odsiLogitMargin: +(logits[a]! - logits[b]!).toFixed(5),
        });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const tokenizer = await tokenizerParity();

  const nGolden = results[0]!.cases.length - extra.length;
  const precisions = results.map((r) => r.precision);
  const rows = results[0]!.cases.map((c, i) => [
    c.prompt.length > 32 ? c.prompt.slice(0, 29) + '...' : c.prompt,
    ...results.map((r) => (r.cases[i]!.firstDivergence === null ? '-' : String(r.cases[i]!.firstDivergence))),
  ]);
  rows.push(['file bytes', ...results.map((r) => String(r.bytes))]);
  rows.push([`llama.cpp = golden (${nGolden})`, ...results.map((r) => String(r.llamacppMatchesGolden))]);
  console.log(`\nfirst divergence, odsi (reference engine) vs llama.cpp, greedy, ${n} tokens per prompt ("-" = identical)\n`);
  console.log(table(['prompt', ...precisions], rows));
  if (margins.length) {
    console.log(`\nat each divergence, odsi's logit for its own pick minus its logit for llama.cpp's pick:\n`);
    console.log(
      table(
        ['precision', 'prompt', 'at', 'margin'],
        margins.map((m) => [m.precision, m.prompt, String(m.at), m.odsiLogitMargin.toFixed(4)]),
      ),
    );
  }
  console.log(
    `\ntokenizer: ${tokenizer.exact}/${tokenizer.comparisons} encodings identical to llama.cpp (${tokenizer.strings} strings, parse_special off and on)`,
  );

  writeResult(out, {
    bench: 'parity',
    date: new Date().toISOString(),
    machine,
    llamaCpp: {
      binding: 'node-llama-cpp 3.22.1',
      release: llama.llamaCppRelease,
      build: llama.buildType,
      gpu: false,
      threads: 1,
      sampling: 'temperature 0 (greedy)',
    },
    odsi: { engine: 'reference', stages: 1, sampling: 'temperature 0 (greedy)' },
    model: 'stories260K (f32 original; f16/q8_0/q4_0 converted by odsi convertModel)',
    tokensPerPrompt: n,
    note:
      'odsi reference dequantizes Q8_0/Q4_0 weights to f32 once and multiplies in f32; llama.cpp CPU rounds activations to ' +
      'Q8_0 for quantized dot products (F16 for F16 weights), so greedy runs can part where two logits nearly tie ' +
      '(divergenceMargins: odsi logit of its pick minus that of the llama.cpp pick, at the first divergence).',
    goldenPromptsAgreeAtEveryPrecision: results.every((r) => r.cases.slice(0, nGolden).every((c) => c.firstDivergence === null)),
    precisions: results.map((r) => ({
      precision: r.precision,
      bytes: r.bytes,
      firstDivergence: r.firstDivergence === n ? null : r.firstDivergence,
      llamacppMatchesGolden: r.llamacppMatchesGolden,
      cases: r.cases.map((c) => ({ prompt: c.prompt, firstDivergence: c.firstDivergence, odsi: c.odsi, llamacpp: c.llamacpp })),
    })),
    divergenceMargins: margins,
    tokenizer,
  });
  console.log(`\nwrote ${out}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
