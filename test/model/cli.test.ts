// `odsi model ...` through the real CLI binary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { computeModelIdentity } from '../../src/model/identity.js';
import { openModel } from '../../src/model/load.js';
import { ODSI_BIN, STORIES_GGUF } from '../helpers/paths.js';

// the parts of `model info --json` these tests look at
interface Info {
  format: string;
  config: { nLayers: number };
  tensors: { count: number; types: Record<string, number> };
  tokenizer: { vocabSize: number };
  modelId?: string;
  layerHashes?: string[];
}

const tmp = mkdtempSync(join(tmpdir(), 'odsi-cli-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));
const odsi = (...args: string[]) => spawnSync(process.execPath, [ODSI_BIN, ...args], { encoding: 'utf8', timeout: 60_000 });

test('odsi model info --json reports config, tensors, tokenizer, model id and layer hashes', () => {
  const r = odsi('model', 'info', STORIES_GGUF, '--json');
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as Info;
  assert.equal(info.format, 'gguf');
  assert.equal(info.config.nLayers, 5);
  assert.equal(info.tensors.count, 48);
  assert.deepEqual(info.tensors.types, { F32: 48 });
  assert.equal(info.tokenizer.vocabSize, 512);
  const id = computeModelIdentity(openModel(STORIES_GGUF));
  assert.equal(info.modelId, id.modelId);
  assert.deepEqual(info.layerHashes, id.layerHashes);
});

test('odsi model synth / convert / info round trip, and clear errors', () => {
  const hf = join(tmp, 'hf');
  let r = odsi(
    'model',
    'synth',
    '--shape',
    'tiny',
    '--dtype',
    'f16',
    '--seed',
    '9',
    '--layers',
    '2',
    '--format',
    'safetensors',
    '--out',
    hf,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(hf, 'config.json')));
  const q = join(tmp, 'q.gguf');
  r = odsi('model', 'convert', hf, '--dtype', 'q4_0', '--out', q);
  assert.equal(r.status, 0, r.stderr);
  r = odsi('model', 'info', q, '--json', '--no-hash');
  assert.equal(r.status, 0, r.stderr);
  const info = JSON.parse(r.stdout) as Info;
  assert.equal(info.config.nLayers, 2);
  assert.equal(info.tensors.types.Q4_0, 16);
  assert.equal(info.modelId, undefined);
  r = odsi('model', 'info', join(tmp, 'missing.gguf'));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /missing\.gguf: no such file or directory/);
  r = odsi('model', 'synth', '--shape', 'nope', '--out', join(tmp, 'x.gguf'));
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /Allowed choices are tiny/);
});
