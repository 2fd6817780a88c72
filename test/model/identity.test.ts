// Model identity: content hashes, Merkle model id, layer-range proofs, the sidecar cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, openSync, readSync, rmSync, utimesSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  computeModelIdentity,
  hashGlobal,
  hashLayers,
  layerProof,
  layerRangeHash,
  manifestPath,
  merkleRoot,
  modelIdentity,
  verifyLayerProof,
} from '../../src/model/identity.js';
import { openModel } from '../../src/model/load.js';
import { writeSyntheticGguf } from '../../src/model/synth.js';
import type { WeightSource } from '../../src/model/types.js';

const tmp = mkdtempSync(join(tmpdir(), 'odsi-id-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

/** a WeightSource wrapper that records which tensors were read */
function spy(src: WeightSource): { src: WeightSource; read: Set<string> } {
  const read = new Set<string>();
  const p = new Proxy(src, {
    get(t, k, r) {
      if (k === 'readRaw' || k === 'readF32' || k === 'readRawChunks') {
        return (name: string, ...rest: unknown[]) => {
          read.add(name);
          return (t as unknown as Record<string, (...a: unknown[]) => unknown>)[k]!.call(t, name, ...rest);
        };
      }
      const v = Reflect.get(t, k, r) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  });
  return { src: p, read };
}

const L = 6;
let base = '';
test.before(async () => {
  base = join(tmp, 'base.gguf');
  await writeSyntheticGguf({ shape: 'tiny', dtype: 'q8_0', seed: 42, out: base, nLayers: L });
});

test('same weights give the same id; one changed byte changes that layer hash and the id only', async () => {
  const again = join(tmp, 'again.gguf');
  await writeSyntheticGguf({ shape: 'tiny', dtype: 'q8_0', seed: 42, out: again, nLayers: L });
  const a = openModel(base);
  const b = openModel(again);
  const ia = computeModelIdentity(a);
  const ib = computeModelIdentity(b);
  assert.match(ia.modelId, /^[0-9a-f]{64}$/);
  assert.equal(ib.modelId, ia.modelId);
  assert.equal(ia.layerHashes.length, L);
  assert.equal(new Set(ia.layerHashes).size, L);
  assert.equal(ia.modelId, merkleRoot([ia.globalHash, ...ia.layerHashes]));
  const other = join(tmp, 'seed43.gguf');
  await writeSyntheticGguf({ shape: 'tiny', dtype: 'q8_0', seed: 43, out: other, nLayers: L });
  assert.notEqual(computeModelIdentity(openModel(other)).modelId, ia.modelId);

  // flip one byte inside blk.3.attn_v.weight
  const bad = join(tmp, 'flipped.gguf');
  copyFileSync(base, bad);
  const off = a.info('blk.3.attn_v.weight').offset + 100;
  const fd = openSync(bad, 'r+');
  const byte = Buffer.alloc(1);
  readSync(fd, byte, 0, 1, off);
  byte[0] ^= 1;
  writeSync(fd, byte, 0, 1, off);
  closeSync(fd);
  const ic = computeModelIdentity(openModel(bad));
  assert.notEqual(ic.modelId, ia.modelId);
  assert.notEqual(ic.tensorHashes['blk.3.attn_v.weight'], ia.tensorHashes['blk.3.attn_v.weight']);
  assert.equal(ic.tensorHashes['blk.3.attn_k.weight'], ia.tensorHashes['blk.3.attn_k.weight']);
  assert.equal(ic.globalHash, ia.globalHash);
  ia.layerHashes.forEach((h, l) => (l === 3 ? assert.notEqual(ic.layerHashes[l], h) : assert.equal(ic.layerHashes[l], h)));
  a.close();
  b.close();
});

test("layer proofs verify with only the prover's own layers and fail when tampered", () => {
  const full = openModel(base);
  const id = computeModelIdentity(full);
  for (const [s, e, g] of [
    [0, L, true],
    [0, L, false],
    [1, 3, false],
    [2, 3, false],
    [0, 2, true],
    [4, L, true],
    [5, 6, false],
  ] as [number, number, boolean][]) {
    const proof = layerProof(id, s, e, g);
    assert.equal(proof.modelId, id.modelId);
    // the prover reads only blk.s .. blk.e-1 (and the global tensors when g)
    const { src, read } = spy(openModel(base));
    const own = hashLayers(src, s, e);
    const gh = g ? hashGlobal(src) : undefined;
    for (const n of read) {
      const m = /^blk\.(\d+)\./.exec(n);
      if (m) assert.ok(+m[1]! >= s && +m[1]! < e, `read ${n} outside [${s},${e})`);
      else assert.ok(g, `read global tensor ${n} without needing it`);
    }
    assert.ok(verifyLayerProof(id.modelId, proof, own, gh), `[${s},${e}) g=${g}`);
    // tampering
    if (own.length) {
      const wrong = [...own];
      wrong[0] = wrong[0]!.replace(/^./, (c) => (c === 'a' ? 'b' : 'a'));
      assert.equal(verifyLayerProof(id.modelId, proof, wrong, gh), false, 'wrong layer hash');
      assert.equal(verifyLayerProof(id.modelId, { ...proof, start: proof.start + 1, end: proof.end + 1 }, own, gh), false, 'shifted range');
    }
    if (proof.nodes.length) {
      const nodes = [...proof.nodes];
      nodes[nodes.length - 1] = '0'.repeat(64);
      assert.equal(verifyLayerProof(id.modelId, { ...proof, nodes }, own, gh), false, 'bad node');
      assert.equal(verifyLayerProof(id.modelId, { ...proof, nodes: proof.nodes.slice(1) }, own, gh), false, 'short proof');
    }
    assert.equal(verifyLayerProof(id.modelId, { ...proof, nodes: [...proof.nodes, '1'.repeat(64)] }, own, gh), false, 'long proof');
    assert.equal(verifyLayerProof('f'.repeat(64), { ...proof, modelId: 'f'.repeat(64) }, own, gh), false, 'other model');
    if (g) assert.equal(verifyLayerProof(id.modelId, proof, own, undefined), false, 'missing global hash');
    src.close();
  }
  assert.throws(() => layerProof(id, 2, L + 1), /outside/);
  full.close();
});

test('layerRangeHash names a range', () => {
  const id = computeModelIdentity(openModel(base));
  assert.equal(layerRangeHash(id.layerHashes, 1, 3), layerRangeHash([...id.layerHashes], 1, 3));
  assert.notEqual(layerRangeHash(id.layerHashes, 1, 3), layerRangeHash(id.layerHashes, 1, 4));
  assert.notEqual(layerRangeHash(id.layerHashes, 0, 0), layerRangeHash(id.layerHashes, 1, 1));
});

test('cached manifest: hashed once, reused, invalidated by a changed file', () => {
  const p = join(tmp, 'cached.gguf');
  copyFileSync(base, p);
  const mp = manifestPath(p);
  assert.ok(!mp.startsWith(tmp), 'manifest kept in the cache dir, not beside the model');
  assert.ok(!existsSync(mp));
  const first = spy(openModel(p));
  const id1 = modelIdentity(first.src);
  assert.ok(first.read.size > 0);
  assert.ok(existsSync(mp));
  const second = spy(openModel(p));
  const id2 = modelIdentity(second.src);
  assert.equal(second.read.size, 0, 'cached: nothing read');
  assert.deepEqual(id2, id1);
  const later = new Date(Date.now() + 5000);
  utimesSync(p, later, later);
  const third = spy(openModel(p));
  assert.deepEqual(modelIdentity(third.src), id1);
  assert.ok(third.read.size > 0, 'stale manifest: rehashed');
  for (const s of [first, second, third]) s.src.close();
});
