import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import {
  assertWellFormed,
  domainSeparator,
  encodeType,
  MalformedRecordError,
  structHash,
  toBytes32,
  typedDigest,
  typeHash,
  TYPES,
  type PrimaryType,
} from '../../../src/accountability/records/eip712.js';
import { recoverSigner, signDigest, signReceipt } from '../../../src/accountability/records/receipts.js';
import { DOMAIN, DOMAIN_WITH_CONTRACT, VECTOR_ADDRESS, VECTOR_RECEIPT, vectorIdentity } from '../fixtures.js';

// --- an independent EIP-712 encoder (only the static types odsi uses), to cross-check viem ---
const enc = new TextEncoder();
const word = (n: bigint): Uint8Array => hexToBytes(n.toString(16).padStart(64, '0'));
function encodeValue(type: string, v: unknown): Uint8Array {
  if (type === 'bytes32') return hexToBytes((v as string).slice(2));
  if (type === 'address') return word(BigInt(v as string));
  if (type === 'string') return keccak_256(enc.encode(v as string));
  if (type === 'bool') return word(v ? 1n : 0n);
  if (type.startsWith('uint')) return word(BigInt(v as number));
  throw new Error(type);
}
function manualStructHash(name: string, fields: readonly { name: string; type: string }[], rec: Record<string, unknown>): Uint8Array {
  const ts = `${name}(${fields.map((f) => `${f.type} ${f.name}`).join(',')})`;
  const parts = [keccak_256(enc.encode(ts)), ...fields.map((f) => encodeValue(f.type, rec[f.name]))];
  const buf = new Uint8Array(32 * parts.length);
  parts.forEach((p, i) => buf.set(p, 32 * i));
  return keccak_256(buf);
}
function manualDigest(primary: PrimaryType, rec: Record<string, unknown>, verifyingContract?: string): string {
  const domFields = [
    { name: 'name', type: 'string' },
    { name: 'version', type: 'string' },
    { name: 'chainId', type: 'uint256' },
    ...(verifyingContract ? [{ name: 'verifyingContract', type: 'address' }] : []),
  ];
  const sep = manualStructHash('EIP712Domain', domFields, { name: 'odsi', version: '1', chainId: 31337, verifyingContract });
  const msg = new Uint8Array(66);
  msg.set([0x19, 0x01]);
  msg.set(sep, 2);
  msg.set(manualStructHash(primary, TYPES[primary], rec), 34);
  return `0x${bytesToHex(keccak_256(msg))}`;
}

// Values asserted here are the ones printed in docs/signatures.md.
test('type strings and type hashes are the documented ones', () => {
  assert.equal(
    encodeType('ExecutionReceipt'),
    'ExecutionReceipt(bytes32 requestId,bytes32 sessionId,uint64 step,uint32 pos,uint32 nTokens,uint32 layerStart,uint32 layerEnd,bytes32 modelId,string profile,bytes32 inputHash,uint64 budgetUs,address signer,bytes32 outputHash,uint64 recvUs,uint64 computeUs,uint64 sendUs,bytes32 upstreamReceiptHash,bytes32 prevReceiptHash,bytes32 commitmentHash)',
  );
  assert.equal(typeHash('ExecutionCommitment'), '0xe9274fd175a9ba0672528e4638187b0b5dc8358270620f8e2c817eb14875ee21');
  assert.equal(typeHash('ExecutionReceipt'), '0xe8c834f216054d27867d5c1fcd1815bb148097d46a3486834386256f036646fb');
  assert.equal(typeHash('AuditVerdict'), '0xed283f27c4fd263d8e38c65850cf047978decb73bb7c639a0bccfa9da56b4f93');
});

test('test vector: fixed key, fixed receipt → struct hash, digest, signature', () => {
  const id = vectorIdentity();
  assert.equal(id.address, VECTOR_ADDRESS); // the key's published address
  assert.equal(domainSeparator(DOMAIN), '0xa4d7a12308f6046c6ed438e72adce6defbbe66d4411c2db029590dd8260a1297');
  assert.equal(domainSeparator(DOMAIN_WITH_CONTRACT), '0xf31ec159412b9da24d4dade16123e9ed7f1be5736ad69569ec56c630849baf85');
  assert.equal(structHash('ExecutionReceipt', VECTOR_RECEIPT), '0x71f35a9f81d36fee6c8565ca30cd21c3263b28e4cec78deacc679b07c822a4c8');
  assert.equal(
    typedDigest('ExecutionReceipt', VECTOR_RECEIPT, DOMAIN),
    '0x7da6024f1aa1344ea0f1fa235dbb0b20e235e115cb6e8a957df405268e9082f9',
  );
  assert.equal(
    typedDigest('ExecutionReceipt', VECTOR_RECEIPT, DOMAIN_WITH_CONTRACT),
    '0x02278ba7a5e3345c91eab15af6f00d55e5c1baa24cde77af24b6aaa8ebabf9f0',
  );
  assert.equal(
    signReceipt(id, VECTOR_RECEIPT, DOMAIN).signature,
    '0xc435d012e5f4ea8dfbb8a8ed1fa064f72b41b638a1e10c4b51b4645918f7d5b335d36176b1ee1a41365075ebc10414e27949aa35ba51d02b509213ffbfcfd1521b',
  );
  assert.equal(
    signReceipt(id, VECTOR_RECEIPT, DOMAIN_WITH_CONTRACT).signature,
    '0x9d4282dbdfb5555da7201e3d119e87290eaa490367215f0005ce115aa4ad0e0777ed9af08a96022db4a8e84fb443763f2953c2a403c54e589ea5788b08b479f41b',
  );
});

