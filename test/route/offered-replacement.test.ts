// kv-transfer: a draining hop's replacement is followed only to a spare the route's OPEN offered
// for exactly that hop's layers, and not to one the gateway stopped using (offered-replacement.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { offeredReplacement } from '../../src/route/offered-replacement.js';

const hop = { peerId: 'leaving', addrs: ['/ip4/127.0.0.1/tcp/1'], start: 2, end: 5 };
const spares = [
  { peerId: 'spare', addrs: ['/ip4/127.0.0.1/tcp/2'], start: 2, end: 5 },
  { peerId: 'other-layers', addrs: ['/ip4/127.0.0.1/tcp/3'], start: 0, end: 2 },
  { peerId: 'banned', addrs: ['/ip4/127.0.0.1/tcp/4'], start: 2, end: 5 },
];
const avoid = (p: string) => p === 'banned';

test('a spare offered for the same layers is followed, at the addresses the gateway knows', () => {
  const got = offeredReplacement({ peerId: 'spare', addrs: ['/ip4/10.9.9.9/tcp/666'] }, hop, spares, avoid);
  assert.deepEqual(got, spares[0]);
});

test('anything else is not: a node not offered, other layers, one no longer used, the leaving hop, no replacement', () => {
  for (const replacement of [
    { peerId: 'colluder', addrs: ['/ip4/10.9.9.9/tcp/666'] },
    { peerId: 'other-layers', addrs: [] },
    { peerId: 'banned', addrs: [] },
    { peerId: 'leaving', addrs: [] },
    { peerId: 7 },
    'spare',
    undefined,
  ])
    assert.equal(offeredReplacement(replacement, hop, spares, avoid), undefined, JSON.stringify(replacement));
  assert.equal(offeredReplacement({ peerId: 'spare' }, hop, [], avoid), undefined, 'no spares offered');
});
