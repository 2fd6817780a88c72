// Which route failures are one hop's word against another's (route/ban-worthy.ts accusation):
// a verified ERROR (error-blame.ts keeps `from` only then) naming another peer for a ban-worthy
// fault. An accusation at an open excludes both peers for the request and bans only whom the
// gateway's Disputes ban; anything else is handled as before.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteError } from '../../src/route/route-stage.js';
import { accusation, excludeAfterOpenFailure } from '../../src/route/ban-worthy.js';
import { BanList } from '../../src/routing/bans.js';
import { Disputes } from '../../src/routing/disputes.js';

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
});

test('an accusation at an open excludes both peers and bans only whom the disputes ban', () => {
  const bans = new BanList();
  const disputes = new Disputes({ bans });
  const hops = [{ peerId: 'h1' }, { peerId: 'liar' }];
  const into = () => ({ named: new Set<string>(), unnamed: new Set<string>(), stale: new Set<string>() });
  const first = into();
  excludeAfterOpenFailure(remote('bad_message', 'h1', 'liar'), hops, first, bans, disputes);
  assert.deepEqual([[...first.named], [...first.unnamed].sort()], [[], ['h1', 'liar']]);
  assert.equal(bans.active().size, 0);
  const second = into();
  excludeAfterOpenFailure(remote('bad_message', 'h2', 'liar'), [{ peerId: 'h2' }, { peerId: 'liar' }], second, bans, disputes);
  assert.deepEqual([[...second.named], [...bans.active()]], [['liar'], ['liar']], 'the liar’s second victim: it is banned');
  // without a judge neither is banned
  const none = into();
  excludeAfterOpenFailure(remote('custody', 'x', 'y'), [{ peerId: 'x' }, { peerId: 'y' }], none, bans);
  assert.deepEqual([[...none.named], [...none.unnamed].sort(), bans.isBanned('x')], [[], ['x', 'y'], false]);
  // an accusation naming no hop of the route names the gateway itself, which knows better
  const ofUs = into();
  excludeAfterOpenFailure(remote('bad_message', 'gateway', 'h3'), [{ peerId: 'h3' }], ofUs, bans, disputes);
  assert.deepEqual([[...ofUs.named], [...ofUs.unnamed], bans.isBanned('h3'), disputes.doubts.isBanned('h3')], [['h3'], [], true, false]);
  // a hop's word about itself still bans it
  const own = into();
  excludeAfterOpenFailure(remote('engine', 'x', 'x'), [{ peerId: 'x' }], own, bans, disputes);
  assert.deepEqual([[...own.named], bans.isBanned('x')], [['x'], true]);
});