test('viem digests agree with an independent encoder for all record types', () => {
  const rec = VECTOR_RECEIPT as unknown as Record<string, unknown>;
  assert.equal(typedDigest('ExecutionReceipt', VECTOR_RECEIPT, DOMAIN), manualDigest('ExecutionReceipt', rec));
  assert.equal(
    typedDigest('ExecutionReceipt', VECTOR_RECEIPT, DOMAIN_WITH_CONTRACT),
    manualDigest('ExecutionReceipt', rec, DOMAIN_WITH_CONTRACT.verifyingContract),
  );
  const {
    outputHash: _o,
    recvUs: _a,
    computeUs: _b,
    sendUs: _c,
    upstreamReceiptHash: _u,
    prevReceiptHash: _p,
    commitmentHash: _h,
    ...commitment
  } = VECTOR_RECEIPT;
  assert.equal(typedDigest('ExecutionCommitment', commitment, DOMAIN), manualDigest('ExecutionCommitment', commitment));
  const verdict = {
    receiptHash: VECTOR_RECEIPT.inputHash,
    auditOutputHash: VECTOR_RECEIPT.outputHash,
    profilePair: 'reference/f32|ort-f32',
    distancePpb: 1234,
    tolerancePpb: 100000,
    pass: true,
    auditor: VECTOR_ADDRESS,
  } as const;
  assert.equal(typedDigest('AuditVerdict', verdict, DOMAIN), manualDigest('AuditVerdict', verdict));
  // every field matters
  for (const f of TYPES.ExecutionReceipt) {
    const v = rec[f.name];
    const changed = {
      ...rec,
      [f.name]:
        typeof v === 'number'
          ? v + 1
          : typeof v === 'string' && v.startsWith('0x')
            ? `${v.slice(0, -1)}${v.endsWith('0') ? '1' : '0'}`
            : `${String(v)}x`,
    };
    assert.notEqual(manualDigest('ExecutionReceipt', changed), manualDigest('ExecutionReceipt', rec), f.name);
  }
});

test('EIP-712 specification example: digest signed with keccak("cow") gives the published signature', () => {
  // from EIP-712's Example.js: Mail from Cow to Bob; digest and signature as published
  const digest = '0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2';
  const secret = keccak_256(enc.encode('cow'));
  const sig = signDigest(digest, secret);
  assert.equal(
    sig,
    '0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b915621c',
  );
  assert.deepEqual(recoverSigner(digest, sig), { address: '0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826' });
});

test('recoverSigner rejects high-s, bad v and garbage', () => {
  const id = vectorIdentity();
  const digest = typedDigest('ExecutionReceipt', VECTOR_RECEIPT, DOMAIN);
  const sig = hexToBytes(signDigest(digest, id.secret).slice(2));
  // malleated twin: s' = n - s, v flipped — valid ECDSA, but not accepted (like OpenZeppelin)
  const n = secp256k1.Point.CURVE().n;
  const s = BigInt(`0x${bytesToHex(sig.subarray(32, 64))}`);
  const twin = new Uint8Array(sig);
  twin.set(hexToBytes((n - s).toString(16).padStart(64, '0')), 32);
  twin[64] = sig[64] === 27 ? 28 : 27;
  assert.match((recoverSigner(digest, `0x${bytesToHex(twin)}`) as { error: string }).error, /malleable/);
  const badV = new Uint8Array(sig);
  badV[64] = 1;
  assert.match((recoverSigner(digest, `0x${bytesToHex(badV)}`) as { error: string }).error, /v must be 27 or 28/);
  assert.ok('error' in recoverSigner(digest, '0x1234'));
});

test('malformed records are refused with the field named', () => {
  assert.throws(() => assertWellFormed('ExecutionReceipt', { ...VECTOR_RECEIPT, step: -1 }), /ExecutionReceipt\.step/);
  assert.throws(() => assertWellFormed('ExecutionReceipt', { ...VECTOR_RECEIPT, inputHash: '0x12' }), /ExecutionReceipt\.inputHash/);
  assert.throws(() => assertWellFormed('ExecutionReceipt', { ...VECTOR_RECEIPT, signer: 'alice' }), /signer/);
  assert.throws(() => assertWellFormed('ExecutionReceipt', { ...VECTOR_RECEIPT, extra: 1 }), /unknown field/);
  assert.throws(() => assertWellFormed('ExecutionReceipt', { ...VECTOR_RECEIPT, layerEnd: 1 }), MalformedRecordError);
  assert.throws(() => assertWellFormed('ExecutionReceipt', { ...VECTOR_RECEIPT, pos: 2 ** 32 }), /uint|integer/);
  assert.throws(() => assertWellFormed('ExecutionReceipt', null), /not an object/);
});

test('toBytes32 keeps 32-byte hex and hashes other ids', () => {
  const hex = `0x${'ab'.repeat(32)}`;
  assert.equal(toBytes32(hex), hex);
  assert.equal(toBytes32('AB'.repeat(32)), hex);
  assert.equal(toBytes32('chatcmpl-1'), `0x${bytesToHex(keccak_256(enc.encode('chatcmpl-1')))}`);
});
