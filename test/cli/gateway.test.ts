// `odsi gateway` argument checks through the real CLI (nothing is started on bad input).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { STORIES_GGUF } from '../helpers/paths.js';
import { runOdsi } from '../helpers/cli.js';

test('odsi gateway refuses an audit rate outside [0, 1] with a clear error', () => {
  for (const bad of ['2', '-0.1', 'often']) {
    const r = runOdsi(['gateway', '--model', STORIES_GGUF, '--audit-rate', bad], { timeoutMs: 30_000 });
    assert.notEqual(r.code, 0, `--audit-rate ${bad} was accepted`);
    assert.match(r.stderr, /--audit-rate.*must be a number in \[0, 1\]/);
  }
});
