// Slashing protection on disk (SlashingProtectionDb behind a SlotGuard, a real SQLite file): a
// session is on file when open() resolves (written on the journal's worker thread), no receipt
// is signed for a session that is not (one write per session, not per step),
// a new guard over the same file (a restarted node) signs no step of it again — neither another
// input nor the same one — while new sessions are served; expired sessions are neither loaded
// nor kept; a file of another key is refused.
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

test('a session is on file before its first receipt; a restarted guard signs none of its steps again', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-protect-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'p.db');
  const limits = { windowMs: 60_000, maxSlots: 100 };
  const k0 = SlotGuard.key(h(1), h(2), 0);
  let db = new SlashingProtectionDb(file, ME);
  const g1 = new SlotGuard(limits, db);
  assert.throws(() => g1.signOnce(k0, h(10), h(20), () => receipt(h(20)), 'gw'), /not on the slashing-protection journal/, 'not opened: nothing signed');
  await g1.open(SlotGuard.session(h(1), h(2)));
  assert.equal(db.count(), 1, 'the session is on file once open() resolved');
  for (let i = 0; i < 20; i++) assert.ok(g1.signOnce(SlotGuard.key(h(1), h(2), i), h(i + 10), h(i), () => receipt(h(i)), 'gw'));
  assert.equal(db.count(), 1, 'one row per session, not per step');
  // a crash after this point loses nothing: the write was on file before the first receipt
  await db.close();

  db = new SlashingProtectionDb(file, ME);
  const g2 = new SlotGuard(limits, db);
  for (const [k, input] of [
    [k0, h(11)],
    [k0, h(10)],
    [SlotGuard.key(h(1), h(2), 20), h(30)],
  ] as const) {
    const r = g2.claim(k, input, 'gw');
    assert.equal(r.ok ? '' : r.code, 'bad_message', 'no step of a session signed before the restart');
    assert.match(r.ok ? '' : r.reason, /before it restarted/);
  }
  // other sessions (another session id of the same request, too) are served
  assert.deepEqual(g2.claim(SlotGuard.key(h(1), h(3), 0), h(10), 'gw'), { ok: true });
  await g2.open(SlotGuard.session(h(1), h(3)));
  assert.ok(g2.signOnce(SlotGuard.key(h(1), h(3), 0), h(10), h(20), () => receipt(h(20)), 'gw'));
  assert.equal(db.count(), 2);
  await db.close();
});

test('the file stays bounded: expired sessions are neither loaded nor kept; another key is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-protect-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'p.db');
  const db = new SlashingProtectionDb(file, ME);
  const g = new SlotGuard({ windowMs: 10_000, maxSlots: 300 }, db);
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 300 }, (_, i) => g.open(SlotGuard.session(h(1), h(1000 + i)), t0)));
  for (let i = 0; i < 300; i++) g.signOnce(SlotGuard.key(h(1), h(1000 + i), 0), h(i), h(i), () => receipt(h(i)));
  assert.equal(db.count(), 300);
  assert.equal(new SlotGuard({ windowMs: 10_000, maxSlots: 300 }, db, t0 + 50_000).size, 0, 'sessions past the window are not loaded');
  assert.equal(new SlotGuard({ windowMs: 60_000, maxSlots: 300 }, db).size, 300, 'inside the window they are');
  // full inside the window: busy; after it, the claim expires the old slots and the file forgets them (on the writer thread)
  assert.equal(g.claim(SlotGuard.key(h(3), h(4), 0), h(0), '', t0 + 10).ok, false);
  assert.deepEqual(g.claim(SlotGuard.key(h(3), h(4), 0), h(0), '', t0 + 50_000), { ok: true });
  for (let i = 0; i < 100 && db.count() > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(db.count(), 0);
  await db.close();
  assert.throws(() => new SlashingProtectionDb(file, '0x2222222222222222222222222222222222222222'), /belongs to 0x1111.*not to this node's key/);
});
