// The protocol's test vectors (docs/vectors/protocol.json), computed by the production code:
// frames of every message type, tensor codecs, ids, the model id construction, the signed
// OPEN, adverts, every EIP-712 record type and a receipt chain with its custody verdicts.
// `odsi conformance vectors` prints them; test/protocol/vectors.test.ts checks that the
// committed file equals a fresh computation and recomputes the vectors independently.
// Everything is deterministic: fixed keys (0x01…, 0x02…, 0x03…), fixed times, RFC 6979.

import { createHash } from 'node:crypto';
import { identityFromSecret, type Identity } from '../identity/identity.js';
import { configJson, globalHashFrom, layerHashFrom, merkleRoot, modelIdFrom, modelIdentity, tensorHash } from '../model/identity.js';
import { openModel } from '../model/load.js';
import { GgmlType, type ModelConfig, type WeightSource } from '../model/types.js';
import { f32ToBf16, f32ToF16 } from '../model/half.js';
import { advertKey, signAdvert } from '../p2p/advert-record.js';
import { MAX_FRAME_PAYLOAD, MAX_HEADER_BYTES, MAX_MESSAGE_PAYLOAD, toHex } from '../protocol/frame.js';
import {
  ACT_LIMITS,
  MAX_ROUTE_HOPS,
  MsgType,
  encodeHeader,
  encodeMessage,
  encodeTensor,
  parseHeader,
  type Message,
  type OpenHeader,
  type StepHeader,
} from '../protocol/messages.js';
import { encodeAuditMessage } from '../protocol/audit-messages.js';
import { decodeReceipts, encodeReceipts } from '../protocol/receipt-codec.js';
import { OPEN_MAX_SKEW_MS, OPEN_TTL_MS, openSigningBytes, signOpen, type OpenToSign } from '../protocol/open-signature.js';
import { errorSigner, errorSigningBytes } from '../protocol/error-signature.js';
import {
  DEV_CHAIN_ID,
  ZERO_HASH,
  domainSeparator,
  structHash,
  typeHash,
  typedDigest,
  type ExecutionReceipt,
  type Hex,
  type OdsiDomain,
  type PrimaryType,
  type RecordOf,
} from '../accountability/records/eip712.js';
import { checkSigned, hashTensor, receiptHash, signDigest, signReceipt, type SignedReceipt } from '../accountability/records/receipts.js';
import { typedDigestBytes } from '../accountability/records/eip712.js';
import { CustodyError, ReceiptChain, checkChainShape, checkLink } from '../accountability/checks/custody.js';
import { precisionOf, toleranceFor, TOLERANCES, TAU_FLOOR } from '../accountability/checks/tolerance.js';
import { requestIdOf, sessionIdOf, toModelId } from '../accountability/records/wire.js';

const key = (byte: number): Identity => identityFromSecret(new Uint8Array(32).fill(byte));
const hexOf = (b: Uint8Array) => toHex(b);
const T0 = 1_700_000_000_000;

const BINARY_HEADERS: ReadonlySet<MsgType> = new Set([MsgType.STEP, MsgType.RESULT, MsgType.RECEIPTS]);

/**
 * A message as vector: the header object, its exact bytes (JSON text, or hex for the binary
 * STEP/RESULT/RECEIPTS headers), the payload and every frame in hex.
 */
function frameVector(name: string, m: Message, limits = ACT_LIMITS) {
  const binary = BINARY_HEADERS.has(m.type);
  return {
    name,
    type: m.type,
    typeName: MsgType[m.type],
    header: m.header,
    ...(binary ? { headerHex: hexOf(encodeHeader(m)) } : { headerJson: JSON.stringify(m.header) }),
    payloadHex: hexOf(m.payload ?? new Uint8Array(0)),
    frames: encodeMessage(m, limits).map(hexOf),
  };
}

