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

test('past maxEntries, records that count for nothing any more are dropped; bans and bars are kept', () => {
  const b = new BanList({ baseMs: 1000, maxMs: 1000, forgetMs: 60_000, maxEntries: 3 });
  const t0 = 1_000_000;
  b.banForGood('convicted');
  b.ban('old1', 'x', t0);
  b.ban('old2', 'x', t0);
  b.ban('recent', 'x', t0 + 50_000); // its ban ended 10 s ago at t0 + 61_001: still counts
  const now = t0 + 61_001;
  b.ban('new', 'x', now);
  assert.deepEqual(
    b
      .list()
      .map((x) => x.peerId)
      .sort(),
    ['convicted', 'new', 'recent'],
  );
  assert.equal(b.ban('old1', 'x', now + 1), 1000, 'a dropped record was worth a first failure anyway');
  assert.ok(b.isBanned('convicted', now));
});
