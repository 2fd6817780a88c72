// docs/vectors/protocol.json: (1) equals what the implementation computes now (the file cannot
// drift from the code), and (2) every vector is recomputed here independently, from the rules
// of docs/protocol.md and docs/signatures.md alone: frames parsed by hand, half floats rounded
// by a float64 model, hashes with node:crypto, keccak and EIP-712 with viem's generic
// encoder, signatures checked with @noble/curves and viem's recovery, the model id's Merkle
// tree written out again. (3) The rule ids of docs/protocol.md §11 are the kit's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { peerIdFromString } from '@libp2p/peer-id';
import { getAddress, hashTypedData, keccak256, recoverTypedDataAddress, toBytes } from 'viem';
import { buildVectors, vectorsJson } from '../../src/conformance/vectors.js';
import { conformanceRules } from '../../src/conformance/kit.js';
import { encodeMessage, MAX_ROUTE_HOPS, MsgType } from '../../src/protocol/messages.js';
import { MAX_FRAME_PAYLOAD, MAX_HEADER_BYTES } from '../../src/protocol/frame.js';
import { REPO_ROOT, STORIES_GGUF } from '../helpers/paths.js';

const FILE = join(REPO_ROOT, 'docs/vectors/protocol.json');
const committed = readFileSync(FILE, 'utf8');
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const V: any = JSON.parse(committed);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const sha256 = (b: Uint8Array | string) => createHash('sha256').update(b).digest();

/**
 * A RECEIPTS payload parsed by hand from docs/protocol.md §4.3: a count byte, then per receipt
 * 399 fixed bytes (hashes and addresses raw, integers little-endian) and the UTF-8 profile.
 */
function parseReceipts(h: string): { record: Record<string, string | number>; signature: string }[] {
  const b = Buffer.from(h, 'hex');
  const out = [];
  let o = 1;
  const b32 = (at: number, n = 32) => `0x${b.subarray(o + at, o + at + n).toString('hex')}`;
  for (let i = 0; i < b[0]!; i++) {
    const len = b.readUInt16LE(o + 397);
    const u64 = (at: number) => Number(b.readBigUInt64LE(o + at));
    out.push({
      record: {
        requestId: b32(0),
        sessionId: b32(32),
        step: u64(64),
        pos: b.readUInt32LE(o + 72),
        nTokens: b.readUInt32LE(o + 76),
        layerStart: b.readUInt32LE(o + 80),
        layerEnd: b.readUInt32LE(o + 84),
        modelId: b32(88),
        profile: b.subarray(o + 399, o + 399 + len).toString('utf8'),
        inputHash: b32(120),
        budgetUs: u64(152),
        signer: getAddress(b32(160, 20)),
        outputHash: b32(180),
        recvUs: u64(212),
        computeUs: u64(220),
        sendUs: u64(228),
        upstreamReceiptHash: b32(236),
        prevReceiptHash: b32(268),
        commitmentHash: b32(300),
      },
      signature: b32(332, 65),
    });
    o += 399 + len;
  }
  assert.equal(o, b.length, 'no bytes after the last receipt');
  return out;
}

test('the committed vectors equal a fresh computation by the implementation', () => {
  const fresh = vectorsJson(buildVectors({ storiesModel: STORIES_GGUF }));
  assert.equal(
    committed,
    fresh,
    'docs/vectors/protocol.json is stale: run `odsi conformance vectors --stories <stories260K.gguf> --out docs/vectors/protocol.json`',
  );
});

const STEP_MEMBERS = ['sessionId', 'requestId', 'step', 'pos', 'nTokens', 'dtype', 'shape', 'budgetMs', 'timeline', 'replay', 'lastRow'];
const RECEIPTS_MEMBERS = ['sessionId', 'requestId', 'step'];
const DTYPES = ['f32', 'f16', 'bf16'];

