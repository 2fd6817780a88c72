// Disputes: one hop's signed accusation of its neighbour bans neither; both are doubted (the
// planner avoids them while it can), and a peer is banned only once it disputes with two
// distinct peers not banned themselves, within the window.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BanList } from '../../src/routing/bans.js';
import { Disputes } from '../../src/routing/disputes.js';

const T0 = 1_000_000;

test('one accusation bans nobody; both peers are doubted, doubling on a repeat', () => {
  const bans = new BanList();
  const d = new Disputes({ bans });
  assert.deepEqual(d.dispute('liar', 'honest', 'bad_message', T0), []);
  assert.ok(!bans.isBanned('liar', T0) && !bans.isBanned('honest', T0));
  assert.deepEqual([...d.doubts.active(T0)].sort(), ['honest', 'liar']);
  assert.ok(!d.doubts.isBanned('honest', T0 + 5_001), 'the first doubt lasts 5 s');
  // the same two again: still one counterparty each, the doubt doubles
  assert.deepEqual(d.dispute('liar', 'honest', 'bad_message', T0 + 6_000), []);
  assert.ok(d.doubts.isBanned('honest', T0 + 6_000 + 9_999) && !d.doubts.isBanned('honest', T0 + 6_000 + 10_001));
  assert.ok(!bans.isBanned('liar', T0 + 6_000) && !bans.isBanned('honest', T0 + 6_000));
});

test('a lone liar is banned at its second victim, whichever side it is on; its victims are not', () => {
  for (const accuses of [true, false]) {
    const bans = new BanList();
    const d = new Disputes({ bans });
    const pair = (victim: string): [string, string] => (accuses ? ['liar', victim] : [victim, 'liar']);
    assert.deepEqual(d.dispute(...pair('h1'), 'custody', T0), []);
    assert.deepEqual(d.dispute(...pair('h2'), 'custody', T0 + 1_000), ['liar']);
    assert.ok(bans.isBanned('liar', T0 + 1_000));
    assert.ok(!bans.isBanned('h1', T0 + 1_000) && !bans.isBanned('h2', T0 + 1_000));
    assert.match(bans.list().find((b) => b.peerId === 'liar')!.reason!, /in disputes with 2 peers \((h1, h2|h2, h1)\)/);
    assert.deepEqual(d.stats, { disputes: 2, banned: 1 });
  }
});

test('an honest hop right about two liars is spared once either is banned', () => {
  const bans = new BanList();
  const d = new Disputes({ bans });
  d.dispute('honest', 'liar1', 'bad_message', T0);
  d.dispute('other', 'liar1', 'bad_message', T0 + 1); // liar1's second accuser: banned
  assert.ok(bans.isBanned('liar1', T0 + 1));
  // honest's second dispute: liar1, banned, no longer counts
  assert.deepEqual(d.dispute('honest', 'liar2', 'bad_message', T0 + 2), []);
  assert.deepEqual(d.counterparties('honest', T0 + 2), ['liar2']);
  assert.ok(!bans.isBanned('honest', T0 + 2));
});

test('disputes older than the window are forgotten; memory is bounded', () => {
  const bans = new BanList();
  const d = new Disputes({ bans, windowMs: 60_000, maxPeers: 4 });
  d.dispute('liar', 'h1', 'x', T0);
  assert.deepEqual(d.dispute('liar', 'h2', 'x', T0 + 60_001), [], 'the first dispute was forgotten');
  assert.deepEqual(d.counterparties('liar', T0 + 60_001), ['h2']);
  d.dispute('a', 'b', 'x', T0 + 60_002);
  d.dispute('c', 'e', 'x', T0 + 60_003);
  assert.deepEqual(d.counterparties('liar', T0 + 60_003), [], 'the longest unheard of is dropped past maxPeers');
  assert.deepEqual(d.counterparties('e', T0 + 60_003), ['c']);
  assert.deepEqual(d.dispute('p', 'p', 'x', T0), [], 'a peer cannot dispute with itself');
  assert.ok(!d.doubts.isBanned('p', T0));
});

test('a liar proven later (absolve): the peers in disputes with it are cleared, a ban the rule gave them undone', () => {
  const bans = new BanList();
  const d = new Disputes({ bans });
  // an honest hop refuses two NaN senders before either is proven: it looks like the lone liar
  d.dispute('honest', 'nan1', 'bad_message', T0);
  assert.deepEqual(d.dispute('honest', 'nan2', 'bad_message', T0 + 1), ['honest']);
  d.dispute('bystander', 'nan1', 'bad_message', T0 + 2); // another of nan1's accusers
  bans.ban('bystander', 'timeout', T0 + 2); // banned for something else
  // nan1's own signed record proves it: barred, and its accuser cleared
  bans.banForGood('nan1', 'proven');
  assert.deepEqual(d.absolve('nan1', T0 + 3), ['honest']);
  assert.ok(!bans.isBanned('honest', T0 + 3) && !d.doubts.isBanned('honest', T0 + 3));
  assert.ok(d.doubts.isBanned('nan2', T0 + 3), 'the other, unproven, stays doubted');
  assert.ok(!d.doubts.isBanned('bystander', T0 + 3), 'every accuser of the proven liar is cleared of doubt');
  assert.ok(bans.isBanned('bystander', T0 + 3), 'a ban for something else is no business of this rule');
  // a peer with disputes enough besides the proven liar stays banned
  d.dispute('liar', 'h1', 'x', T0 + 4);
  d.dispute('liar', 'h2', 'x', T0 + 5); // liar banned
  d.dispute('liar', 'h3', 'x', T0 + 6);
  bans.banForGood('h1', 'proven');
  assert.deepEqual(d.absolve('h1', T0 + 7), [], 'still in disputes with h2 and h3');
  assert.ok(bans.isBanned('liar', T0 + 7));
  assert.deepEqual(d.absolve('nobody', T0 + 7), []);
});
