// Content identity of a model: what an ODSI node proves it serves.
//
// ODSI model identity, version 1. H = SHA-256; u32/u64 little-endian; hex is lowercase.
//
//   tensorHash(t) = H("odsi.tensor.v1" 0x00 || name (UTF-8) 0x00 || u32 ggmlType || u32 nDims
//                     || u64 dim for each dim in row-major order ([out, in])
//                     || the tensor's raw stored bytes (quantized blocks as stored))
//     Names are canonical GGUF names and bytes are in GGUF layout (a HF source presents Q/K
//     rows permuted as llama.cpp's converter does), so the same weights stored with the same
//     type hash the same from a .gguf file or a safetensors directory.
//
//   layerHash(l)  = H("odsi.layer.v1" 0x00 || u32 l || u32 count
//                     || tensorHash of every tensor named "blk.<l>.*", in byte-wise name order)
//
//   globalHash    = H("odsi.global.v1" 0x00 || configJSON (UTF-8) 0x00 || u32 count
//                     || tensorHash of every tensor not named "blk.*", in byte-wise name order)
//     configJSON = JSON.stringify({arch, nLayers, dim, ffnDim, nHeads, nKvHeads, headDim,
//                  vocabSize, normEps, ropeTheta, ropeScaling, tiedEmbeddings}) with keys in that
//                  order; normEps and ropeTheta rounded to float32 first; ropeScaling is
//                  {type:'linear',factor} or null (Llama 3 scaling is bound through the
//                  rope_freqs.weight tensor, which both loaders present). Covers token_embd,
//                  output_norm, output (when untied) and rope_freqs.
//
//   leaves  = [globalHash, layerHash(0), ..., layerHash(L-1)]       (leaf i+1 is layer i)
//   MTH     = RFC 6962 Merkle tree hash: MTH({d}) = H(0x00 || d);
//             MTH(D[0:n]) = H(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of 2 < n
//   modelId = hex(MTH(leaves))
//
// Layer proof for a set S of leaves (layers [a,b), plus the global leaf for an embed/head
// holder): walk the tree from the root; a subtree with no leaf in S contributes its MTH to
// `nodes` (left-to-right, depth-first), a subtree entirely in S contributes nothing. The
// verifier walks the same shape, taking subtrees outside S from `nodes` and computing those
// in S from the hashes of the tensors it holds, and compares the root with the model id. It
// needs only its own layers' bytes.

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { ModelFormatError, type ModelConfig, type WeightSource } from './types.js';

type Hash = Buffer;
const sha = () => createHash('sha256');
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
const u64 = (v: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
};
const hex = (h: Hash) => h.toString('hex');
const unhex = (s: string) => {
  if (!/^[0-9a-f]{64}$/.test(s)) throw new ModelFormatError(`not a sha256 hex string: ${s.slice(0, 80)}`);
  return Buffer.from(s, 'hex');
};

export function tensorHash(src: WeightSource, name: string): string {
  const info = src.info(name);
  const h = sha().update('odsi.tensor.v1\0').update(name).update('\0');
  h.update(u32(info.type)).update(u32(info.shape.length));
  for (const d of info.shape) h.update(u64(d));
  if (src.readRawChunks) for (const ch of src.readRawChunks(name)) h.update(ch);
  else h.update(src.readRaw(name));
  return h.digest('hex');
}

const byName = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

/** Names of the tensors of layer l, in hashing order. */
export function layerTensorsOf(src: WeightSource, l: number): string[] {
  const p = `blk.${l}.`;
  return src
    .tensorNames()
    .filter((n) => n.startsWith(p))
    .sort(byName);
}
export function globalTensorsOf(src: WeightSource): string[] {
  return src
    .tensorNames()
    .filter((n) => !n.startsWith('blk.'))
    .sort(byName);
}

export function configJson(c: ModelConfig): string {
  return JSON.stringify({
    arch: c.arch,
    nLayers: c.nLayers,
    dim: c.dim,
    ffnDim: c.ffnDim,
    nHeads: c.nHeads,
    nKvHeads: c.nKvHeads,
    headDim: c.headDim,
    vocabSize: c.vocabSize,
    normEps: Math.fround(c.normEps),
    ropeTheta: Math.fround(c.ropeTheta),
    ropeScaling: c.ropeScaling?.type === 'linear' ? { type: 'linear', factor: c.ropeScaling.factor } : null,
    tiedEmbeddings: c.tiedEmbeddings,
  });
}

function combine(tag: string, prefix: Buffer[], tensorHashes: string[]): string {
  const h = sha().update(tag);
  for (const p of prefix) h.update(p);
  h.update(u32(tensorHashes.length));
  for (const t of tensorHashes) h.update(unhex(t));
  return h.digest('hex');
}

