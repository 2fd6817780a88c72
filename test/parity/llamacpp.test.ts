// odsi vs llama.cpp on the same file: stories260K converted by odsi's convertModel to F16,
// Q8_0 and Q4_0 must load in llama.cpp, and greedy continuations of the golden prompts from
// odsi's reference engine must agree with llama.cpp's (CPU, 1 thread, temperature 0).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadGolden } from '../helpers/paths.js';
import { comparePrecision, type Precision } from './compare.js';

// tokens that must agree at each precision (see bench/results/parity.json for the measured run)
const MUST_AGREE: Record<Precision, number> = { f32: 60, f16: 16, q8_0: 16, q4_0: 4 };

describe('greedy parity with llama.cpp on converted stories260K', () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-parity-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const precision of ['f32', 'f16', 'q8_0', 'q4_0'] as Precision[]) {
    it(`${precision}: loads in llama.cpp and the first ${MUST_AGREE[precision]} greedy tokens agree`, async () => {
      const r = await comparePrecision(precision, dir, 60);
      assert.equal(r.cases.length, loadGolden().length);
      for (const c of r.cases) {
        assert.equal(c.llamacpp.length, 60, 'llama.cpp generated 60 tokens');
        assert.equal(c.odsi.length, 60, 'odsi generated 60 tokens');
        assert.deepEqual(
          c.odsi.slice(0, MUST_AGREE[precision]),
          c.llamacpp.slice(0, MUST_AGREE[precision]),
          `prompt ${JSON.stringify(c.prompt)}`,
        );
      }
      if (precision === 'f32') {
        // llama.cpp itself reproduces llama2.c's golden continuation
        assert.equal(r.llamacppMatchesGolden, r.cases.length);
        for (const [i, g] of loadGolden().entries()) assert.deepEqual(r.cases[i]!.llamacpp, g.generated_tokens);
      }
    });
  }
});
