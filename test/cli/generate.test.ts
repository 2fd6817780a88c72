// `odsi generate` through the real CLI (node bin/odsi.js): JSON output against the golden run,
// streaming output, and one-line errors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { REPO_ROOT, STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { runOdsi } from '../helpers/cli.js';
import { GgufFile } from '../../src/model/gguf.js';
import { createTokenizer } from '../../src/tokenizer/index.js';
import { buildLocalPipeline } from '../../src/engine/create.js';
import { generate } from '../../src/engine/generate.js';

const odsi = (args: string[]) => runOdsi(['generate', ...args]);

const ortPresent = existsSync(resolve(REPO_ROOT, 'dist/src/engine/ort/index.js'));

describe('odsi generate', () => {
  const golden = loadGolden();

  for (const engine of ['reference', 'ort']) {
    it(
      `--json --engine ${engine} returns the golden prompt tokens and greedy tokens`,
      { skip: engine === 'ort' && !ortPresent ? 'ORT engine not built yet' : false },
      () => {
        const c = golden[1];
        const r = odsi([
          '--model',
          STORIES_GGUF,
          '--prompt',
          c.prompt,
          '--temperature',
          '0',
          '--max-tokens',
          '60',
          '--stages',
          '3',
          '--engine',
          engine,
          '--json',
        ]);
        assert.equal(r.code, 0, r.stderr);
        const j = JSON.parse(r.stdout);
        assert.deepEqual(j.prompt_tokens, c.prompt_tokens);
        assert.deepEqual(j.tokens, c.generated_tokens);
        assert.equal(j.finish_reason, 'length');
        assert.equal(typeof j.text, 'string');
        assert.ok(j.text.length > 100);
        for (const k of ['load_ms', 'prefill_ms', 'decode_ms_per_token', 'tokens_per_s']) assert.ok(j.timings[k] > 0, k);
        assert.deepEqual(
          j.stages.map((s: { start: number; end: number }) => [s.start, s.end]),
          [
            [0, 2],
            [2, 4],
            [4, 5],
          ],
        );
        assert.ok(j.stages.every((s: { compute_ms_per_token: number }) => s.compute_ms_per_token > 0));
      },
    );
  }

  it('streams text to stdout, stats to stderr, and honours --stop', () => {
    const c = golden[0];
    const base = ['--model', STORIES_GGUF, '--prompt', c.prompt, '--temperature', '0', '--max-tokens', '40'];
    const j = JSON.parse(odsi([...base, '--json']).stdout);
    const r = odsi(base);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, j.text + '\n');
    assert.match(r.stderr, /40 tokens, finish: length/);
    assert.match(r.stderr, /ms\/token/);
    const s = JSON.parse(odsi([...base, '--stop', 'Lily', '--json']).stdout);
    assert.equal(s.finish_reason, 'stop');
    assert.equal(s.text, j.text.slice(0, j.text.indexOf('Lily')));
  });

  it('seeded sampling in the CLI matches the library with the same parameters', async () => {
    const c = golden[0];
    const a = JSON.parse(
      odsi([
        '--model',
        STORIES_GGUF,
        '--prompt',
        c.prompt,
        '--max-tokens',
        '30',
        '--temperature',
        '1',
        '--top-k',
        '0',
        '--top-p',
        '0.9',
        '--seed',
        '7',
        '--json',
      ]).stdout,
    );
    assert.equal(a.seed, 7);
    const src = new GgufFile(STORIES_GGUF);
    try {
      const pipe = await buildLocalPipeline('reference', src, 1);
      const r = await generate(pipe, createTokenizer(src.tokenizer!), c.prompt_tokens, {
        maxTokens: 30,
        sampling: { temperature: 1, topK: 0, topP: 0.9, repetitionPenalty: 1, seed: 7 },
      });
      assert.deepEqual(a.tokens, r.tokens);
      assert.notDeepEqual(r.tokens, c.generated_tokens.slice(0, 30), 'sampling differs from greedy');
    } finally {
      src.close();
    }
  });

  it('fails with a clear one-line error', () => {
    const missing = odsi(['--model', '/nonexistent/model.gguf', '--prompt', 'x']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr.trim(), 'odsi: model not found: /nonexistent/model.gguf');
    const stages = odsi(['--model', STORIES_GGUF, '--prompt', 'x', '--stages', '9']);
    assert.equal(stages.code, 1);
    assert.match(stages.stderr, /cannot split 5 layers into 9 stages/);
    const temp = odsi(['--model', STORIES_GGUF, '--prompt', 'x', '--temperature', 'hot']);
    assert.notEqual(temp.code, 0);
    assert.match(temp.stderr, /--temperature must be a number >= 0/);
  });
});
