// swarmStatus() is pure: a snapshot of candidates, pings, bans, convictions and audits in, the
// status the dashboard and `odsi status` show out. Bans, convictions and unreachable nodes take
// a node out of coverage; gaps are listed; measured speed beats the advertised one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MeasuredSpeed, precisionOf, swarmStatus, type SwarmSnapshot } from '../../src/gateway/swarm-status.js';
import { render } from '../../src/cli/status.js';

const cand = (peerId: string, start: number, end: number, msPerToken = 10) => ({
  peerId,
  addrs: [`/ip4/127.0.0.1/tcp/1/p2p/${peerId}`],
  start,
  end,
  msPerToken,
  load: 1,
  freeKvTokens: 1000,
});

function snapshot(over: Partial<SwarmSnapshot> = {}): SwarmSnapshot {
  return {
    model: { id: 'm', modelId: 'abc', nLayers: 6 },
    gatewayPeerId: 'gw',
    candidates: [cand('a', 0, 3), cand('b', 0, 3, 20), cand('c', 3, 5), cand('d', 3, 6)],
    adverts: [{ peerId: 'a', engine: 'ort-q4', version: 'odsi/0.1.0', issuedAt: 1 }],
    rttMs: new Map([['a', 2.5]]),
    unreachable: new Set(['d']),
    bans: [{ peerId: 'b', until: 2_000, failures: 1, reason: 'audit: wrong output' }],
    measuredMsPerToken: new Map([['a', 4]]),
    convictionOf: (p) => (p === 'b' ? 'audit: wrong output' : undefined),
    audits: [
      { peerId: 'a', pass: true },
      { peerId: 'a', pass: true },
      { peerId: 'b', pass: false },
      { peerId: 'c', pass: false, incomplete: true },
    ],
    recoveries: { replay: 1, transfer: 2, gaveUp: 0 },
    now: 1_000,
    ...over,
  };
}

test('nodes: measured speed, RTT, bans, convictions, audits, precision', () => {
  const st = swarmStatus(snapshot());
  const a = st.nodes.find((n) => n.peerId === 'a')!;
  assert.equal(a.msPerToken, 4);
  assert.equal(a.msPerTokenSource, 'measured');
  assert.equal(a.advertisedMsPerToken, 10);
  assert.equal(a.rttMs, 2.5);
  assert.equal(a.engine, 'ort-q4');
  assert.equal(a.precision, 'q4');
  assert.deepEqual(a.audits, { passed: 2, failed: 0 });
  const b = st.nodes.find((n) => n.peerId === 'b')!;
  assert.equal(b.banned, true);
  assert.equal(b.bannedUntil, 2_000);
  assert.equal(b.conviction, 'audit: wrong output');
  assert.deepEqual(b.audits, { passed: 0, failed: 1 });
  assert.equal(b.rttMs, null);
  assert.equal(st.nodes.find((n) => n.peerId === 'c')!.audits.failed, 0, 'an incomplete audit is no verdict');
  assert.equal(st.nodes.find((n) => n.peerId === 'd')!.reachable, false);
  assert.deepEqual(st.recoveries, { replay: 1, transfer: 2, gaveUp: 0 });
});

test('coverage counts usable nodes only and lists the gaps; an expired ban counts again', () => {
  const st = swarmStatus(snapshot());
  assert.deepEqual(
    st.coverage.map((c) => [c.layer, c.nodes, c.peers.join(',')]),
    [
      [0, 1, 'a'],
      [1, 1, 'a'],
      [2, 1, 'a'],
      [3, 1, 'c'],
      [4, 1, 'c'],
      [5, 0, ''],
    ],
  );
  assert.equal(st.coverage[0]!.tokensPerSec, 250); // 1000 / 4 ms measured
  assert.deepEqual(st.uncovered, [[5, 6]]);
  assert.equal(st.ready, false);
  // b's ban ran out; were it not convicted, it would count again
  const later = swarmStatus(snapshot({ now: 3_000, unreachable: new Set(), convictionOf: () => undefined }));
  assert.equal(later.coverage[0]!.nodes, 2);
  assert.equal(later.coverage[0]!.tokensPerSec, 250 + 50);
  assert.deepEqual(later.uncovered, []);
  assert.equal(later.nodes.find((n) => n.peerId === 'b')!.banned, false);
  assert.equal(later.nodes.find((n) => n.peerId === 'b')!.routable, true);
});