/**
 * A STEP/RESULT (type 3, 4) or RECEIPTS (type 11) header written by hand from docs/protocol.md
 * §4 "Binary headers": little-endian integers, f64 milliseconds, u16-length-prefixed UTF-8
 * strings, the members beyond the fixed ones as a u16-length-prefixed JSON object.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function binaryHeader(type: number, h: any): string {
  const parts: Buffer[] = [];
  const put = (n: number, w: (b: Buffer) => void) => {
    const b = Buffer.alloc(n);
    w(b);
    parts.push(b);
  };
  const u8 = (v: number) => put(1, (b) => b.writeUInt8(v));
  const u16 = (v: number) => put(2, (b) => b.writeUInt16LE(v));
  const u32 = (v: number) => put(4, (b) => b.writeUInt32LE(v));
  const u64 = (v: number) => put(8, (b) => b.writeBigUInt64LE(BigInt(v)));
  const f64 = (v: number) => put(8, (b) => b.writeDoubleLE(v));
  const str = (s: string) => {
    u16(Buffer.byteLength(s));
    parts.push(Buffer.from(s, 'utf8'));
  };
  const fixed = type === 0x0b ? RECEIPTS_MEMBERS : STEP_MEMBERS;
  const extra = Object.entries(h).filter(([k, v]) => !fixed.includes(k) && v !== undefined);
  const ext = extra.length ? Buffer.from(JSON.stringify(Object.fromEntries(extra))) : Buffer.alloc(0);
  if (type === 0x0b) {
    u8(0);
    str(h.sessionId);
    u64(h.requestId);
    u64(h.step);
  } else {
    u8((h.budgetMs !== undefined ? 1 : 0) | (h.replay !== undefined ? 2 : 0) | (h.replay === true ? 4 : 0) | (h.lastRow === true ? 8 : 0));
    str(h.sessionId);
    u64(h.requestId);
    u64(h.step);
    u32(h.pos);
    u32(h.nTokens);
    u8(DTYPES.indexOf(h.dtype));
    u32(h.shape[0]);
    u32(h.shape[1]);
    if (h.budgetMs !== undefined) f64(h.budgetMs);
    u8(h.timeline.length);
    for (const t of h.timeline) {
      str(t.peerId);
      u32(t.start);
      u32(t.end);
      for (const k of ['queueMs', 'computeMs', 'sendMs', 'budgetInMs', 'slackMs']) f64(t[k]);
    }
  }
  u16(ext.length);
  parts.push(ext);
  return hex(Buffer.concat(parts));
}

/** The same layout read by hand, with every rule of §4 "Binary headers"; throws on a violation. */
function readBinaryHeader(type: number, hexText: string): Record<string, unknown> {
  const b = Buffer.from(hexText, 'hex');
  let o = 0;
  const take = (n: number) => {
    assert.ok(o + n <= b.length, 'truncated');
    o += n;
    return o - n;
  };
  const u8 = () => b.readUInt8(take(1));
  const u32 = () => b.readUInt32LE(take(4));
  const u64 = () => {
    const v = b.readBigUInt64LE(take(8));
    assert.ok(v <= BigInt(Number.MAX_SAFE_INTEGER), 'u64 over 2^53 - 1');
    return Number(v);
  };
  const f64 = () => {
    const v = b.readDoubleLE(take(8));
    assert.ok(Number.isFinite(v), 'not finite');
    return v;
  };
  const str = () => {
    const n = b.readUInt16LE(take(2));
    const raw = b.subarray(take(n), o);
    const s = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    assert.ok(s.length >= 1 && s.length <= 256, 'id length');
    return s;
  };
  const h: Record<string, unknown> = {};
  const flags = u8();
  h.sessionId = str();
  h.requestId = u64();
  h.step = u64();
  if (type === 0x0b) assert.equal(flags, 0, 'RECEIPTS flags');
  else {
    assert.equal(flags & 0xf0, 0, 'reserved flags');
    assert.ok(flags & 2 || !(flags & 4), 'replay value without replay');
    h.pos = u32();
    h.nTokens = u32();
    assert.ok((h.nTokens as number) >= 1, 'nTokens ≥ 1');
    h.dtype = DTYPES[u8()];
    assert.ok(h.dtype, 'dtype byte');
    h.shape = [u32(), u32()];
    if (flags & 1) h.budgetMs = f64();
    const n = u8();
    assert.ok(n <= MAX_ROUTE_HOPS, 'timeline entries');
    h.timeline = Array.from({ length: n }, () => {
      const t = {
        peerId: str(),
        start: u32(),
        end: u32(),
        queueMs: f64(),
        computeMs: f64(),
        sendMs: f64(),
        budgetInMs: f64(),
        slackMs: f64(),
      };
      assert.ok(t.queueMs >= 0 && t.computeMs >= 0 && t.sendMs >= 0, 'negative ms');
      return t;
    });
    if (flags & 2) h.replay = (flags & 4) !== 0;
    if (flags & 8) h.lastRow = true;
  }
  const e = b.readUInt16LE(take(2));
  if (e > 0) {
    const ext = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(take(e), o)));
    assert.ok(typeof ext === 'object' && ext !== null && !Array.isArray(ext), 'extension is an object');
    for (const k of Object.keys(ext))
      assert.ok(!(type === 0x0b ? RECEIPTS_MEMBERS : STEP_MEMBERS).includes(k), 'extension names a fixed member');
    Object.assign(h, ext);
  }
  assert.equal(o, b.length, 'bytes after the header');
  return h;
}

