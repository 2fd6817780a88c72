// BanList: a failure bans for a while (doubling per repeated failure), a conviction bars for
// good: it outlives any ban, a later failure does not shorten it, and it survives JSON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BanList, FOREVER } from '../../src/routing/bans.js';

test('a failure bans for a while and doubles; a conviction bars for good', () => {
  const b = new BanList({ baseMs: 1000, maxMs: 8000 });
  const t0 = 1_000_000;
  assert.equal(b.ban('p', 'timeout', t0), 1000);
  assert.ok(b.isBanned('p', t0 + 999) && !b.isBanned('p', t0 + 1001));
  assert.equal(b.ban('p', 'timeout', t0 + 2000), 2000);
  b.banForGood('q', 'equivocation: two receipts for one slot');
  assert.ok(b.isBanned('q', t0 + 10 ** 12), 'still barred long after any ban would end');
  b.ban('q', 'timeout', t0);
  assert.ok(b.isBanned('q', t0 + 10 ** 12), 'a later failure does not shorten it');
  const listed = JSON.parse(JSON.stringify(b.list())) as { peerId: string; until: number }[];
  assert.equal(listed.find((x) => x.peerId === 'q')?.until, FOREVER);
  assert.doesNotThrow(() => new Date(FOREVER).toISOString());
});
