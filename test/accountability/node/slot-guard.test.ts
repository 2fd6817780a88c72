// SlotGuard (never sign twice for one slot): a signed slot refuses another input before compute
// and another output at signing, signs a retransmission only for the same output, and stays
// bounded (busy when full of slots inside the window, room again once they expire).
// One owner holds at most its share of the slots.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SlotGuard } from '../../../src/accountability/node/slot-guard.js';
import type { Hex } from '../../../src/accountability/records/eip712.js';
import type { SignedReceipt } from '../../../src/accountability/records/receipts.js';
import { VECTOR_RECEIPT } from '../fixtures.js';

const h = (n: number): Hex => `0x${n.toString(16).padStart(64, '0')}` as Hex;
const receipt = (out: Hex): SignedReceipt => ({ record: { ...VECTOR_RECEIPT, outputHash: out }, signature: '0x00' as Hex });

test('a slot gets one receipt: other inputs and outputs are refused, a retransmission is signed for the same output only', () => {
  const g = new SlotGuard({ windowMs: 60_000, maxSlots: 10 });
  const k = SlotGuard.key(h(1), h(2), 0);
  assert.deepEqual(g.claim(k, h(10)), { ok: true });
  assert.deepEqual(g.claim(k, h(11)), { ok: true }, 'nothing signed yet: the slot is still free');
  let signed = 0;
  const sign = (out: Hex) => () => (signed++, receipt(out));
  const r = g.signOnce(k, h(10), h(20), sign(h(20)));
  assert.ok(r);
  const other = g.claim(k, h(11));
  assert.equal(other.ok, false);
  assert.match(!other.ok ? other.reason : '', /already signed for a different input/);
  assert.deepEqual(g.claim(k, h(10)), { ok: true });
  assert.equal(
    g.signOnce(k, h(10), h(20), () => r),
    r,
    'retransmission: signed again for the same output',
  );
  assert.equal(g.signOnce(k, h(10), h(21), sign(h(21))), undefined, 'another output: no receipt');
  assert.equal(g.signOnce(k, h(11), h(20), sign(h(20))), undefined, 'another input: no receipt');
  assert.equal(signed, 1, 'refused slots are never signed');
  assert.deepEqual(g.claim(SlotGuard.key(h(1), h(2), 1), h(11)), { ok: true }, 'the next step is another slot');
});

test('bounded: busy when full inside the window, room again after it', () => {
  const g = new SlotGuard({ windowMs: 1000, maxSlots: 2 });
  const t0 = Date.now();
  for (let i = 0; i < 2; i++) g.signOnce(SlotGuard.key(h(1), h(2), i), h(i), h(i), () => receipt(h(i)));
  const full = g.claim(SlotGuard.key(h(1), h(2), 5), h(5), '', t0 + 10);
  assert.equal(full.ok ? '' : full.code, 'busy');
  assert.deepEqual(g.claim(SlotGuard.key(h(1), h(2), 5), h(5), '', t0 + 5000), { ok: true });
  assert.equal(g.size, 0);
});

test('one owner filling its share of the slots is refused alone; another owner still proceeds; expiry gives the share back', () => {
  const g = new SlotGuard({ windowMs: 1000, maxSlots: 8, maxSlotsPerOwner: 2 });
  const t0 = Date.now();
  for (let i = 0; i < 2; i++) g.signOnce(SlotGuard.key(h(1), h(2), i), h(i), h(i), () => receipt(h(i)), 'greedy');
  const refused = g.claim(SlotGuard.key(h(1), h(2), 2), h(2), 'greedy', t0 + 10);
  assert.equal(refused.ok ? '' : refused.code, 'busy');
  assert.deepEqual(g.claim(SlotGuard.key(h(3), h(4), 0), h(0), 'other', t0 + 10), { ok: true });
  assert.deepEqual(
    g.claim(SlotGuard.key(h(1), h(2), 0), h(0), 'greedy', t0 + 10),
    { ok: true },
    'a retransmission of a held slot is not a new slot',
  );
  assert.deepEqual(g.claim(SlotGuard.key(h(1), h(2), 2), h(2), 'greedy', t0 + 5000), { ok: true }, 'expired slots count no more');
});
