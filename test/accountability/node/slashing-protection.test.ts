// Slashing protection on disk (SlashingProtectionDb behind a SlotGuard, a real SQLite file): a
// slot is on file before its receipt is signed, a new guard over the same file (a restarted
// node) refuses another input or output for it, expired slots are pruned from the file, and a
// file of another key is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SlotGuard } from '../../../src/accountability/node/slot-guard.js';
import { SlashingProtectionDb } from '../../../src/accountability/node/slashing-protection.js';
import type { Hex } from '../../../src/accountability/records/eip712.js';
import type { SignedReceipt } from '../../../src/accountability/records/receipts.js';
import { VECTOR_RECEIPT } from '../fixtures.js';

const h = (n: number): Hex => `0x${n.toString(16).padStart(64, '0')}` as Hex;
const receipt = (out: Hex): SignedReceipt => ({ record: { ...VECTOR_RECEIPT, outputHash: out }, signature: '0x00' as Hex });
const ME = '0x1111111111111111111111111111111111111111';

test('a signed slot is on file before its receipt exists, and a restarted guard refuses to sign it differently', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-protect-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'p.db');
  const limits = { windowMs: 60_000, maxSlots: 100 };
  const k = SlotGuard.key(h(1), h(2), 0);
  let db = new SlashingProtectionDb(file, ME);
  const g1 = new SlotGuard(limits, db);
  let onFileAtSigning = -1;
  assert.ok(g1.signOnce(k, h(10), h(20), () => ((onFileAtSigning = db.count()), receipt(h(20))), 'gw'));
  assert.equal(onFileAtSigning, 1, 'the slot was written before the receipt was signed');
  db.close(); // a crash after this point loses nothing: the write was synchronous

  db = new SlashingProtectionDb(file, ME);
  const g2 = new SlotGuard(limits, db);
  assert.equal(g2.size, 1);
  const other = g2.claim(k, h(11), 'gw');
  assert.equal(other.ok ? '' : other.code, 'bad_message');
  assert.deepEqual(g2.claim(k, h(10), 'gw'), { ok: true }, 'the same input again is a retransmission');
  assert.equal(g2.signOnce(k, h(10), h(21), () => receipt(h(21)), 'gw'), undefined, 'another output: no receipt');
  assert.ok(g2.signOnce(k, h(10), h(20), () => receipt(h(20)), 'gw'), 'the same output: signed again');
  db.close();
});

test('the file stays bounded: expired slots are neither loaded nor kept; another key is refused', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-protect-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'p.db');
  const db = new SlashingProtectionDb(file, ME);
  const g = new SlotGuard({ windowMs: 1000, maxSlots: 300 }, db);
  const t0 = Date.now();
  for (let i = 0; i < 300; i++) g.signOnce(SlotGuard.key(h(1), h(2), i), h(i), h(i), () => receipt(h(i)));
  assert.equal(db.count(), 300);
  assert.equal(new SlotGuard({ windowMs: 1000, maxSlots: 300 }, db, t0 + 5000).size, 0, 'slots past the window are not loaded');
  // full inside the window: busy; after it, the claim expires the old slots and the file forgets them
  assert.equal(g.claim(SlotGuard.key(h(3), h(4), 0), h(0), '', t0 + 10).ok, false);
  assert.deepEqual(g.claim(SlotGuard.key(h(3), h(4), 0), h(0), '', t0 + 5000), { ok: true });
  assert.equal(db.count(), 0);
  db.close();
  assert.throws(() => new SlashingProtectionDb(file, '0x2222222222222222222222222222222222222222'), /belongs to 0x1111.*not to this node's key/);
});