export function layerHashFrom(l: number, tensorHashesInOrder: string[]): string {
  return combine('odsi.layer.v1\0', [u32(l)], tensorHashesInOrder);
}
export function globalHashFrom(c: ModelConfig, tensorHashesInOrder: string[]): string {
  return combine('odsi.global.v1\0', [Buffer.from(configJson(c) + '\0')], tensorHashesInOrder);
}

/** Hash layers [start,end) reading only their tensors. */
export function hashLayers(src: WeightSource, start: number, end: number, tensorHashes: Record<string, string> = {}): string[] {
  const out: string[] = [];
  for (let l = start; l < end; l++) {
    const names = layerTensorsOf(src, l);
    if (!names.length) throw new ModelFormatError(`layer ${l} has no tensors`, src.path);
    out.push(
      layerHashFrom(
        l,
        names.map((n) => (tensorHashes[n] ??= tensorHash(src, n))),
      ),
    );
  }
  return out;
}

/** Hash of the non-layer tensors and the config (the Merkle leaf 0). */
export function hashGlobal(src: WeightSource, tensorHashes: Record<string, string> = {}): string {
  return globalHashFrom(
    src.config,
    globalTensorsOf(src).map((n) => (tensorHashes[n] ??= tensorHash(src, n))),
  );
}

// ---- Merkle tree (RFC 6962 shape) ----

const leafNode = (d: Hash) => sha().update(Buffer.of(0)).update(d).digest();
const innerNode = (l: Hash, r: Hash) => sha().update(Buffer.of(1)).update(l).update(r).digest();
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}
function mth(leaves: Hash[], lo: number, hi: number): Hash {
  if (hi - lo === 1) return leafNode(leaves[lo]!);
  const k = split(hi - lo);
  return innerNode(mth(leaves, lo, lo + k), mth(leaves, lo + k, hi));
}

export function merkleRoot(leafHashes: string[]): string {
  if (!leafHashes.length) throw new ModelFormatError('empty Merkle tree');
  return hex(mth(leafHashes.map(unhex), 0, leafHashes.length));
}

/** The model id from its global hash and layer hashes. */
export function modelIdFrom(globalHash: string, layerHashes: string[]): string {
  return merkleRoot([globalHash, ...layerHashes]);
}

export interface ModelIdentity {
  modelId: string;
  globalHash: string;
  layerHashes: string[];
  tensorHashes: Record<string, string>;
}

export interface LayerProof {
  modelId: string;
  nLayers: number;
  start: number;
  end: number;
  /** whether the global leaf (embedding / head tensors + config) is part of the proven set */
  global: boolean;
  /** hex MTH of each subtree outside the proven set, in depth-first left-to-right order */
  nodes: string[];
}

function inSet(i: number, p: { start: number; end: number; global: boolean }): boolean {
  return i === 0 ? p.global : i - 1 >= p.start && i - 1 < p.end;
}

/** Proof that layers [start,end) (and the global leaf when `global`) belong to the model id. */
export function layerProof(id: Pick<ModelIdentity, 'globalHash' | 'layerHashes'>, start: number, end: number, global = false): LayerProof {
  const n = id.layerHashes.length + 1;
  if (!(start >= 0 && end <= n - 1 && start <= end)) throw new ModelFormatError(`layer range [${start},${end}) outside ${n - 1} layers`);
  const leaves = [id.globalHash, ...id.layerHashes].map(unhex);
  const set = { start, end, global };
  const nodes: string[] = [];
  const walk = (lo: number, hi: number) => {
    let any = false;
    let all = true;
    for (let i = lo; i < hi; i++) {
      if (inSet(i, set)) any = true;
      else all = false;
    }
    if (!any) return void nodes.push(hex(mth(leaves, lo, hi)));
    if (all) return;
    const k = split(hi - lo);
    walk(lo, lo + k);
    walk(lo + k, hi);
  };
  walk(0, n);
  return { modelId: hex(mth(leaves, 0, n)), nLayers: n - 1, start, end, global, nodes };
}

/**
 * Check a proof against a model id using the hashes of the layers one holds
 * (`layerHashes[i]` is layer start+i) and, when the proof covers it, the global hash.
 */
export function verifyLayerProof(modelId: string, proof: LayerProof, layerHashes: string[], globalHash?: string): boolean {
  try {
    if (proof.modelId !== modelId) return false;
    const n = proof.nLayers + 1;
    if (!(proof.start >= 0 && proof.end <= proof.nLayers && proof.start <= proof.end)) return false;
    if (layerHashes.length !== proof.end - proof.start) return false;
    if (proof.global && !globalHash) return false;
    const nodes = proof.nodes.map(unhex);
    let next = 0;
    const leaf = (i: number) => leafNode(unhex(i === 0 ? globalHash! : layerHashes[i - 1 - proof.start]!));
    const walk = (lo: number, hi: number): Hash => {
      let any = false;
      for (let i = lo; i < hi; i++) if (inSet(i, proof)) any = true;
      if (!any) {
        if (next >= nodes.length) throw new Error('proof too short');
        return nodes[next++]!;
      }
      if (hi - lo === 1) return leaf(lo);
      const k = split(hi - lo);
      const l = walk(lo, lo + k);
      return innerNode(l, walk(lo + k, hi));
    };
    const root = walk(0, n);
    return next === nodes.length && hex(root) === modelId;
  } catch {
    return false;
  }
}

