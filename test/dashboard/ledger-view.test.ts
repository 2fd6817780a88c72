// The ledger panel's view of a ledger status is bounded and ordered: the nodes the gateway knows
// first (keyed by peer id), then the largest stakes (keyed by address); the largest balances;
// amounts in ODSI; what was left out is counted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateIdentity } from '../../src/identity/identity.js';
import type { IdentityStatus, LedgerStatus } from '../../src/ledger/ledger.js';
import { UNIT } from '../../src/ledger/rules.js';
import { viewOf } from '../../src/dashboard/ledger.js';

const ids = Array.from({ length: 5 }, () => generateIdentity());
const identity = (i: number, stake: bigint): IdentityStatus => ({
  address: ids[i]!.address,
  role: 'node',
  wallet: '0',
  stake: stake.toString(),
  unbonding: '0',
  unbondingEntries: [],
  slashed: i === 4 ? (UNIT / 2n).toString() : '0',
  earned: '0',
  reputation: 0.5,
  reputationPpm: 500_000,
  layerSteps: 0,
  slashes: [],
  bonded: '0',
  eligible: i !== 4,
  registeredAt: 0,
});

test('viewOf: known nodes first by peer id, then by stake; balances largest first; bounded', () => {
  const st = {
    backend: 'sqlite',
    location: '/tmp/l.db',
    epoch: 3,
    identities: [identity(0, 1n * UNIT), identity(1, 5n * UNIT), identity(2, 2n * UNIT), identity(3, 9n * UNIT), identity(4, 0n)],
    accounts: [
      { address: '0x1', balance: (1n * UNIT).toString(), charged: '0', deposited: '0' },
      { address: '0x2', balance: (7n * UNIT).toString(), charged: '5', deposited: '0' },
    ],
  } as unknown as LedgerStatus;
  const known = [ids[0]!.peerId.toString(), ids[4]!.peerId.toString()];
  const v = viewOf(st, known, 3, 1);
  assert.deepEqual(Object.keys(v.nodes), [known[0], known[1], ids[3]!.address]);
  assert.equal(v.nodes[known[1]!]!.slashed, '0.5');
  assert.equal(v.nodes[known[1]!]!.eligible, false);
  assert.equal(v.nodes[ids[3]!.address]!.stake, '9');
  assert.deepEqual(v.accounts, [{ address: '0x2', balance: '7', charged: '0.000000000000000005' }]);
  assert.deepEqual([v.moreIdentities, v.moreAccounts, v.epoch, v.unit], [2, 1, 3, 'ODSI']);
});
