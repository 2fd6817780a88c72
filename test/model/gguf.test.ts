// GGUF reading (stories260K), the writer's round trip, and clear errors for broken files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GgufFile, readGgufHeader, VT } from '../../src/model/gguf.js';
import { kv, metadataFromHeader, writeGguf, type GgufKV } from '../../src/model/gguf-writer.js';
import { checkTensors, openModel } from '../../src/model/load.js';
import { GgmlType, ModelFormatError, tensorNames } from '../../src/model/types.js';
import { STORIES_GGUF } from '../helpers/paths.js';

const tmp = mkdtempSync(join(tmpdir(), 'odsi-gguf-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

test('stories260K: header, config and tokenizer', () => {
  const m = openModel(STORIES_GGUF);
  try {
    assert.equal(m.format, 'gguf');
    const c = m.config;
    assert.deepEqual(
      [c.nLayers, c.dim, c.ffnDim, c.nHeads, c.nKvHeads, c.headDim, c.vocabSize, c.tiedEmbeddings],
      [5, 64, 172, 8, 4, 8, 512, false],
    );
    assert.equal(c.normEps, 1e-5);
    assert.equal(m.tensorNames().length, 48);
    for (const n of m.tensorNames()) assert.equal(m.info(n).type, GgmlType.F32);
    assert.deepEqual(m.info(tensorNames.q(0)).shape, [64, 64]);
    assert.deepEqual(m.info(tensorNames.k(0)).shape, [32, 64]);
    assert.deepEqual(m.info(tensorNames.down(4)).shape, [64, 172]);
    assert.equal(m.readF32(tensorNames.outputNorm).length, 64);
    assert.equal(m.tokenizer?.model, 'llama');
    assert.equal(m.tokenizer?.tokens.length, 512);
    assert.equal(m.tokenizer?.bosId, 1);
    assert.equal(m.tokenizer?.eosId, 2);
  } finally {
    m.close();
  }
});

test('writer round trip: every metadata type, arrays, tensor types, alignment', async () => {
  const md: GgufKV[] = [
    kv.u8('t.u8', 255),
    kv.i8('t.i8', -128),
    kv.u16('t.u16', 65535),
    kv.i16('t.i16', -32768),
    kv.u32('t.u32', 4294967295),
    kv.i32('t.i32', -2147483648),
    kv.f32('t.f32', 0.5),
    kv.f64('t.f64', Math.PI),
    kv.u64('t.u64', 2n ** 63n + 5n),
    kv.i64('t.i64', -5),
    kv.bool('t.bool', true),
    kv.str('t.str', 'héllo ▁ wörld'),
    kv.arr('t.arr.str', VT.STRING, ['a', '', 'ccc']),
    kv.arr('t.arr.f32', VT.F32, new Float32Array([1, -2.5])),
    kv.arr('t.arr.i32', VT.I32, new Int32Array([7, -7])),
    kv.arr('t.arr.u8', VT.U8, [1, 2, 3]),
    kv.arr('t.arr.nested', VT.ARRAY, [['x', 'y'], ['z']]),
  ];
  const raw = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);
  const tensors = [
    { name: 'a', shape: [3], type: GgmlType.F32, bytes: raw(12, 1) },
    { name: 'b', shape: [2, 32], type: GgmlType.Q8_0, bytes: raw(68, 2) },
    { name: 'c', shape: [5], type: GgmlType.F16, bytes: raw(10, 3) },
    { name: 'd', shape: [1, 256], type: GgmlType.Q6_K, bytes: raw(210, 4) },
    { name: 'e', shape: [4, 32], type: GgmlType.Q4_0, bytes: raw(72, 5) },
  ];
  for (const alignment of [32, 64]) {
    const out = join(tmp, `rt-${alignment}.gguf`);
    // chunked data for one tensor: the writer must accept iterables
    await writeGguf(
      out,
      md,
      tensors.map((t) => ({ ...t, data: () => (t.name === 'b' ? [t.bytes.subarray(0, 10), t.bytes.subarray(10)] : t.bytes) })),
      { alignment },
    );
    const fd = openSync(out, 'r');
    try {
      const h = readGgufHeader(fd, out);
      assert.equal(h.version, 3);
      assert.equal(h.alignment, alignment);
      assert.equal(h.metadata.get('t.u8'), 255);
      assert.equal(h.metadata.get('t.i8'), -128);
      assert.equal(h.metadata.get('t.u16'), 65535);
      assert.equal(h.metadata.get('t.i16'), -32768);
      assert.equal(h.metadata.get('t.u32'), 4294967295);
      assert.equal(h.metadata.get('t.i32'), -2147483648);
      assert.equal(h.metadata.get('t.f32'), 0.5);
      assert.equal(h.metadata.get('t.f64'), Math.PI);
      assert.equal(h.metadata.get('t.u64'), 2n ** 63n + 5n);
      assert.equal(h.metadata.get('t.i64'), -5);
      assert.equal(h.metadata.get('t.bool'), true);
      assert.equal(h.metadata.get('t.str'), 'héllo ▁ wörld');
      assert.deepEqual(h.metadata.get('t.arr.str'), ['a', '', 'ccc']);
      assert.deepEqual([...(h.metadata.get('t.arr.f32') as Float32Array)], [1, -2.5]);
      assert.deepEqual([...(h.metadata.get('t.arr.i32') as Int32Array)], [7, -7]);
      assert.deepEqual(h.metadata.get('t.arr.u8'), [1, 2, 3]);
      assert.deepEqual(h.metadata.get('t.arr.nested'), [['x', 'y'], ['z']]);
      assert.deepEqual(h.metadataTypes.get('t.u64'), { type: VT.U64 });
      assert.deepEqual(h.metadataTypes.get('t.arr.u8'), { type: VT.ARRAY, elemType: VT.U8 });
      for (const t of tensors) {
        const info = h.tensors.get(t.name)!;
        assert.deepEqual(info.shape, t.shape);
        assert.equal(info.type, t.type);
        assert.equal((info.offset - h.dataOffset) % alignment, 0);
        assert.equal(h.dataOffset % alignment, 0);
        const got = Buffer.alloc(info.byteLength);
        const { readSync } = await import('node:fs');
        readSync(fd, got, 0, got.length, info.offset);
        assert.deepEqual(new Uint8Array(got), t.bytes);
      }
      // rewriting with metadataFromHeader keeps the types, so the header is byte-identical
      const again = join(tmp, `rt2-${alignment}.gguf`);
      await writeGguf(
        again,
        metadataFromHeader(h),
        tensors.map((t) => ({ ...t, data: () => t.bytes })),
        { alignment },
      );
      assert.deepEqual(readFileSync(again), readFileSync(out));
    } finally {
      closeSync(fd);
    }
  }
});

test('writer rejects wrong tensor sizes and leaves no file behind', async () => {
  const out = join(tmp, 'bad.gguf');
  await assert.rejects(
    writeGguf(out, [], [{ name: 'x', shape: [4], type: GgmlType.F32, data: () => new Uint8Array(15) }]),
    /data is 15 bytes, expected 16/,
  );
  assert.throws(() => statSync(out));
});

/** Rewrite stories260K with edited metadata / dropped or retyped tensors. */
async function rewrite(out: string, edit: { meta?: (md: GgufKV[]) => GgufKV[]; drop?: string[] }) {
  const src = new GgufFile(STORIES_GGUF);
  try {
    let md = metadataFromHeader(src.header);
    if (edit.meta) md = edit.meta(md);
    const specs = src
      .tensorNames()
      .filter((n) => !edit.drop?.includes(n))
      .map((n) => ({ name: n, shape: src.info(n).shape, type: src.info(n).type, data: () => src.readRaw(n) }));
    await writeGguf(out, md, specs);
  } finally {
    src.close();
  }
}

function expectModelError(path: string, re: RegExp) {
  assert.throws(
    () => openModel(path),
    (e: unknown) => {
      assert.ok(e instanceof ModelFormatError, `expected ModelFormatError, got ${String(e)}`);
      assert.match((e as Error).message, re);
      assert.ok((e as Error).message.includes(path), 'message names the file');
      return true;
    },
  );
}

test('clear errors: missing, truncated, bad magic, bad version', () => {
  expectModelError(join(tmp, 'nope.gguf'), /no such file/);
  const size = statSync(STORIES_GGUF).size;
  const trunc = join(tmp, 'trunc.gguf');
  copyFileSync(STORIES_GGUF, trunc);
  truncateSync(trunc, Math.floor(size / 2));
  expectModelError(trunc, /truncated/);
  const tiny = join(tmp, 'tiny.gguf');
  copyFileSync(STORIES_GGUF, tiny);
  truncateSync(tiny, 100);
  expectModelError(tiny, /truncated/);
  const magic = join(tmp, 'magic.gguf');
  const bytes = readFileSync(STORIES_GGUF);
  writeFileSync(magic, Buffer.concat([Buffer.from('GGML'), bytes.subarray(4)]));
  expectModelError(magic, /bad magic/);
  const ver = join(tmp, 'ver.gguf');
  const v = Buffer.from(bytes);
  v.writeUInt32LE(7, 4);
  writeFileSync(ver, v);
  expectModelError(ver, /unsupported GGUF version 7/);
  const empty = join(tmp, 'empty.gguf');
  writeFileSync(empty, '');
  expectModelError(empty, /too small/);
});

test('clear errors: wrong architecture, missing tensor, inconsistent shapes, unsupported type', async () => {
  const arch = join(tmp, 'arch.gguf');
  await rewrite(arch, { meta: (md) => md.map((m) => (m.key === 'general.architecture' ? kv.str(m.key, 'gpt2') : m)) });
  expectModelError(arch, /unsupported architecture 'gpt2'/);

  const miss = join(tmp, 'missing.gguf');
  await rewrite(miss, { drop: ['blk.2.ffn_up.weight'] });
  expectModelError(miss, /missing tensor blk\.2\.ffn_up\.weight/);
  // a stage that does not serve layer 2 can still open it without the check
  const m = openModel(miss, { skipCheck: true });
  checkTensors(m, { start: 3, end: 5, head: true });
  assert.throws(() => checkTensors(m, { start: 0, end: 3 }), /missing tensor blk\.2\.ffn_up/);
  assert.throws(() => m.readF32('blk.2.ffn_up.weight'), /missing tensor/);
  m.close();

  const shape = join(tmp, 'shape.gguf');
  await rewrite(shape, { meta: (md) => md.map((m) => (m.key === 'llama.feed_forward_length' ? kv.u32(m.key, 100) : m)) });
  expectModelError(shape, /inconsistent shapes: tensor blk\.0\.ffn_gate\.weight is \[172, 64\], the config implies \[100, 64\]/);

  const heads = join(tmp, 'heads.gguf');
  await rewrite(heads, { meta: (md) => md.map((m) => (m.key === 'llama.attention.head_count_kv' ? kv.u32(m.key, 3) : m)) });
  expectModelError(heads, /not a multiple of KV head count 3/);

  // a tensor stored as a type odsi cannot decode
  const src = new GgufFile(STORIES_GGUF);
  const md = metadataFromHeader(src.header);
  const specs = src.tensorNames().map((n) => {
    const i = src.info(n);
    if (n === 'blk.0.attn_norm.weight') return { name: n, shape: i.shape, type: GgmlType.I32, data: () => src.readRaw(n) };
    return { name: n, shape: i.shape, type: i.type, data: () => src.readRaw(n) };
  });
  const typ = join(tmp, 'type.gguf');
  await writeGguf(typ, md, specs);
  src.close();
  expectModelError(typ, /blk\.0\.attn_norm\.weight has unsupported type I32/);
});
