// The gateway's audit scheduler in-process (no node processes): who may re-execute an audit
// (never the hop itself, a banned or a convicted peer) and each peer's audit rate.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openModel } from '../../../src/model/load.js';
import type { WeightSource } from '../../../src/model/types.js';
import { createHost, type OdsiHost } from '../../../src/p2p/host.js';
import { BanList } from '../../../src/routing/bans.js';
import { StaticStakeView, type StakeView } from '../../../src/routing/stake.js';
import { Referee } from '../../../src/accountability/gateway/auditor.js';
import { AuditScheduler, type AuditSchedulerOptions } from '../../../src/accountability/gateway/audit-scheduler.js';
import type { AuditPeer } from '../../../src/accountability/gateway/route-audit.js';
import { Verdicts } from '../../../src/accountability/gateway/verdicts.js';
import { STORIES_GGUF } from '../../helpers/paths.js';
import { DOMAIN, routeStep, testIdentity } from '../fixtures.js';

let src: WeightSource;
let host: OdsiHost;

before(async () => {
  src = openModel(STORIES_GGUF);
  host = await createHost({ identity: testIdentity(0) });
});
after(async () => {
  await host.stop();
  src.close();
});

const peer = (n: number, start = 2, end = 5): AuditPeer => ({ peerId: testIdentity(n).peerId.toString(), addrs: [], start, end });

function scheduler(auditors: readonly AuditPeer[], o: AuditSchedulerOptions = {}, stake?: StakeView) {
  const bans = new BanList();
  const verdicts = new Verdicts({ bans });
  const s = new AuditScheduler(
    { host, identity: host.identity, domain: DOMAIN, referee: new Referee(src), verdicts, auditors: () => auditors, stake },
    o,
  );
  return { s, bans, verdicts };
}

const convict = (v: Verdicts, peerId: string) =>
  v.convict('custody', peerId, 'test', { kind: 'custody', code: 'malformed', reason: 'test', receipts: [], detectedAt: Date.now() });

test('auditors: only other peers of the same layers in good standing, drawn at random; banned and convicted ones never', () => {
  const hop = peer(1);
  const [banned, convicted, eligible] = [peer(2), peer(3), peer(4)];
  const { s, bans, verdicts } = scheduler([hop, banned, convicted, eligible, peer(5, 0, 2), peer(6, 2, 4)]);
  // before anything happens all three same-range peers are drawn (60 draws miss one with p ≈ 3·(2/3)^60 < 1e-10)
  const before = new Set(Array.from({ length: 60 }, () => s.pickAuditor(hop)?.peerId));
  assert.deepEqual(before, new Set([banned.peerId, convicted.peerId, eligible.peerId]));

  bans.ban(banned.peerId, 'unreachable');
  convict(verdicts, convicted.peerId);
  assert.equal(bans.isBanned(convicted.peerId), true, 'a conviction bans the peer');
  for (let i = 0; i < 10; i++) assert.equal(s.pickAuditor(hop)?.peerId, eligible.peerId);

  // no eligible peer left: nobody (the referee re-executes), never a banned or convicted one
  const { s: s2, bans: b2, verdicts: v2 } = scheduler([hop, banned, convicted]);
  b2.ban(banned.peerId);
  convict(v2, convicted.peerId);
  assert.equal(s2.pickAuditor(hop), undefined);
});

test('audit rates: per peer over the default; reputation only without a default; holding from holdAtRate', () => {
  const [a, b] = [peer(1).peerId, peer(2).peerId];
  const { s } = scheduler([], { auditRate: 0.1 });
  s.setAuditRate(1, a);
  assert.equal(s.rateFor(a), 1);
  assert.equal(s.rateFor(b), 0.1);
  assert.equal(s.holds(a), true);
  assert.equal(s.holds(b), false);
  assert.throws(() => s.setAuditRate(2), RangeError);

  const { s: rep, verdicts } = scheduler([], { reputation: true });
  assert.equal(rep.rateFor(a), 0.25, 'a new peer is audited often');
  for (let i = 0; i < 1000; i++) verdicts.recordPass(a);
  assert.equal(rep.rateFor(a), 0.02, 'a proven peer is audited rarely');
  convict(verdicts, a);
  assert.equal(rep.rateFor(a), 0.25, 'a conviction resets its record');
  rep.setAuditRate(0.5);
  assert.equal(rep.rateFor(b), 0.5, 'an explicit default overrides reputation');
});

test('selection: rate 1 picks the hop every step, rate 0 never, a rate in between some steps', () => {
  const ids = [testIdentity(1), testIdentity(2)];
  const hops = [peer(1, 0, 2), peer(2)];
  const receipts = routeStep(
    ids.map((id, i) => ({ id, start: hops[i]!.start, end: hops[i]!.end })),
    0,
  );
  const { s } = scheduler([]);
  assert.deepEqual(s.select(hops, receipts), []);
  s.setAuditRate(1, hops[1]!.peerId);
  assert.deepEqual(s.select(hops, receipts), [1]);
  s.setAuditRate(0.5, hops[0]!.peerId);
  const n = Array.from({ length: 400 }, () => s.select(hops, receipts).includes(0)).filter(Boolean).length;
  assert.ok(n > 100 && n < 300, `hop 0 selected ${n} times of 400 at rate 0.5`);
});

test('with stake: auditors only among eligible, not excluded identities; probation raises the audit rate above the default', () => {
  const hop = peer(1);
  const [staked, unstaked, slashed] = [peer(2), peer(3), peer(4)];
  const addr = (n: number) => testIdentity(n).address;
  const stake = new StaticStakeView([
    [addr(1), { weight: 1, auditRate: 0.25 }], // on probation
    [addr(2), { weight: 4, auditRate: 0.02 }], // proven
    [addr(4), { weight: 4, excluded: true }],
  ]);
  const { s } = scheduler([hop, staked, unstaked, slashed], { auditRate: 0.05 }, stake);
  for (let i = 0; i < 6; i++) assert.equal(s.pickAuditor(hop)?.peerId, staked.peerId);
  assert.equal(s.rateFor(hop.peerId), 0.25, 'probation: the rules rate, above the gateway default');
  assert.equal(s.rateFor(staked.peerId), 0.05, 'a proven identity: the gateway default is the floor');
  assert.equal(s.rateFor(unstaked.peerId), 0.05, 'no opinion: the default');
  s.setAuditRate(1, staked.peerId);
  assert.equal(s.rateFor(staked.peerId), 1, 'a per-peer rate still rules');
});

test('with stake: auditors drawn in proportion to stake weight; a stake split into ten identities audits as often as one (4,000 draws)', () => {
  const hop = peer(1);
  const addr = (n: number) => testIdentity(n).address;
  const whale = peer(2);
  const sybils = Array.from({ length: 10 }, (_, i) => peer(10 + i));
  const stake = new StaticStakeView([
    [addr(2), { weight: 10 }],
    ...sybils.map((_, i): [string, { weight: number }] => [addr(10 + i), { weight: 1 }]),
  ]);
  const { s } = scheduler([hop, whale, ...sybils], {}, stake);
  const n = 4000;
  const byWhale = Array.from({ length: n }, () => s.pickAuditor(hop)?.peerId).filter((p) => p === whale.peerId).length;
  // ten identities of weight 1 against one of weight 10: half each (σ ≈ 32 draws; 0.45–0.55 is > 6σ)
  assert.ok(Math.abs(byWhale / n - 0.5) < 0.05, `the single identity audited ${byWhale} of ${n}`);
});