function signedOpen(gw: Identity, body: Omit<OpenToSign, 'reply'> & { reply?: OpenToSign['reply'] }, hop = 0): OpenHeader {
  const b: OpenToSign = { reply: { peerId: gw.peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4000'] }, ...body };
  return { ...b, hop, signature: signOpen(gw, b) } as OpenHeader;
}

/** A synthetic model held in memory: two layers of two tiny f32 tensors and a global tensor. */
function syntheticModel(): { config: ModelConfig; src: WeightSource; tensors: Record<string, { shape: number[]; values: number[] }> } {
  const config = {
    arch: 'llama',
    nLayers: 2,
    dim: 2,
    ffnDim: 4,
    nHeads: 1,
    nKvHeads: 1,
    headDim: 2,
    vocabSize: 3,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: undefined,
    tiedEmbeddings: true,
  } as unknown as ModelConfig;
  const tensors: Record<string, { shape: number[]; values: number[] }> = {
    'token_embd.weight': { shape: [3, 2], values: [0.5, -1, 2, 0.25, 0, 1] },
    'output_norm.weight': { shape: [2], values: [1, 1] },
    'blk.0.attn_norm.weight': { shape: [2], values: [1, 2] },
    'blk.0.ffn_norm.weight': { shape: [2], values: [3, 4] },
    'blk.1.attn_norm.weight': { shape: [2], values: [5, 6] },
    'blk.1.ffn_norm.weight': { shape: [2], values: [7, 8] },
  };
  const raw = (n: string) => new Uint8Array(new Float32Array(tensors[n]!.values).buffer);
  const src = {
    path: 'memory:synthetic',
    format: 'memory',
    config,
    metadata: {},
    tensorNames: () => Object.keys(tensors),
    has: (n: string) => n in tensors,
    // row-major shape (outermost first), as the loaders present it
    info: (n: string) => ({ name: n, type: GgmlType.F32, shape: [...tensors[n]!.shape], offset: 0, byteLength: raw(n).length }),
    readRaw: raw,
    readF32: (n: string) => new Float32Array(tensors[n]!.values),
    close: () => {},
  } as unknown as WeightSource;
  return { config, src, tensors };
}

function modelIdVectors(storiesModel?: string) {
  const { src, tensors } = syntheticModel();
  const tensorHashes = Object.fromEntries(Object.keys(tensors).map((n) => [n, tensorHash(src, n)]));
  const byName = (names: string[]) => [...names].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const layerNames = [0, 1].map((l) => byName(Object.keys(tensors).filter((n) => n.startsWith(`blk.${l}.`))));
  const globalNames = byName(Object.keys(tensors).filter((n) => !n.startsWith('blk.')));
  const layerHashes = layerNames.map((names, l) =>
    layerHashFrom(
      l,
      names.map((n) => tensorHashes[n]!),
    ),
  );
  const globalHash = globalHashFrom(
    src.config,
    globalNames.map((n) => tensorHashes[n]!),
  );
  const leaves = (n: number) => Array.from({ length: n }, (_, i) => createHash('sha256').update(`leaf ${i}`).digest('hex'));
  const out: Record<string, unknown> = {
    merkle: [1, 2, 3, 5, 7].map((n) => ({ leaves: leaves(n), root: merkleRoot(leaves(n)) })),
    synthetic: {
      config: src.config,
      configJson: configJson(src.config),
      tensors: Object.fromEntries(
        Object.entries(tensors).map(([n, t]) => [n, { ggmlType: GgmlType.F32, shape: t.shape, f32: t.values, hash: tensorHashes[n] }]),
      ),
      globalTensorOrder: globalNames,
      layerTensorOrder: layerNames,
      globalHash,
      layerHashes,
      modelId: modelIdFrom(globalHash, layerHashes),
    },
    toModelId: ['ab'.repeat(32), 'AB'.repeat(32), `0x${'AB'.repeat(32)}`, `0x${'ab'.repeat(31)}`, 'stories-test', 'chatcmpl-abc'].map(
      (id) => ({ in: id, out: toModelId(id) }),
    ),
  };
  if (storiesModel) {
    const s = openModel(storiesModel);
    try {
      const id = modelIdentity(s, { cache: false });
      out.stories260K = {
        file: 'stories260K.gguf',
        configJson: configJson(s.config),
        globalHash: id.globalHash,
        layerHashes: id.layerHashes,
        modelId: id.modelId,
      };
    } finally {
      s.close();
    }
  }
  return out;
}

function tensorVectors() {
  const f16 = [
    1,
    -2,
    65504,
    65520,
    1e-8,
    5.960464477539063e-8,
    2.980232238769531e-8,
    8.940696716308594e-8,
    6.103515625e-5,
    6.097555160522461e-5,
    -0,
    Infinity,
    NaN,
    1.0009765625,
    1.00048828125,
    1.00146484375,
  ];
  const bf16 = [1, -2, 3.140625, 3.14159265, 1.00390625, 1.01171875, -0, Infinity, NaN, 1e-40, 3.3895313892515355e38];
  const show = (v: number) => (Number.isNaN(v) ? 'NaN' : Object.is(v, -0) ? '-0' : v === Infinity ? 'Infinity' : v);
  const bits = (v: number) => {
    const b = new Float32Array([v]);
    return hexOf(new Uint8Array(b.buffer).reverse());
  };
  return {
    note: 'f32 given as number (or "NaN", "-0", "Infinity"); f32Bits big-endian hex of the f32; half bits as a big-endian 16-bit hex; wire bytes are little-endian',
    f16: f16.map((v) => ({ f32: show(v), f32Bits: bits(v), bits: f32ToF16(v).toString(16).padStart(4, '0') })),
    bf16: bf16.map((v) => ({ f32: show(v), f32Bits: bits(v), bits: f32ToBf16(v).toString(16).padStart(4, '0') })),
    payloads: (['f32', 'f16', 'bf16'] as const).map((dtype) => {
      const x = new Float32Array([1, -2, 0.5, 3.140625]);
      const bytes = encodeTensor(x, dtype);
      return { dtype, values: [...x], bytesHex: hexOf(bytes), hashTensor: hashTensor(bytes) };
    }),
  };
}

function idVectors() {
  const hexLike = 'ab'.repeat(32);
  return {
    requestIdOf: ['req-1', 'req-1.r1', 'req-1.t2.3', 'a/audit', hexLike, `0x${hexLike}`, ''].map((id) => ({
      in: id,
      out: requestIdOf(id),
    })),
    sessionIdOf: ['req-1', 'req-1.r1', hexLike, `0x${hexLike}`].map((id) => ({ in: id, out: sessionIdOf(id) })),
  };
}

function keysOf(...ids: [string, Identity][]) {
  return Object.fromEntries(
    ids.map(([n, k]) => [n, { secret: hexOf(k.secret), publicKey: hexOf(k.publicKey), peerId: k.peerId.toString(), address: k.address }]),
  );
}

const RECORDS = {
  receipt: {
    requestId: `0x${'11'.repeat(32)}`,
    sessionId: `0x${'22'.repeat(32)}`,
    step: 3,
    pos: 17,
    nTokens: 1,
    layerStart: 2,
    layerEnd: 5,
    modelId: `0x${'33'.repeat(32)}`,
    profile: 'reference',
    inputHash: `0x${'44'.repeat(32)}`,
    budgetUs: 250000,
    outputHash: `0x${'55'.repeat(32)}`,
    recvUs: 120,
    computeUs: 5400,
    sendUs: 80,
    upstreamReceiptHash: `0x${'66'.repeat(32)}`,
    prevReceiptHash: ZERO_HASH,
    commitmentHash: `0x${'77'.repeat(32)}`,
  },
};

function eip712Vectors(k: Identity) {
  const domains: OdsiDomain[] = [
    { chainId: DEV_CHAIN_ID },
    { chainId: DEV_CHAIN_ID, verifyingContract: '0x5FbDB2315678afecb367f032d93F642f64180aa3' },
  ];
  const {
    recvUs: _r,
    computeUs: _c,
    sendUs: _s,
    outputHash: _o,
    upstreamReceiptHash: _u,
    prevReceiptHash: _p,
    commitmentHash: _h,
    ...committed
  } = RECORDS.receipt;
  const records: Record<PrimaryType, Record<string, unknown>> = {
    ExecutionCommitment: { ...committed, signer: k.address },
    ExecutionReceipt: { ...RECORDS.receipt, signer: k.address },
    ReexecutionReceipt: { ...RECORDS.receipt, signer: k.address },
    AuditVerdict: {
      receiptHash: `0x${'88'.repeat(32)}`,
      auditOutputHash: `0x${'99'.repeat(32)}`,
      profilePair: 'reference|reference',
      distancePpb: 1377,
      tolerancePpb: 10000,
      pass: true,
      auditor: k.address,
    },
    AuditRequest: {
      gateway: k.address,
      auditor: '0x00000000000000000000000000000000000000aa',
      requestId: `0x${'11'.repeat(32)}`,
      sessionId: `0x${'22'.repeat(32)}`,
      fromStep: 0,
      toStep: 3,
      expiresAt: 1767225600,
    },
    ReexecutionRequest: {
      gateway: k.address,
      executor: '0x00000000000000000000000000000000000000bb',
      requestId: `0x${'11'.repeat(32)}`,
      sessionId: `0x${'22'.repeat(32)}`,
      step: 3,
      auditedReceiptHash: `0x${'66'.repeat(32)}`,
      expiresAt: 1767225600,
    },
  };
  return {
    domainName: 'odsi',
    domainVersion: '1',
    domainSeparators: domains.map((d) => ({ domain: d, separator: domainSeparator(d) })),
    types: (Object.keys(records) as PrimaryType[]).map((t) => ({ type: t, typeHash: typeHash(t) })),
    records: (Object.keys(records) as PrimaryType[]).map((t) => {
      const rec = records[t] as unknown as RecordOf<typeof t>;
      const digest = typedDigest(t, rec, domains[0]!);
      return {
        type: t,
        record: rec,
        hashStruct: structHash(t, rec),
        domain: domains[0],
        digest,
        signature: signDigest(typedDigestBytes(t, rec, domains[0]!), k.secret),
      };
    }),
  };
}

/**
 * The custody check a hop makes of the receipts of an arriving STEP (docs/protocol.md §8.1), as
 * the node's stamper makes it: the RECEIPTS payload decoded (absent: none arrived), shape,
 * signature, link fields, then the signer's chain. Returns the sub-code of the first failure, or 'ok'.
 */
export function custodyVerdict(
  chain: { current?: ReceiptChain },
  o: {
    hop: number;
    upstreamAddress: Hex;
    receiverStart: number;
    sessionId: string;
    header: StepHeader;
    payload: Uint8Array;
    /** the step's RECEIPTS payload as hex (undefined: none arrived) */
    receiptsHex?: string;
    domain: OdsiDomain;
  },
): string {
  try {
    let receipts: unknown;
    try {
      receipts = o.receiptsHex === undefined ? undefined : decodeReceipts(Buffer.from(o.receiptsHex, 'hex'));
    } catch (e) {
      throw new CustodyError('malformed', (e as Error).message);
    }
    if (o.hop === 0) {
      if (receipts !== undefined && (!Array.isArray(receipts) || receipts.length !== 0))
        throw new CustodyError('malformed', 'the first hop expects no receipts');
      return 'ok';
    }
    const signed = checkChainShape(receipts, o.hop)[o.hop - 1]!;
    const v = checkSigned('ExecutionReceipt', signed, o.domain);
    if (!v.ok) throw new CustodyError(v.malformed ? 'malformed' : 'bad_signature', v.reason);
    const h = o.header;
    checkLink(signed.record, {
      signer: o.upstreamAddress,
      slot: { requestId: requestIdOf(o.sessionId), sessionId: sessionIdOf(o.sessionId), step: h.step, pos: h.pos, nTokens: h.nTokens },
      layers: { end: o.receiverStart },
      outputHash: hashTensor(o.payload),
    });
    if (h.step === 0 || !chain.current)
      chain.current = new ReceiptChain(signed.record.signer, requestIdOf(o.sessionId), sessionIdOf(o.sessionId), o.domain);
    chain.current.appendVerified(signed, v.digest);
    return 'ok';
  } catch (e) {
    if (e instanceof CustodyError) return e.code;
    throw e;
  }
}

/** hex of the RECEIPTS payload carrying `chain` */
const wire = (chain: SignedReceipt[]): string => hexOf(encodeReceipts(chain));

/**
 * A case as it travels: a header naming `receipts` (the vectors' notation) becomes the STEP
 * header without them and the RECEIPTS payload that follows it (`receiptsHex`; absent: none).
 */
function onWire<T extends { header: StepHeader; receiptsHex?: string }>(c: T): T {
  const { receipts, ...header } = c.header as StepHeader & { receipts?: SignedReceipt[] };
  if (c.receiptsHex !== undefined || receipts === undefined) return { ...c, header: header as StepHeader };
  return { ...c, header: header as StepHeader, receiptsHex: wire(receipts) };
}

/**
 * The binary STEP/RESULT/RECEIPTS headers (docs/protocol.md §4 "Binary headers"): headers that
 * encode to `headerHex`, and byte strings a receiver must refuse (bad_message), each made by
 * changing one thing in a valid header; `error` is odsi's message for it.
 */
function headerVectors(hop1: string, hop2: string) {
  const timing = (peerId: string, start: number, end: number, budgetInMs: number, slackMs: number) => ({
    peerId,
    start,
    end,
    queueMs: 0.012,
    computeMs: 1.5,
    sendMs: 0.004,
    budgetInMs,
    slackMs,
  });
  const base = { sessionId: 's1', requestId: 7, step: 0, pos: 3, nTokens: 1, dtype: 'f32' as const, shape: [1, 2], timeline: [] };
  const threeHops = {
    sessionId: 'req-1.r1',
    requestId: 2 ** 53 - 1,
    step: 41,
    pos: 300,
    nTokens: 4,
    dtype: 'bf16' as const,
    shape: [4, 576],
    budgetMs: 187.25,
    timeline: [timing(hop1, 0, 10, 250, 230.5), timing(hop2, 10, 20, 230.5, 201.125), timing('hop-ü', 20, 30, 201.125, -3.5)],
    replay: true,
  };
  const valid: { name: string; type: MsgType; header: Message['header'] }[] = [
    { name: 'STEP, no timeline, no budget, no replay', type: MsgType.STEP, header: base },
    { name: 'STEP, budget', type: MsgType.STEP, header: { ...base, budgetMs: 250 } },
    { name: 'STEP, replay false', type: MsgType.STEP, header: { ...base, dtype: 'f16', replay: false } },
    { name: 'STEP, three timeline entries, budget, replay', type: MsgType.STEP, header: threeHops },
    {
      name: 'RESULT, three timeline entries, no budget',
      type: MsgType.RESULT,
      header: { ...threeHops, budgetMs: undefined, replay: undefined },
    },
    { name: 'STEP with an extension member', type: MsgType.STEP, header: { ...base, trace: { id: 'x' } } },
    { name: 'RECEIPTS', type: MsgType.RECEIPTS, header: { sessionId: 'chain-1', requestId: 2, step: 1 } },
    { name: 'STEP of a prefill, last row only', type: MsgType.STEP, header: { ...base, nTokens: 4, shape: [4, 2], lastRow: true } },
    {
      name: 'RESULT of a last-row-only prefill: one row',
      type: MsgType.RESULT,
      header: { ...base, nTokens: 4, shape: [1, 2], budgetMs: 12.5, lastRow: true, timeline: [timing(hop1, 0, 30, 20, 12.5)] },
    },
  ];
  const bytes = (type: MsgType, header: Message['header']) => encodeHeader({ type, header } as Message);
  const stepBytes = bytes(MsgType.STEP, { ...base, budgetMs: 250, timeline: [timing('P', 0, 2, 250, 249)] });
  // offsets in stepBytes (sessionId "s1"): flags 0, requestId 5, nTokens 25, dtype 29, budgetMs 38,
  // timeline count 46, its entry 47 (peerId "P": 47–49, start 50, end 54, queueMs 58, …)
  const patched = (at: number, write: (dv: DataView) => void, from = stepBytes) => {
    const b = Uint8Array.from(from);
    write(new DataView(b.buffer, at));
    return b;
  };
  const longId = bytes(MsgType.STEP, { ...base, sessionId: 'a'.repeat(256) });
  const ext = bytes(MsgType.STEP, { ...base, zzz: 1 });
  const extAt = Buffer.from(ext).indexOf('zzz');
  const invalid: { name: string; type: MsgType; bytes: Uint8Array }[] = [
    { name: 'truncated (last byte missing)', type: MsgType.STEP, bytes: stepBytes.subarray(0, stepBytes.length - 1) },
    { name: 'truncated inside the timeline', type: MsgType.STEP, bytes: stepBytes.subarray(0, 60) },
    { name: 'a byte after the extension', type: MsgType.STEP, bytes: Uint8Array.from([...stepBytes, 0]) },
    { name: 'reserved flag bit 4 set', type: MsgType.STEP, bytes: patched(0, (d) => d.setUint8(0, 0x11)) },
    { name: 'replay value without replay', type: MsgType.STEP, bytes: patched(0, (d) => d.setUint8(0, 0x05)) },
    { name: 'dtype byte 3', type: MsgType.STEP, bytes: patched(29, (d) => d.setUint8(0, 3)) },
    { name: 'nTokens 0', type: MsgType.STEP, bytes: patched(25, (d) => d.setUint32(0, 0, true)) },
    { name: 'requestId over 2^53 - 1', type: MsgType.STEP, bytes: patched(9, (d) => d.setUint32(0, 0x20_0000, true)) },
    { name: 'budgetMs NaN', type: MsgType.STEP, bytes: patched(38, (d) => d.setFloat64(0, NaN, true)) },
    { name: 'budgetMs infinite', type: MsgType.STEP, bytes: patched(38, (d) => d.setFloat64(0, -Infinity, true)) },
    { name: 'negative queueMs', type: MsgType.STEP, bytes: patched(58, (d) => d.setFloat64(0, -1, true)) },
    { name: `${MAX_ROUTE_HOPS + 1} timeline entries`, type: MsgType.STEP, bytes: patched(46, (d) => d.setUint8(0, MAX_ROUTE_HOPS + 1)) },
    { name: 'empty sessionId', type: MsgType.STEP, bytes: Uint8Array.from([stepBytes[0]!, 0, 0, ...stepBytes.subarray(5)]) },
    {
      name: 'sessionId of 257 characters',
      type: MsgType.STEP,
      bytes: Uint8Array.from([longId[0]!, 1, 1, 0x61, ...longId.subarray(3)]),
    },
    { name: 'sessionId not UTF-8', type: MsgType.STEP, bytes: patched(3, (d) => d.setUint8(0, 0xff)) },
    { name: 'extension that is not JSON', type: MsgType.STEP, bytes: patched(extAt - 2, (d) => d.setUint8(0, 0x5b), ext) },
    {
      name: 'extension naming a fixed member',
      type: MsgType.STEP,
      bytes: patched(extAt, (d) => [0x70, 0x6f, 0x73].forEach((c, i) => d.setUint8(i, c)), ext),
    },
    { name: 'RESULT truncated', type: MsgType.RESULT, bytes: stepBytes.subarray(0, 30) },
    {
      name: 'RECEIPTS with a flag set',
      type: MsgType.RECEIPTS,
      bytes: patched(0, (d) => d.setUint8(0, 1), bytes(MsgType.RECEIPTS, valid[6]!.header)),
    },
    {
      name: 'RECEIPTS with a byte after it',
      type: MsgType.RECEIPTS,
      bytes: Uint8Array.from([...bytes(MsgType.RECEIPTS, valid[6]!.header), 0]),
    },
  ];
  const refusal = (type: MsgType, b: Uint8Array): string => {
    try {
      parseHeader(type, b);
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error('a header vector meant to be refused was accepted');
  };
  return {
    valid: valid.map((v) => ({ name: v.name, type: v.type, header: v.header, headerHex: hexOf(bytes(v.type, v.header)) })),
    invalid: invalid.map((v) => ({ name: v.name, type: v.type, headerHex: hexOf(v.bytes), error: refusal(v.type, v.bytes) })),
  };
}

function chainVectors(gw: Identity, n1: Identity, n2: Identity, domain: OdsiDomain) {
  const sid = 'chain-1';
  const route = [
    { peerId: n1.peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4001'], start: 0, end: 2 },
    { peerId: n2.peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4002'], start: 2, end: 5 },
  ];
  const dim = 2;
  const input = (seed: number, n: number) =>
    encodeTensor(new Float32Array(Array.from({ length: n * dim }, (_, i) => (seed + i) / 8)), 'f32');
  const receipt = (
    signer: Identity,
    o: { step: number; pos: number; n: number; start: number; end: number; inp: Uint8Array; out: Uint8Array; up: Hex; prev: Hex },
    edit: Partial<ExecutionReceipt> = {},
  ): SignedReceipt =>
    signReceipt(
      signer,
      {
        requestId: requestIdOf(sid),
        sessionId: sessionIdOf(sid),
        step: o.step,
        pos: o.pos,
        nTokens: o.n,
        layerStart: o.start,
        layerEnd: o.end,
        modelId: toModelId('ab'.repeat(32)),
        profile: 'reference',
        inputHash: hashTensor(o.inp),
        budgetUs: 0,
        outputHash: hashTensor(o.out),
        recvUs: 10,
        computeUs: 500,
        sendUs: 5,
        upstreamReceiptHash: o.up,
        prevReceiptHash: o.prev,
        commitmentHash: ZERO_HASH,
        ...edit,
      },
      domain,
    );
  // the happy path: two steps through both hops; hop 1's outputs are the "activations" seeds 100+
  const steps: unknown[] = [];
  let prev1: Hex = ZERO_HASH;
  let prev2: Hex = ZERO_HASH;
  const good: { header: StepHeader; payload: Uint8Array; r1: SignedReceipt }[] = [];
  for (const [step, pos, n] of [
    [0, 0, 2],
    [1, 2, 1],
  ] as const) {
    const x0 = input(step * 10, n);
    const x1 = input(100 + step * 10, n);
    const x2 = input(200 + step * 10, n);
    const r1 = receipt(n1, { step, pos, n, start: 0, end: 2, inp: x0, out: x1, up: ZERO_HASH, prev: prev1 });
    const h1 = receiptHash(r1.record, domain);
    const r2 = receipt(n2, { step, pos, n, start: 2, end: 5, inp: x1, out: x2, up: h1, prev: prev2 });
    prev1 = h1;
    prev2 = receiptHash(r2.record, domain);
    const header: StepHeader = {
      sessionId: sid,
      requestId: 1 + step,
      step,
      pos,
      nTokens: n,
      dtype: 'f32',
      shape: [n, dim],
      timeline: [],
    };
    good.push({ header, payload: x1, r1 });
    steps.push({
      step,
      gatewayPayloadHex: hexOf(x0),
      hop1: { stepHeader: header, payloadHex: hexOf(x1), receiptsHex: wire([r1]), receiptDigest: h1 },
      result: { receipts: [r1, r2], receiptsHex: wire([r1, r2]), payloadHex: hexOf(x2), receiptDigests: [h1, prev2] },
    });
  }
  // bad cases, each checked by hop index 1 (n2) after the listed good steps
  const base = good[0]!;
  const x = base.payload;
  const r = (edit: Partial<ExecutionReceipt>, signer = n1) =>
    receipt(signer, { step: 0, pos: 0, n: 2, start: 0, end: 2, inp: input(0, 2), out: x, up: ZERO_HASH, prev: ZERO_HASH }, edit);
  const withReceipts = (receipts: unknown, h: Partial<StepHeader> = {}): StepHeader => ({ ...base.header, ...h, receipts }) as StepHeader;
  // a step's receipts travel in its RECEIPTS message: the header for the check, and that payload
  const goodHeader = (g: { header: StepHeader; r1: SignedReceipt }) => ({ ...g.header, receipts: [g.r1] }) as StepHeader;
  const r1Bytes = encodeReceipts([base.r1]);
  const stepTooBig = r1Bytes.slice();
  stepTooBig.fill(0xff, 1 + 64, 1 + 72); // step: 2^64 − 1
  const other = r({}, gw);
  const cases: { name: string; before: number; header: StepHeader; payloadHex: string; receiptsHex?: string; expect: string }[] = [
    { name: 'valid', before: 0, header: goodHeader(base), payloadHex: hexOf(x), expect: 'ok' },
    { name: 'no receipts', before: 0, header: withReceipts(undefined), payloadHex: hexOf(x), expect: 'malformed' },
    { name: 'two receipts at hop 1', before: 0, header: withReceipts([base.r1, base.r1]), payloadHex: hexOf(x), expect: 'malformed' },
    {
      name: 'bytes after the last receipt',
      before: 0,
      header: base.header,
      receiptsHex: hexOf(new Uint8Array([...r1Bytes, 0])),
      payloadHex: hexOf(x),
      expect: 'malformed',
    },
    {
      name: 'uint out of range (step ≥ 2^53)',
      before: 0,
      header: base.header,
      receiptsHex: hexOf(stepTooBig),
      payloadHex: hexOf(x),
      expect: 'malformed',
    },
    { name: 'count 0', before: 0, header: base.header, receiptsHex: '00', payloadHex: hexOf(x), expect: 'malformed' },
    {
      name: 'signature by another key',
      before: 0,
      header: withReceipts([{ ...base.r1, signature: other.signature }]),
      payloadHex: hexOf(x),
      expect: 'bad_signature',
    },
    { name: 'signed by a key not route[0]', before: 0, header: withReceipts([other]), payloadHex: hexOf(x), expect: 'bad_signature' },
    {
      name: 'v = 29',
      before: 0,
      header: withReceipts([{ ...base.r1, signature: `${base.r1.signature.slice(0, -2)}1d` }]),
      payloadHex: hexOf(x),
      expect: 'bad_signature',
    },
    {
      name: 'other session',
      before: 0,
      header: withReceipts([r({ sessionId: sessionIdOf('chain-2') })]),
      payloadHex: hexOf(x),
      expect: 'cross_session',
    },
    { name: 'other step', before: 0, header: withReceipts([r({ pos: 1 })]), payloadHex: hexOf(x), expect: 'slot_mismatch' },
    { name: 'layer gap', before: 0, header: withReceipts([r({ layerEnd: 3 })]), payloadHex: hexOf(x), expect: 'layer_gap' },
    { name: 'other bytes', before: 0, header: goodHeader(base), payloadHex: hexOf(input(7, 2)), expect: 'input_mismatch' },
    { name: 'replay of step 1', before: 2, header: goodHeader(good[1]!), payloadHex: hexOf(good[1]!.payload), expect: 'replay' },
    {
      name: 'broken chain',
      before: 1,
      header: {
        ...good[1]!.header,
        receipts: [
          receipt(n1, {
            step: 1,
            pos: 2,
            n: 1,
            start: 0,
            end: 2,
            inp: input(10, 1),
            out: good[1]!.payload,
            up: ZERO_HASH,
            prev: ZERO_HASH,
          }),
        ],
      } as StepHeader,
      payloadHex: hexOf(good[1]!.payload),
      expect: 'broken_chain',
    },
  ];
  // step order: step 0, then step 2, then step 1
  const r0h = receiptHash(base.r1.record, domain);
  const p2 = input(120, 1);
  const s2 = receipt(n1, { step: 2, pos: 2, n: 1, start: 0, end: 2, inp: input(20, 1), out: p2, up: ZERO_HASH, prev: r0h });
  const p1 = input(130, 1);
  const s1 = receipt(n1, {
    step: 1,
    pos: 3,
    n: 1,
    start: 0,
    end: 2,
    inp: input(30, 1),
    out: p1,
    up: ZERO_HASH,
    prev: receiptHash(s2.record, domain),
  });
  const stepOrder: { header: StepHeader; payloadHex: string; receiptsHex?: string }[] = [
    { header: goodHeader(base), payloadHex: hexOf(x) },
    {
      header: {
        sessionId: sid,
        requestId: 3,
        step: 2,
        pos: 2,
        nTokens: 1,
        dtype: 'f32',
        shape: [1, dim],
        timeline: [],
        receipts: [s2],
      } as StepHeader,
      payloadHex: hexOf(p2),
    },
    {
      header: {
        sessionId: sid,
        requestId: 2,
        step: 1,
        pos: 3,
        nTokens: 1,
        dtype: 'f32',
        shape: [1, dim],
        timeline: [],
        receipts: [s1],
      } as StepHeader,
      payloadHex: hexOf(p1),
    },
  ];
  const verdicts = cases.map((c) => {
    const chain: { current?: ReceiptChain } = {};
    const run = (m: { header: StepHeader; payloadHex: string; receiptsHex?: string }) =>
      custodyVerdict(chain, {
        hop: 1,
        upstreamAddress: n1.address,
        receiverStart: 2,
        sessionId: sid,
        header: m.header,
        payload: Buffer.from(m.payloadHex, 'hex'),
        receiptsHex: m.receiptsHex,
        domain,
      });
    for (const g of good.slice(0, c.before)) run(onWire({ header: goodHeader(g), payloadHex: hexOf(g.payload) }));
    const m = onWire(c);
    return { ...m, got: run(m) };
  });
  const soChain: { current?: ReceiptChain } = {};
  const soSequence = stepOrder.map(onWire);
  const soGot = soSequence.map((s) =>
    custodyVerdict(soChain, {
      hop: 1,
      upstreamAddress: n1.address,
      receiverStart: 2,
      sessionId: sid,
      header: s.header,
      payload: Buffer.from(s.payloadHex, 'hex'),
      receiptsHex: s.receiptsHex,
      domain,
    }),
  );
  return {
    sessionId: sid,
    requestId: requestIdOf(sid),
    sessionIdBytes32: sessionIdOf(sid),
    route,
    dim,
    domain,
    steps,
    note: 'each case is checked by hop 1 (route[1]) after the first `before` happy-path steps of `steps` arrived at it; expect = the custody sub-code (ok = accepted)',
    cases: verdicts.map(({ got, ...c }) => ({ ...c, got })),
    stepOrder: { sequence: soSequence, expect: ['ok', 'ok', 'step_order'], got: soGot },
  };
}

/** All vectors (deterministic). `storiesModel`: path of stories260K.gguf for its model id. */
export function buildVectors(o: { storiesModel?: string } = {}) {
  const gw = key(1);
  const n1 = key(2);
  const n2 = key(3);
  const web3 = identityFromSecret(Buffer.from('4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318', 'hex'));
  const domain: OdsiDomain = { chainId: DEV_CHAIN_ID };
  const route = [
    { peerId: n1.peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4001'], start: 0, end: 2 },
    { peerId: n2.peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4002'], start: 2, end: 5 },
  ];
  const modelId = 'ab'.repeat(32);
  // ERRORs about a session are signed by the hop that issues them (here route[1], hop 1)
  const signByHop1 = errorSigner(n2);
  const custodyError = signByHop1({
    code: 'custody',
    reason: 'chain of custody: input_mismatch: …',
    peerId: route[0]!.peerId,
    sessionId: 'req-1',
    requestId: 2,
    hop: 1,
  });
  const drainingError = signByHop1({
    code: 'draining',
    reason: 'node leaving',
    peerId: route[1]!.peerId,
    sessionId: 'req-1',
    requestId: 9,
    hop: 1,
    replacement: { peerId: key(4).peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4003'] },
    resumeFrom: 'req-1',
  });
  const openBody: OpenToSign = {
    sessionId: 'req-1',
    modelId,
    route,
    reply: { peerId: gw.peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4000'] },
    dtype: 'f32',
    hidden: 2,
    maxTokens: 512,
    spares: [{ peerId: key(4).peerId.toString(), addrs: ['/ip4/127.0.0.1/tcp/4003'], start: 2, end: 5 }],
    issuedAt: T0,
    expiresAt: T0 + OPEN_TTL_MS,
  };
  const open = signedOpen(gw, openBody);
  const chain = chainVectors(gw, n1, n2, domain);
  const f32 = (...v: number[]) => encodeTensor(new Float32Array(v), 'f32');
  const chainStep1 = chain.steps[1] as {
    hop1: { stepHeader: StepHeader; payloadHex: string; receiptsHex: string };
    result: { payloadHex: string; receiptsHex: string };
  };
  const stepAtHop1 = chainStep1.hop1.stepHeader;
  const kvOpen = { ...open, hop: 1 };
  const kvPayload = f32(1, 2, 3, 4, 5, 6, 7, 8); // length 1, kvDim 4: K row then V row
  const advert = signAdvert(key(1), {
    addrs: ['/ip4/127.0.0.1/tcp/4001'],
    modelId: 'abc123',
    start: 0,
    end: 2,
    msPerToken: 1.5,
    prefillMsPerToken: 0.25,
    load: 0,
    freeKvTokens: 4096,
    engine: 'reference',
    version: 'odsi/0.1.0',
    issuedAt: T0,
    ttlMs: 90000,
  });
  const varint = (n: number) => {
    const out: number[] = [];
    for (let v = n; ; v >>>= 7) {
      if (v < 0x80) {
        out.push(v);
        break;
      }
      out.push((v & 0x7f) | 0x80);
    }
    return new Uint8Array(out);
  };
  const lp = (b: Uint8Array) => hexOf(new Uint8Array([...varint(b.length), ...b]));
  const auditRequest = { sessionId: 'req-1', fromStep: 0, toStep: 1 };
  const frames = [
    frameVector('OPEN (hop 0, signed)', { type: MsgType.OPEN, header: open }),
    frameVector('OPENED', { type: MsgType.OPENED, header: { sessionId: 'req-1', peers: route.map((h) => h.peerId) } }),
    frameVector('STEP f32 with budget', {
      type: MsgType.STEP,
      header: { sessionId: 's1', requestId: 7, step: 0, pos: 3, nTokens: 1, dtype: 'f32', shape: [1, 2], budgetMs: 250, timeline: [] },
      payload: f32(1, -2),
    }),
    frameVector('STEP f16', {
      type: MsgType.STEP,
      header: { sessionId: 's1', requestId: 8, step: 1, pos: 4, nTokens: 1, dtype: 'f16', shape: [1, 2], timeline: [] },
      payload: encodeTensor(new Float32Array([1, -2]), 'f16'),
    }),
    frameVector('STEP at hop 1', {
      type: MsgType.STEP,
      header: stepAtHop1,
      payload: Buffer.from(chainStep1.hop1.payloadHex, 'hex'),
    }),
    frameVector('RECEIPTS at hop 1 (one receipt, after its STEP)', {
      type: MsgType.RECEIPTS,
      header: { sessionId: stepAtHop1.sessionId, requestId: stepAtHop1.requestId, step: stepAtHop1.step },
      payload: Buffer.from(chainStep1.hop1.receiptsHex, 'hex'),
    }),
    frameVector('RESULT with timeline', {
      type: MsgType.RESULT,
      header: {
        ...stepAtHop1,
        timeline: [
          { peerId: route[0]!.peerId, start: 0, end: 2, queueMs: 0.012, computeMs: 0.5, sendMs: 0.005, budgetInMs: -1, slackMs: -1 },
          { peerId: route[1]!.peerId, start: 2, end: 5, queueMs: 0.02, computeMs: 0.7, sendMs: 0.004, budgetInMs: -1, slackMs: -1 },
        ],
      },
      payload: Buffer.from(chainStep1.result.payloadHex, 'hex'),
    }),
    frameVector('RECEIPTS to the gateway (two receipts, after the RESULT)', {
      type: MsgType.RECEIPTS,
      header: { sessionId: stepAtHop1.sessionId, requestId: stepAtHop1.requestId, step: stepAtHop1.step },
      payload: Buffer.from(chainStep1.result.receiptsHex, 'hex'),
    }),
    frameVector('ERROR unknown_session', { type: MsgType.ERROR, header: { code: 'unknown_session', reason: 'no session', peerId: 'P' } }),
    frameVector('ERROR custody (signed by hop 1)', { type: MsgType.ERROR, header: custodyError }),
    frameVector('ERROR draining with replacement (signed by hop 1)', { type: MsgType.ERROR, header: drainingError }),
    frameVector('CLOSE', { type: MsgType.CLOSE, header: { sessionId: 's1' } }),
    frameVector('TRUNCATE', { type: MsgType.TRUNCATE, header: { sessionId: 's1', pos: 5 } }),
    frameVector('KV (first message, with the invitation)', {
      type: MsgType.KV,
      header: { sessionId: 'req-1', modelId, start: 2, end: 5, length: 1, layer: 2, kvDim: 4, open: kvOpen },
      payload: kvPayload,
    }),
    frameVector('KV (later layer)', {
      type: MsgType.KV,
      header: { sessionId: 'req-1', modelId, start: 2, end: 5, length: 1, layer: 3, kvDim: 4 },
      payload: kvPayload,
    }),
    frameVector('KV_ACK', { type: MsgType.KV_ACK, header: { sessionId: 'req-1', length: 1 } }),
    {
      ...frameVector('STEP chunked at 4 payload bytes', {
        type: MsgType.STEP,
        header: { sessionId: 's1', requestId: 1, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, 2], timeline: [] },
        payload: f32(1, -2),
      }),
      frames: encodeMessage(
        {
          type: MsgType.STEP,
          header: { sessionId: 's1', requestId: 1, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, 2], timeline: [] },
          payload: f32(1, -2),
        },
        { ...ACT_LIMITS, maxPayload: 4 },
      ).map(hexOf),
      chunkBytes: 4,
    },
    {
      name: 'AUDIT request (owner-signed)',
      type: MsgType.AUDIT,
      typeName: 'AUDIT',
      header: { ...auditRequest, request: signAuditReq(gw, 'req-1', gw.address) },
      frames: encodeAuditMessage({ ...auditRequest, request: signAuditReq(gw, 'req-1', gw.address) }).map(hexOf),
    },
    {
      name: 'AUDIT reply (refusal)',
      type: MsgType.AUDIT,
      typeName: 'AUDIT',
      header: { ok: false, reason: 'not authorised: …' },
      frames: encodeAuditMessage({ ok: false, reason: 'not authorised: …' }).map(hexOf),
    },
  ];
  return {
    about:
      'odsi protocol test vectors (docs/protocol.md). Generated by `odsi conformance vectors` from the implementation; test/protocol/vectors.test.ts checks this file equals a fresh generation and recomputes the vectors independently.',
    limits: {
      frameVersion: 1,
      maxHeaderBytes: MAX_HEADER_BYTES,
      maxFramePayload: MAX_FRAME_PAYLOAD,
      maxMessagePayload: MAX_MESSAGE_PAYLOAD,
      maxRouteHops: MAX_ROUTE_HOPS,
      openTtlMs: OPEN_TTL_MS,
      openMaxSkewMs: OPEN_MAX_SKEW_MS,
    },
    keys: keysOf(['gateway', gw], ['hop1', n1], ['hop2', n2], ['spare', key(4)], ['web3', web3]),
    frames,
    binaryHeaders: headerVectors(n1.peerId.toString(), n2.peerId.toString()),
    tensors: tensorVectors(),
    ids: idVectors(),
    modelId: modelIdVectors(o.storiesModel),
    openSignature: { body: openBody, signedBytes: new TextDecoder().decode(openSigningBytes(openBody)), signature: open.signature },
    errorSignature: [custodyError, drainingError].map((header) => ({
      header,
      signedBytes: new TextDecoder().decode(errorSigningBytes(header)),
    })),
    advert: {
      secretKey: hexOf(key(1).secret),
      body: new TextDecoder().decode(advert.record.subarray(64)),
      signature: advert.advert.signature,
      recordHex: hexOf(advert.record),
      dhtKey: new TextDecoder().decode(advertKey('abc123', advert.advert.peerId)),
      fetchRequestHex: lp(new TextEncoder().encode('abc123')),
      fetchReplyHex: lp(advert.record),
    },
    eip712: eip712Vectors(web3),
    receiptChain: chain,
    tolerance: {
      floor: TAU_FLOOR,
      table: Object.fromEntries(Object.entries(TOLERANCES).map(([k, v]) => [k, v.tau])),
      precisionOf: ['reference', 'ort-f32', 'reference+act-f16', 'ort-f32+act-bf16', 'ort-fp16'].map((p) => ({
        profile: p,
        precision: precisionOf(p),
      })),
      pairs: ['reference|reference', 'reference+act-f16|reference', 'ort-f32+act-bf16|reference'].map((p) => ({
        pair: p,
        key: toleranceFor(p).key,
        tau: toleranceFor(p).tau,
      })),
    },
  };

  function signAuditReq(g: Identity, sid: string, auditor: Hex) {
    return {
      record: {
        gateway: g.address,
        auditor,
        requestId: requestIdOf(sid),
        sessionId: sessionIdOf(sid),
        fromStep: 0,
        toStep: 1,
        expiresAt: 1767225600,
      },
      signature: signDigest(
        typedDigestBytes(
          'AuditRequest',
          {
            gateway: g.address,
            auditor,
            requestId: requestIdOf(sid),
            sessionId: sessionIdOf(sid),
            fromStep: 0,
            toStep: 1,
            expiresAt: 1767225600,
          },
          domain,
        ),
        g.secret,
      ),
    };
  }
}

/** The vectors as the committed file holds them (2-space JSON, trailing newline). */
export function vectorsJson(v: ReturnType<typeof buildVectors>): string {
  return `${JSON.stringify(v, null, 2)}\n`;
}