test('binary STEP/RESULT/RECEIPTS headers: written and read by hand; every refusal case refused', () => {
  const { valid, invalid } = V.binaryHeaders;
  assert.ok(valid.length >= 7 && invalid.length >= 15);
  for (const v of valid) {
    assert.equal(v.headerHex, binaryHeader(v.type, v.header), `${v.name}: bytes`);
    assert.deepEqual(readBinaryHeader(v.type, v.headerHex), v.header, `${v.name}: read back`);
  }
  for (const v of invalid) {
    assert.throws(() => readBinaryHeader(v.type, v.headerHex), `${v.name}: refused by the rules`);
    assert.match(v.error, /header invalid: /, `${v.name}: odsi refuses it`);
  }
  // the three-hop STEP: 1 + (2 + 8) + 8 + 8 + 4 + 4 + 1 + 8 + 8 + 1 + 3 × 50 + Σ peer ids + 2
  const three = valid.find((v: { name: string }) => v.name.startsWith('STEP, three'));
  const ids = three.header.timeline.reduce((n: number, t: { peerId: string }) => n + Buffer.byteLength(t.peerId), 0);
  assert.equal(three.headerHex.length / 2, 1 + 10 + 8 + 8 + 4 + 4 + 1 + 8 + 8 + 1 + 3 * 50 + ids + 2);
});

test('frames: preamble, header (JSON, or binary for STEP/RESULT/RECEIPTS) and payload parsed by hand', () => {
  for (const f of V.frames) {
    let payload = '';
    f.frames.forEach((h: string, i: number) => {
      const b = Buffer.from(h, 'hex');
      assert.equal(b.subarray(0, 4).toString('latin1'), 'ODSI', f.name);
      assert.equal(b[4], 1, `${f.name}: version`);
      assert.equal(b[5], f.type, `${f.name}: type`);
      const last = i === f.frames.length - 1;
      assert.equal(b.readUInt16LE(6), last ? 0 : 1, `${f.name}: MORE flag`);
      const H = b.readUInt32LE(8);
      const P = b.readUInt32LE(12);
      assert.equal(b.length, 16 + H + P, `${f.name}: lengths`);
      if (i === 0 && [0x03, 0x04, 0x0b].includes(f.type)) {
        const headerHex = hex(b.subarray(16, 16 + H));
        assert.equal(headerHex, f.headerHex, `${f.name}: header bytes`);
        assert.equal(headerHex, binaryHeader(f.type, f.header), `${f.name}: header bytes written by hand`);
        assert.deepEqual(readBinaryHeader(f.type, headerHex), f.header, `${f.name}: header read by hand`);
      } else if (i === 0) {
        const headerText = b.subarray(16, 16 + H).toString('utf8');
        if (f.headerJson !== undefined) assert.equal(headerText, f.headerJson, `${f.name}: header bytes are the JSON`);
        assert.deepEqual(JSON.parse(headerText), f.header, `${f.name}: header`);
      } else assert.equal(H, 0, `${f.name}: continuation carries no header`);
      payload += b.subarray(16 + H).toString('hex');
    });
    if (f.payloadHex !== undefined) assert.equal(payload, f.payloadHex, `${f.name}: payload`);
    if (f.type === 0x0b) {
      const rs = parseReceipts(payload);
      assert.ok(rs.length >= 1 && rs.every((r) => r.record.step === f.header.step), `${f.name}: receipts of the header's step`);
    }
  }
});

