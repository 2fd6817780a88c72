// RECEIPTS payloads (docs/protocol.md §4.3): a real signed receipt survives the binary form
// unchanged (it still verifies), appending equals encoding the whole chain, and every way a
// payload can be cut, padded or overflow is a MessageError (the stream stays usable).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateIdentity } from '../../src/identity/identity.js';
import { MAX_ROUTE_HOPS, MessageError } from '../../src/protocol/messages.js';
import { RECEIPT_FIXED_BYTES, appendReceipt, decodeReceipts, encodeReceipt, encodeReceipts } from '../../src/protocol/receipt-codec.js';
import { ZERO_HASH } from '../../src/accountability/records/eip712.js';
import { signReceipt, verifyReceipt } from '../../src/accountability/records/receipts.js';

const domain = { chainId: 31337 };
const receipt = (step: number, profile = 'reference+act-f16') =>
  signReceipt(
    generateIdentity(),
    {
      requestId: `0x${'11'.repeat(32)}`,
      sessionId: `0x${'22'.repeat(32)}`,
      step,
      pos: 2 ** 32 - 1,
      nTokens: 3,
      layerStart: 2,
      layerEnd: 5,
      modelId: `0x${'ab'.repeat(32)}`,
      profile,
      inputHash: `0x${'33'.repeat(32)}`,
      budgetUs: 2 ** 53 - 1,
      outputHash: `0x${'44'.repeat(32)}`,
      recvUs: 12,
      computeUs: 345,
      sendUs: 6,
      upstreamReceiptHash: ZERO_HASH,
      prevReceiptHash: `0x${'55'.repeat(32)}`,
      commitmentHash: `0x${'66'.repeat(32)}`,
    },
    domain,
  );

test('a signed receipt round-trips through the binary form and still verifies; append = encode the chain', () => {
  const a = receipt(7);
  const b = receipt(8, 'ünïcode-prof');
  const bytes = encodeReceipts([a, b]);
  assert.equal(bytes.length, 1 + 2 * RECEIPT_FIXED_BYTES + Buffer.byteLength(a.record.profile) + Buffer.byteLength(b.record.profile));
  const back = decodeReceipts(bytes);
  assert.deepEqual(back, [a, b]);
  assert.ok(back.every((r) => verifyReceipt(r as never, domain)));
  assert.deepEqual(appendReceipt(appendReceipt(undefined, a), b), bytes);
});

test('malformed RECEIPTS payloads are MessageErrors', () => {
  const one = encodeReceipts([receipt(1)]);
  const big = one.slice();
  big.fill(0xff, 1 + 64, 1 + 72); // step = 2^64 − 1
  const badUtf8 = one.slice();
  badUtf8[one.length - 1] = 0xff;
  const cases: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['count 0', new Uint8Array([0])],
    ['count over the route limit', new Uint8Array([MAX_ROUTE_HOPS + 1, ...one.subarray(1)])],
    ['cut short', one.subarray(0, one.length - 1)],
    ['a byte left over', new Uint8Array([...one, 0])],
    ['count says 2, one receipt', new Uint8Array([2, ...one.subarray(1)])],
    ['uint64 over 2^53 − 1', big],
    ['profile not UTF-8', badUtf8],
  ];
  for (const [what, p] of cases) assert.throws(() => decodeReceipts(p), MessageError, what);
  assert.throws(() => encodeReceipt({ ...receipt(1), signature: '0x00' }), TypeError);
});