/** Hash of a contiguous layer range, e.g. to name what a node serves. */
export function layerRangeHash(layerHashes: string[], start: number, end: number): string {
  if (!(start >= 0 && end <= layerHashes.length && start <= end))
    throw new ModelFormatError(`layer range [${start},${end}) outside ${layerHashes.length} layers`);
  return combine('odsi.range.v1\0', [u32(start), u32(end)], layerHashes.slice(start, end));
}

// ---- whole-model identity with a sidecar cache ----

export const MANIFEST_SUFFIX = '.odsi-manifest.json';

interface Manifest extends ModelIdentity {
  version: 1;
  fingerprint: string;
}

/** size+mtime of the file, or of every file in a model directory */
function fingerprint(path: string): string | undefined {
  try {
    const st = statSync(path);
    if (!st.isDirectory()) return `${st.size}:${st.mtimeMs}`;
    return readdirSync(path)
      .filter((f) => f.endsWith('.safetensors') || f.endsWith('.json'))
      .sort()
      .map((f) => {
        const s = statSync(join(path, f));
        return `${f}:${s.size}:${s.mtimeMs}`;
      })
      .join('|');
  } catch {
    return undefined;
  }
}

/**
 * Manifests live in a cache directory (ODSI_CACHE_DIR, else ~/.cache/odsi/manifests), never
 * beside the model: model folders are often read-only or shared between users.
 */
export function manifestPath(modelPath: string): string {
  const abs = resolve(modelPath.replace(/\/+$/, ''));
  const dir = process.env.ODSI_CACHE_DIR ? join(process.env.ODSI_CACHE_DIR, 'manifests') : join(homedir(), '.cache', 'odsi', 'manifests');
  const key = createHash('sha256').update(abs).digest('hex').slice(0, 16);
  return join(dir, `${basename(abs)}-${key}${MANIFEST_SUFFIX}`);
}

/** Hash every tensor (no cache). */
export function computeModelIdentity(src: WeightSource): ModelIdentity {
  const tensorHashes: Record<string, string> = {};
  const globalHash = hashGlobal(src, tensorHashes);
  const layerHashes = hashLayers(src, 0, src.config.nLayers, tensorHashes);
  return { modelId: modelIdFrom(globalHash, layerHashes), globalHash, layerHashes, tensorHashes };
}

/**
 * Model id, per-layer and per-tensor hashes. Full-model hashes are cached in
 * `<model>.odsi-manifest.json` keyed on size+mtime, so a large model is hashed once.
 */
export function modelIdentity(src: WeightSource, opts: { cache?: boolean } = {}): ModelIdentity {
  const useCache = (opts.cache ?? true) && src.format !== 'memory';
  const fp = useCache ? fingerprint(src.path) : undefined;
  const mp = manifestPath(src.path);
  if (fp) {
    try {
      const m = JSON.parse(readFileSync(mp, 'utf8')) as Manifest;
      if (m.version === 1 && m.fingerprint === fp && m.layerHashes.length === src.config.nLayers) {
        return { modelId: m.modelId, globalHash: m.globalHash, layerHashes: m.layerHashes, tensorHashes: m.tensorHashes };
      }
    } catch {
      /* no or stale manifest: hash below */
    }
  }
  const id = computeModelIdentity(src);
  if (fp) {
    const m: Manifest = { version: 1, fingerprint: fp, ...id };
    try {
      // temp + rename: concurrent openers never see a half-written manifest
      mkdirSync(dirname(mp), { recursive: true });
      const tmp = `${mp}.tmp-${process.pid}`;
      writeFileSync(tmp, JSON.stringify(m, null, 1));
      renameSync(tmp, mp);
    } catch {
      /* read-only location: the cache is only an optimisation */
    }
  }
  return id;
}

/** The cached manifest of a model, if one matches the file (for proofs without hashing). */
export function readManifest(modelPath: string): ModelIdentity | undefined {
  const fp = fingerprint(modelPath);
  try {
    const m = JSON.parse(readFileSync(manifestPath(modelPath), 'utf8')) as Manifest;
    if (m.version === 1 && m.fingerprint === fp)
      return { modelId: m.modelId, globalHash: m.globalHash, layerHashes: m.layerHashes, tensorHashes: m.tensorHashes };
  } catch {
    /* none */
  }
  return undefined;
}
