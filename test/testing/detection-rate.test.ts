// Detection rate per audited step, in process: 200 decode steps of stories260K layers [2,5)
// on the reference engine; each dishonest output rewrite (the same Misbehaviour objects the
// nodes use) is compared with the honest re-execution under the calibrated f32 tolerance.
// Every tampered step must fail the comparison and every honest one pass (0 false positives).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createStage } from '../../src/engine/create.js';
import { openModel } from '../../src/model/load.js';
import { parseFaultSpec } from '../../src/testing/inject.js';
import { compareOutputs } from '../../src/accountability/checks/tolerance.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';

const STEPS = 200;
const SPECS = ['noise:0.02', 'zeros', 'skip-layer', 'wrong-weights:7', 'stale', 'equivocate'];

test(
  `tampered outputs fail the tolerance check on every one of ${STEPS} audited steps, honest ones never`,
  { timeout: 60_000 },
  async () => {
    const src = openModel(STORIES_GGUF);
    const dim = src.config.dim;
    const embed = await createStage('reference', src, { start: 0, end: 0, embed: true, head: false });
    const first = await createStage('reference', src, { start: 0, end: 2, embed: false, head: false });
    const stage = await createStage('reference', src, { start: 2, end: 5, embed: false, head: false });
    const behaviours = SPECS.map((s) => parseFaultSpec(s));
    const caught = new Map(SPECS.map((s) => [s, 0]));
    let falsePositives = 0;
    const ids = loadGolden()[0]!.generated_tokens;
    try {
      for (let step = 0; step < STEPS; step++) {
        const tok = ids[step % ids.length]! ^ (step >> 6); // stays within the vocabulary, varies past 60 steps
        const e = await embed.forward({ sessionId: 's', pos: step, nTokens: 1, tokens: Int32Array.of(tok) });
        const h = await first.forward({ sessionId: 's', pos: step, nTokens: 1, hidden: e.hidden! });
        const out = (await stage.forward({ sessionId: 's', pos: step, nTokens: 1, hidden: h.hidden! })).hidden!;
        const ctx = { sessionId: 's', pos: step, nTokens: 1 };
        if (!compareOutputs(out, out, 'reference|reference', { dim }).pass) falsePositives++;
        for (const [i, b] of behaviours.entries()) {
          const bad = b.rewrite!(Float32Array.from(out), { ...ctx, input: h.hidden!, nodeStep: step, audit: false });
          if (step === 0 && SPECS[i] === 'stale') continue; // nothing earlier to replay
          if (!compareOutputs(bad, out, 'reference|reference', { dim }).pass) caught.set(SPECS[i]!, caught.get(SPECS[i]!)! + 1);
        }
      }
    } finally {
      await Promise.all([embed.dispose(), first.dispose(), stage.dispose()]);
      src.close();
    }
    const rates = Object.fromEntries([...caught].map(([s, n]) => [s, n / (s === 'stale' ? STEPS - 1 : STEPS)]));
    console.log('detection rate per audited step', JSON.stringify(rates), 'false positives', falsePositives);
    assert.equal(falsePositives, 0);
    for (const [s, r] of Object.entries(rates)) assert.equal(r, 1, `${s}: ${r}`);
  },
);
