// The stake view over the contract reads a bounded amount per refresh: it follows the registry's
// event logs from the last block it read (never the whole registry), re-reads at most
// readsPerRefresh identities, and keeps at most maxTracked — the largest stakes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Identity } from '../../src/identity/identity.js';
import type { Ledger } from '../../src/ledger/ledger.js';
import { startLocalEvmLedger } from '../../src/ledger/evm/local-chain.js';
import { LedgerStakeView } from '../../src/ledger/stake-view.js';
import { testIdentity } from '../accountability/fixtures.js';
import { accepted } from './suite.js';

test('the EVM stake view follows events incrementally, bounded in reads and in identities kept', async () => {
  const op = testIdentity(3300);
  const local = await startLocalEvmLedger({ operator: op });
  const L = local.ledger;
  let statusReads = 0;
  // the same ledger, counting whole-registry reads (the view must make none)
  const counted = new Proxy(L, {
    get: (t, k) => {
      if (k === 'status') statusReads++;
      const v = Reflect.get(t, k, t) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  }) as Ledger;
  try {
    const [a, b, c, d] = [1, 2, 3, 4].map((i) => testIdentity(3300 + i)) as [Identity, Identity, Identity, Identity];
    const min = L.params.minStake;
    for (const n of [a, b, c, d]) accepted(await L.register(n));
    for (const [n, k] of [[a, 1n], [b, 2n], [c, 3n]] as const) {
      accepted(await L.mint(op, n.address, k * min));
      accepted(await L.stake(n, k * min));
    }
    const view = await LedgerStakeView.open(counted, { refreshMs: 0, maxTracked: 2, readsPerRefresh: 3 });
    // first refresh: a, b, c read (d waits); a displaced by c, the larger stake
    assert.equal(view.size, 2);
    assert.ok(view.eligible(b.address) && view.eligible(c.address));
    assert.equal(view.eligible(a.address), false, 'the smallest stake is not tracked when the view is full');
    await view.refresh(); // d read: registered without stake, not kept
    assert.equal(view.get(d.address), undefined);
    // d stakes the most: the next refresh reads only what the new events name, and d displaces b
    accepted(await L.mint(op, d.address, 4n * min));
    accepted(await L.stake(d, 4n * min));
    await view.refresh();
    assert.equal(view.size, 2);
    assert.ok(view.eligible(d.address) && view.eligible(c.address));
    assert.equal(view.eligible(b.address), false);
    assert.equal(view.get(d.address)!.stake, (4n * min).toString());
    assert.equal(statusReads, 0, 'the view never reads the whole registry');
    view.stop();
  } finally {
    await local.close();
  }
});