test('a convicted node stays unroutable after its ban ran out (or was cleared), and says why; so does an ineligible one', () => {
  const st = swarmStatus(snapshot({ now: 3_000, unreachable: new Set(), bans: [] }));
  const b = st.nodes.find((n) => n.peerId === 'b')!;
  assert.equal(b.banned, false);
  assert.equal(b.routable, false);
  assert.equal(b.unroutable, 'convicted: audit: wrong output');
  assert.deepEqual(st.coverage[0]!.peers, ['a']);
  assert.equal(st.coverage[0]!.tokensPerSec, 250);
  const c = swarmStatus(snapshot({ unreachable: new Set(), ineligible: (p) => (p === 'c' ? 'no stake' : undefined) }));
  assert.equal(c.nodes.find((n) => n.peerId === 'c')!.unroutable, 'not eligible: no stake');
  assert.deepEqual(c.coverage[3]!.peers, ['d']);
  const d = swarmStatus(snapshot()).nodes.find((n) => n.peerId === 'd')!;
  assert.deepEqual([d.routable, d.unroutable], [false, 'unreachable']);
  // `odsi status` prints why
  const text = render(st);
  assert.match(text.split('\n').find((l) => l.startsWith('b '))!, /NOT ROUTABLE \(convicted: audit: wrong output\)/);
  assert.match(text.split('\n').find((l) => l.startsWith('a '))!, / up/);
});

test('MeasuredSpeed smooths per peer; precisionOf reads the profile', () => {
  const m = new MeasuredSpeed(0.5);
  m.observe([{ peerId: 'x', computeMs: 10 }]);
  m.observe([
    { peerId: 'x', computeMs: 20 },
    { peerId: 'y', computeMs: NaN },
  ]);
  assert.equal(m.snapshot().get('x'), 15);
  assert.equal(m.snapshot().has('y'), false);
  assert.equal(precisionOf('reference'), 'f32');
  assert.equal(precisionOf('ort-f16-acc2'), 'f16');
});

test('a doubted node (in a recent dispute) says so while the doubt lasts; it stays routable and counted', () => {
  const doubts = [{ peerId: 'c', until: 1_500, failures: 1, reason: 'dispute: c: bad_message: non-finite activations' }];
  const st = swarmStatus(snapshot({ doubts }));
  const c = st.nodes.find((n) => n.peerId === 'c')!;
  assert.deepEqual(c.doubt, { reason: doubts[0]!.reason, until: 1_500 });
  assert.equal(c.routable, true);
  assert.deepEqual(st.coverage[3]!.peers, ['c']);
  assert.match(render(st), /doubted until .* \(dispute: c: bad_message/);
  assert.equal(swarmStatus(snapshot({ doubts, now: 1_501 })).nodes.find((n) => n.peerId === 'c')!.doubt, undefined);
});

test('odsi status escapes what peers wrote (control and bidi characters), so a reason cannot drive the terminal', () => {
  const doubts = [{ peerId: 'c', until: 1_500, failures: 1, reason: 'dispute: \u001b[2J\u001b]0;owned\u0007 \u202eevil' }];
  const out = render(swarmStatus(snapshot({ doubts, adverts: [{ peerId: 'a', engine: 'ort\u001b[31m', version: 'v', issuedAt: 1 }] })));
  assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/.test(out), JSON.stringify(out));
  assert.match(out, /dispute: \\x1b\[2J\\x1b\]0;owned\\x07 \\u202eevil/);
  assert.match(out, /ort\\x1b\[31m/);
});
