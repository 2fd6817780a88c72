// A node loads only its layers: resident memory of `odsi node` processes serving 1 and 4
// layers of a synthetic Llama-3.2-1B-shaped model (4 layers, q8_0) grows by about one
// layer's weights per layer, and the 1-layer node stays far below the whole model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeSyntheticGguf } from '../../src/model/synth.js';
import { openModel } from '../../src/model/load.js';
import { layerBytesF32 } from '../../src/node/run.js';
import { NodeProcess } from '../../src/node/process.js';

let model: string;
const procs: NodeProcess[] = [];

// generated once per machine (≈530 MB, slow to write) and reused by later runs
before(async () => {
  const dir = join(tmpdir(), 'odsi-test-cache');
  mkdirSync(dir, { recursive: true });
  model = join(dir, 'synth-llama-3.2-1b-4l-q8_0-seed1.gguf');
  if (!existsSync(model) || statSync(model).size < 400e6) {
    const tmp = `${model}.${process.pid}.tmp`;
    await writeSyntheticGguf({ shape: 'llama-3.2-1b', dtype: 'q8_0', seed: 1, out: tmp, nLayers: 4 });
    renameSync(tmp, model);
  }
});
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
});

/** Resident set size of a process in bytes (Linux /proc). */
function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

async function rssServing(range: [number, number]): Promise<number> {
  const p = await NodeProcess.start({ model, range, modelId: 'synthetic-1b-4l', benchTokens: 0, extraArgs: ['--kv-budget-mb', '8'], readyTimeoutMs: 120_000, env: { ODSI_PASSPHRASE: undefined } });
  procs.push(p);
  await new Promise((r) => setTimeout(r, 500));
  const rss = rssBytes(p.info.pid);
  await p.stop();
  return rss;
}

test('resident memory grows with the number of layers served, not the model size', { timeout: 240_000 }, async () => {
  const src = openModel(model);
  const perLayer = layerBytesF32(src, 0);
  const c = src.config;
  const wholeF32 = perLayer * c.nLayers + c.vocabSize * c.dim * 4 * (c.tiedEmbeddings ? 1 : 2);
  src.close();
  const r1 = await rssServing([0, 1]);
  const r4 = await rssServing([0, 4]);
  const delta = (r4 - r1) / 3;
  const mb = (x: number) => (x / 2 ** 20).toFixed(0);
  console.log(`# rss 1 layer ${mb(r1)} MB, 4 layers ${mb(r4)} MB, per layer ${mb(delta)} MB (f32 weights ${mb(perLayer)} MB), whole model f32 ${mb(wholeF32)} MB`);
  assert.ok(delta > perLayer * 0.5 && delta < perLayer * 1.6, `per-layer RSS ${mb(delta)} MB vs ${mb(perLayer)} MB of f32 weights`);
  assert.ok(r1 < wholeF32 / 2, `1-layer node holds ${mb(r1)} MB, whole model is ${mb(wholeF32)} MB`);
  assert.ok(r4 / r1 > 2, `4 layers ${mb(r4)} MB vs 1 layer ${mb(r1)} MB`);
});