/** f32 → binary16 bits, round to nearest even, modelled in float64 arithmetic. */
function f16Bits(v: number): number {
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(Math.fround(v));
  if (a === Infinity) return sign | 0x7c00;
  const rne = (x: number) => {
    const f = Math.floor(x);
    const d = x - f;
    return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
  };
  if (a < 2 ** -14) return sign | rne(a / 2 ** -24); // subnormal (may round up to the smallest normal: 0x0400)
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = rne((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e++;
  }
  if (e > 15) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | m;
}
function bf16Bits(v: number): number {
  const u = new Uint32Array(new Float32Array([v]).buffer)[0]!;
  if ((u & 0x7f800000) === 0x7f800000 && u & 0x7fffff) return ((u >>> 16) | 0x40) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
const num = (x: number | string) => (x === 'NaN' ? NaN : x === '-0' ? -0 : x === 'Infinity' ? Infinity : Number(x));

test('tensors: f16 and bf16 rounding, subnormals, NaN; payload bytes and hashTensor', () => {
  for (const t of V.tensors.f16) assert.equal(f16Bits(num(t.f32)).toString(16).padStart(4, '0'), t.bits, `f16 of ${t.f32}`);
  for (const t of V.tensors.bf16) assert.equal(bf16Bits(num(t.f32)).toString(16).padStart(4, '0'), t.bits, `bf16 of ${t.f32}`);
  for (const p of V.tensors.payloads) {
    const bytes = Buffer.alloc(p.values.length * (p.dtype === 'f32' ? 4 : 2));
    p.values.forEach((v: number, i: number) =>
      p.dtype === 'f32' ? bytes.writeFloatLE(v, i * 4) : bytes.writeUInt16LE(p.dtype === 'f16' ? f16Bits(v) : bf16Bits(v), i * 2),
    );
    assert.equal(bytes.toString('hex'), p.bytesHex, p.dtype);
    assert.equal(`0x${sha256(bytes).toString('hex')}`, p.hashTensor, `hashTensor ${p.dtype}`);
  }
});

const keccakUtf8 = (id: string) => keccak256(new TextEncoder().encode(id));
const modelBytes32 = (id: string) => {
  const m = id.replace(/^0x/, '');
  return /^[0-9a-fA-F]{64}$/.test(m) ? `0x${m.toLowerCase()}` : keccakUtf8(id);
};

test('ids: requestIdOf, sessionIdOf (keccak256 of UTF-8, always), modelId → bytes32', () => {
  for (const c of V.ids.requestIdOf) assert.equal(keccakUtf8(c.in.split('.')[0]), c.out, c.in);
  for (const c of V.ids.sessionIdOf) assert.equal(keccakUtf8(c.in), c.out, c.in);
  for (const c of V.modelId.toModelId) assert.equal(modelBytes32(c.in), c.out, c.in);
});

/** RFC 6962 Merkle tree hash over hex leaves. */
function mth(leaves: Buffer[]): Buffer {
  if (leaves.length === 1) return sha256(Buffer.concat([Buffer.of(0), leaves[0]!]));
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return sha256(Buffer.concat([Buffer.of(1), mth(leaves.slice(0, k)), mth(leaves.slice(k))]));
}
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

test('model id: RFC 6962 tree, tagged tensor/layer/global hashes, config JSON of the synthetic model', () => {
  for (const m of V.modelId.merkle) assert.equal(hex(mth(m.leaves.map((l: string) => Buffer.from(l, 'hex')))), m.root);
  const s = V.modelId.synthetic;
  const c = s.config;
  const cfg = JSON.stringify({
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
    ropeScaling: null,
    tiedEmbeddings: c.tiedEmbeddings,
  });
  assert.equal(cfg, s.configJson);
  const th: Record<string, Buffer> = {};
  for (const [name, t] of Object.entries(s.tensors) as [string, { ggmlType: number; shape: number[]; f32: number[]; hash: string }][]) {
    const raw = Buffer.from(new Float32Array(t.f32).buffer);
    th[name] = sha256(
      Buffer.concat([Buffer.from(`odsi.tensor.v1\0${name}\0`), u32(t.ggmlType), u32(t.shape.length), ...t.shape.map(u64), raw]),
    );
    assert.equal(hex(th[name]!), t.hash, name);
  }
  const layer = (l: number, names: string[]) =>
    sha256(Buffer.concat([Buffer.from('odsi.layer.v1\0'), u32(l), u32(names.length), ...names.map((n) => th[n]!)]));
  const layers = s.layerTensorOrder.map((names: string[], l: number) => layer(l, names));
  assert.deepEqual(layers.map(hex), s.layerHashes);
  const global = sha256(
    Buffer.concat([
      Buffer.from(`odsi.global.v1\0${cfg}\0`),
      u32(s.globalTensorOrder.length),
      ...s.globalTensorOrder.map((n: string) => th[n]!),
    ]),
  );
  assert.equal(hex(global), s.globalHash);
  assert.equal(hex(mth([global, ...layers])), s.modelId);
  const st = V.modelId.stories260K;
  assert.equal(
    hex(mth([st.globalHash, ...st.layerHashes].map((h: string) => Buffer.from(h, 'hex')))),
    st.modelId,
    'stories260K: root of its leaves',
  );
});

const pubOf = (peerId: string) => peerIdFromString(peerId).publicKey!.raw;

test('signed OPEN, ERRORs and advert: signed bytes rebuilt, signatures verified with another library', () => {
  const o = V.openSignature;
  const b = o.body;
  const hop = (h: { peerId: string; addrs: string[]; start: number; end: number }) => ({
    peerId: h.peerId,
    addrs: h.addrs,
    start: h.start,
    end: h.end,
  });
  const body = {
    sessionId: b.sessionId,
    modelId: b.modelId,
    route: b.route.map(hop),
    reply: { peerId: b.reply.peerId, addrs: b.reply.addrs },
    dtype: b.dtype ?? 'f32',
    hidden: b.hidden ?? null,
    maxTokens: b.maxTokens ?? null,
    idleTimeoutMs: b.idleTimeoutMs ?? null,
    resumeFrom: b.resumeFrom ?? null,
    spares: b.spares ? b.spares.map(hop) : null,
    issuedAt: b.issuedAt ?? null,
    expiresAt: b.expiresAt ?? null,
  };
  assert.equal(o.signedBytes, `odsi/open/v1\n${JSON.stringify(body)}`);
  assert.ok(secp256k1.verify(Buffer.from(o.signature, 'hex'), sha256(o.signedBytes), pubOf(b.reply.peerId), { prehash: false }));
  // signed ERRORs (§5): the body rebuilt member by member, the signature checked against `from`
  assert.equal(V.errorSignature.length, 2);
  for (const { header: h, signedBytes } of V.errorSignature) {
    const r = h.replacement as { peerId: string; addrs: string[] } | undefined;
    const errorBody = {
      from: h.from,
      sessionId: h.sessionId ?? null,
      requestId: h.requestId ?? null,
      hop: h.hop ?? null,
      code: h.code,
      reason: h.reason,
      peerId: h.peerId,
      stream: h.stream ?? null,
      replacement: r ? { peerId: r.peerId, addrs: r.addrs } : null,
      resumeFrom: h.resumeFrom ?? null,
    };
    assert.equal(signedBytes, `odsi/error/v1\n${JSON.stringify(errorBody)}`);
    assert.ok(secp256k1.verify(Buffer.from(h.signature!, 'hex'), sha256(signedBytes), pubOf(h.from!), { prehash: false }), h.code);
  }
  const a = V.advert;
  assert.equal(a.recordHex, a.signature + Buffer.from(a.body).toString('hex'));
  const ab = JSON.parse(a.body);
  assert.ok(secp256k1.verify(Buffer.from(a.signature, 'hex'), sha256(`odsi/advert/v1\n${a.body}`), pubOf(ab.peerId), { prehash: false }));
  assert.equal(a.dhtKey, `/odsi-adv/${ab.modelId}/${ab.peerId}`);
  const model = Buffer.from(ab.modelId);
  assert.equal(a.fetchRequestHex, Buffer.concat([Buffer.of(model.length), model]).toString('hex'));
  const rec = Buffer.from(a.recordHex, 'hex');
  assert.ok(rec.length >= 128 && rec.length < 16384);
  assert.equal(a.fetchReplyHex, Buffer.concat([Buffer.of((rec.length & 0x7f) | 0x80, rec.length >> 7), rec]).toString('hex'));
});

const FIELDS: Record<string, [string, string][]> = (() => {
  const commitment: [string, string][] = [
    ['requestId', 'bytes32'],
    ['sessionId', 'bytes32'],
    ['step', 'uint64'],
    ['pos', 'uint32'],
    ['nTokens', 'uint32'],
    ['layerStart', 'uint32'],
    ['layerEnd', 'uint32'],
    ['modelId', 'bytes32'],
    ['profile', 'string'],
    ['inputHash', 'bytes32'],
    ['budgetUs', 'uint64'],
    ['signer', 'address'],
  ];
  const receipt: [string, string][] = [
    ...commitment,
    ['outputHash', 'bytes32'],
    ['recvUs', 'uint64'],
    ['computeUs', 'uint64'],
    ['sendUs', 'uint64'],
    ['upstreamReceiptHash', 'bytes32'],
    ['prevReceiptHash', 'bytes32'],
    ['commitmentHash', 'bytes32'],
  ];
  return {
    ExecutionCommitment: commitment,
    ExecutionReceipt: receipt,
    ReexecutionReceipt: receipt,
    AuditVerdict: [
      ['receiptHash', 'bytes32'],
      ['auditOutputHash', 'bytes32'],
      ['profilePair', 'string'],
      ['distancePpb', 'uint64'],
      ['tolerancePpb', 'uint64'],
      ['pass', 'bool'],
      ['auditor', 'address'],
    ],
    AuditRequest: [
      ['gateway', 'address'],
      ['auditor', 'address'],
      ['requestId', 'bytes32'],
      ['sessionId', 'bytes32'],
      ['fromStep', 'uint64'],
      ['toStep', 'uint64'],
      ['expiresAt', 'uint64'],
    ],
    ReexecutionRequest: [
      ['gateway', 'address'],
      ['executor', 'address'],
      ['requestId', 'bytes32'],
      ['sessionId', 'bytes32'],
      ['step', 'uint64'],
      ['auditedReceiptHash', 'bytes32'],
      ['expiresAt', 'uint64'],
    ],
  };
})();
const signerOf: Record<string, string> = { AuditVerdict: 'auditor', AuditRequest: 'gateway', ReexecutionRequest: 'gateway' };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const typed = (type: string, record: any, domain: any) => ({
  domain: {
    name: 'odsi',
    version: '1',
    chainId: BigInt(domain.chainId),
    ...(domain.verifyingContract ? { verifyingContract: domain.verifyingContract } : {}),
  },
  types: { [type]: FIELDS[type]!.map(([name, t]) => ({ name, type: t })) },
  primaryType: type,
  message: record,
});

test('EIP-712: type hashes, digests and signatures with viem (recovery = the signer)', async () => {
  for (const t of V.eip712.types)
    assert.equal(keccak256(toBytes(`${t.type}(${FIELDS[t.type]!.map(([n, ty]) => `${ty} ${n}`).join(',')})`)), t.typeHash);
  for (const r of V.eip712.records) {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const td = typed(r.type, r.record, r.domain) as any;
    assert.equal(hashTypedData(td), r.digest, r.type);
    const who = await recoverTypedDataAddress({ ...td, signature: r.signature });
    assert.equal(who.toLowerCase(), String(r.record[signerOf[r.type] ?? 'signer']).toLowerCase(), `${r.type} signer`);
  }
});

test('receipt chain: links recomputed with viem; every custody case has its expected sub-code', async () => {
  const c = V.receiptChain;
  const digest = (r: { record: unknown }) => hashTypedData(typed('ExecutionReceipt', r.record, c.domain) as never);
  let prev = [`0x${'00'.repeat(32)}`, `0x${'00'.repeat(32)}`];
  for (const s of c.steps) {
    const [r1, r2] = s.result.receipts;
    assert.equal(r1.record.inputHash, `0x${sha256(Buffer.from(s.gatewayPayloadHex, 'hex')).toString('hex')}`);
    assert.equal(r1.record.outputHash, `0x${sha256(Buffer.from(s.hop1.payloadHex, 'hex')).toString('hex')}`);
    assert.equal(r2.record.inputHash, r1.record.outputHash, 'hand-off: hop 2 received what hop 1 sent');
    assert.equal(r2.record.layerStart, r1.record.layerEnd);
    assert.equal(r2.record.upstreamReceiptHash, digest(r1));
    assert.deepEqual([r1.record.prevReceiptHash, r2.record.prevReceiptHash], prev);
    assert.equal(s.hop1.stepHeader.receipts, undefined, 'receipts travel in their own RECEIPTS message, not in the STEP header');
    assert.deepEqual(parseReceipts(s.hop1.receiptsHex), [r1], 'hop i sends i receipts');
    assert.deepEqual(parseReceipts(s.result.receiptsHex), [r1, r2], 'the last hop sends the whole chain');
    for (const [r, k] of [
      [r1, 'hop1'],
      [r2, 'hop2'],
    ] as const) {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const td = typed('ExecutionReceipt', r.record, c.domain) as any;
      const who = await recoverTypedDataAddress({ ...td, signature: r.signature });
      assert.equal(who, V.keys[k].address);
    }
    prev = [digest(r1), digest(r2)];
  }
  for (const k of c.cases) assert.equal(k.got, k.expect, k.name);
  assert.deepEqual(c.stepOrder.got, c.stepOrder.expect);
});

test(`header size: a ${MAX_ROUTE_HOPS}-hop route's RESULT header (timeline) and RECEIPTS payload fit the limits`, () => {
  const rs = V.frames.find((f: { name: string }) => f.name.startsWith('RESULT')).header;
  const timing = rs.timeline[1];
  const t = { ...timing, queueMs: 123456.789, computeMs: 123456.789, sendMs: 123456.789, budgetInMs: 123456.789, slackMs: -123456.789 };
  const header = {
    ...rs,
    sessionId: 's'.repeat(256),
    requestId: 2 ** 53 - 1,
    timeline: Array(MAX_ROUTE_HOPS).fill({ ...t, peerId: 'ü'.repeat(256) }),
  };
  const size = binaryHeader(MsgType.RESULT, header).length / 2;
  assert.ok(size < MAX_HEADER_BYTES / 2, `${size} bytes`);
  assert.doesNotThrow(() => encodeMessage({ type: MsgType.RESULT, header, payload: new Uint8Array(8) }));
  // the largest RECEIPTS payload: 32 receipts with a 256-character profile of 3-byte characters
  const biggest = 1 + MAX_ROUTE_HOPS * (399 + 256 * 3);
  assert.ok(biggest < MAX_FRAME_PAYLOAD, `${biggest} bytes fit one frame`);
});

test('docs/protocol.md §11 lists exactly the rules the conformance kit checks', () => {
  const doc = readFileSync(join(REPO_ROOT, 'docs/protocol.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## 11.'));
  const ids = [...section.matchAll(/^\| \*\*([A-Z]\d+)\*\* \|/gm)].map((m) => m[1]);
  assert.deepEqual(
    ids,
    conformanceRules().map((r) => r.id),
  );
});
