// `odsi demo` refuses a layout it cannot build with a message a user understands, before any
// node process starts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runOdsi } from '../helpers/cli.js';
import { STORIES_GGUF } from '../helpers/paths.js';

test('demo --nodes 9 on the 5-layer model: "more nodes than layers", not "stages"', () => {
  const r = runOdsi(['demo', '--model', STORIES_GGUF, '--nodes', '9'], { timeoutMs: 60_000 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--nodes 9: more nodes than layers — the model has 5 layers/);
  assert.doesNotMatch(r.stderr, /stages/);
  assert.doesNotMatch(r.stderr, /starting \d+ nodes/);
});
