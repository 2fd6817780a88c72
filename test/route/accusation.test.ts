// Which route failures are one hop's word against another's (route/ban-worthy.ts accusation):
// a verified ERROR (error-blame.ts keeps `from` only then) naming another peer for a ban-worthy
// fault. An accusation at an open excludes both peers for the request and bans only whom the
// gateway's Disputes ban; anything else is handled as before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteError } from '../../src/route/route-stage.js';
import { accusation, excludeAfterOpenFailure, type DisputeJudge, type DisputeSite } from '../../src/route/ban-worthy.js';
import { BanList } from '../../src/routing/bans.js';
import { Disputes } from '../../src/routing/disputes.js';

const hop = (peerId: string) => ({ peerId, addrs: [], start: 0, end: 1 });

/** a RouteError as route-stage.ts makes one of an ERROR header that blameFor let through */
const remote = (code: string, peerId: string, from?: string): RouteError =>
  new RouteError(`${peerId}: ${code}: r`, 'remote_error', peerId, code, {
    code,
    reason: 'r',
    peerId,
    sessionId: 's',
    ...(from ? { from } : {}),
  });

test('an accusation is a verified ERROR naming another peer for a ban-worthy fault', () => {
  assert.deepEqual(accusation(remote('custody', 'b', 'c')), { accuser: 'c', accused: 'b' });
  assert.deepEqual(accusation(remote('bad_message', 'a', 'b')), { accuser: 'b', accused: 'a' });
  assert.equal(accusation(remote('engine', 'b', 'b')), undefined, 'a hop that names itself admits its own fault');
  assert.equal(accusation(remote('custody', 'b')), undefined, 'restated as its deliverer’s (no from): that peer’s own');
  assert.equal(accusation(remote('busy', 'b', 'c')), undefined, 'not ban-worthy');
  assert.equal(accusation(remote('draining', 'b', 'c')), undefined, 'not ban-worthy');
  const unreachable = new RouteError('b: unreachable', 'unreachable', 'b', 'unreachable', {
    code: 'unreachable',
    reason: 'r',
    peerId: 'b',
    from: 'a',
  });
  assert.equal(accusation(unreachable), undefined, 'checked by ping and probe instead');
  assert.equal(accusation(new RouteError('gateway check', 'remote_error', 'b', 'custody')), undefined, 'the gateway’s own finding');
  // an ERROR that answered a step in flight says which step of which route session
  const atStep = remote('bad_message', 'a', 'b');
  atStep.step = 7;
  assert.deepEqual(accusation(atStep), { accuser: 'b', accused: 'a', about: { sessionId: 's', step: 7 } });
});

test('an accusation at an open excludes both peers and bans only whom the disputes ban', () => {
  const bans = new BanList();
  const disputes = new Disputes({ bans });
  const sites: (DisputeSite | undefined)[] = [];
  const judge: DisputeJudge = {
    dispute: (a, b, reason, site) => {
      sites.push(site);
      return disputes.dispute(a, b, reason);
    },
  };
  const hops = [hop('h1'), hop('liar')];
  const into = () => ({ named: new Set<string>(), unnamed: new Set<string>(), stale: new Set<string>() });
  const first = into();
  excludeAfterOpenFailure(remote('bad_message', 'h1', 'liar'), hops, first, bans, judge);
  assert.deepEqual([[...first.named], [...first.unnamed].sort()], [[], ['h1', 'liar']]);
  assert.deepEqual(sites, [undefined], 'no step named: nothing to examine');
  assert.equal(bans.active().size, 0);
  const second = into();
  excludeAfterOpenFailure(remote('bad_message', 'h2', 'liar'), [hop('h2'), hop('liar')], second, bans, judge);
  assert.deepEqual([[...second.named], [...bans.active()]], [['liar'], ['liar']], 'the liar’s second victim: it is banned');
  // an accusation that answered a step: where, for the accused's record of it
  const atStep = remote('bad_message', 'h1', 'liar');
  atStep.step = 3;
  excludeAfterOpenFailure(atStep, hops, into(), bans, judge);
  assert.deepEqual(sites.at(-1), { sessionId: 's', step: 3, hops });
  // without a judge neither is banned
  const none = into();
  excludeAfterOpenFailure(remote('custody', 'x', 'y'), [hop('x'), hop('y')], none, bans);
  assert.deepEqual([[...none.named], [...none.unnamed].sort(), bans.isBanned('x')], [[], ['x', 'y'], false]);
  // an accusation naming no hop of the route names the gateway itself, which knows better
  const ofUs = into();
  excludeAfterOpenFailure(remote('bad_message', 'gateway', 'h3'), [hop('h3')], ofUs, bans, judge);
  assert.deepEqual([[...ofUs.named], [...ofUs.unnamed], bans.isBanned('h3'), disputes.doubts.isBanned('h3')], [['h3'], [], true, false]);
  // a hop's word about itself still bans it
  const own = into();
  excludeAfterOpenFailure(remote('engine', 'x', 'x'), [hop('x')], own, bans, judge);
  assert.deepEqual([[...own.named], bans.isBanned('x')], [['x'], true]);
});
