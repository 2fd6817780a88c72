// The shared ledger suite against the contract backend: OdsiRegistry on a real anvil chain
// started from the npm package (one chain for the file, a fresh deployment per test), time
// moved with evm_increaseTime + evm_mine. Then what only the chain adds: `evm:` specs open
// the same deployment from a second client, and a stopped chain is a clear error.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicClient, http } from 'viem';
import { DEV_CHAIN_ID } from '../../src/accountability/records/eip712.js';
import { startAnvil, type Anvil } from '../../src/ledger/evm/anvil.js';
import { deployOdsi } from '../../src/ledger/evm/deploy.js';
import { evmSpec, startLocalEvmLedger } from '../../src/ledger/evm/local-chain.js';
import { openLedger } from '../../src/ledger/open.js';
import { UNIT } from '../../src/ledger/rules.js';
import { testIdentity } from '../accountability/fixtures.js';
import { accepted, ledgerSuite, type LedgerFixture } from './suite.js';

let chain: Promise<Anvil> | undefined;
const anvil = (): Promise<Anvil> => (chain ??= startAnvil({ chainId: DEV_CHAIN_ID }));
after(async () => {
  if (chain) await (await chain).close();
});

let n = 0;
async function evmFixture(): Promise<LedgerFixture> {
  const a = await anvil();
  const operator = testIdentity(1000);
  const base = 3000 + 20 * n++;
  const d = await deployOdsi({ rpcUrl: a.rpcUrl, deployer: operator, fundGasOnDevChain: true });
  const ledger = await openLedger(evmSpec(a.rpcUrl, d.registry), { operator });
  const rpc = createPublicClient({ transport: http(a.rpcUrl) });
  return {
    ledger,
    operator,
    domain: { chainId: DEV_CHAIN_ID },
    advanceTime: async (sec) => {
      await rpc.request({ method: 'evm_increaseTime' as never, params: [sec] as never });
      await rpc.request({ method: 'evm_mine' as never, params: [] as never });
    },
    keys: Array.from({ length: 12 }, (_, i) => testIdentity(base + i)),
    openWithoutOperator: () => openLedger(evmSpec(a.rpcUrl, d.registry)),
    close: () => ledger.close(),
  };
}

ledgerSuite('evm (anvil)', evmFixture);

test('a second client on the same deployment sees the same state; a stopped chain fails clearly', async () => {
  const op = testIdentity(1001);
  const local = await startLocalEvmLedger({ operator: op });
  try {
    const node = testIdentity(1002);
    accepted(await local.ledger.register(node));
    accepted(await local.ledger.mint(op, node.address, 1500n * UNIT));
    accepted(await local.ledger.stake(node, 1200n * UNIT));
    const other = await openLedger(local.spec);
    assert.deepEqual(await other.status(), await local.ledger.status());
    assert.equal((await other.identity(node.address))!.stake, (1200n * UNIT).toString());
    // without the operator's key, a faucet deposit is refused, not attempted
    const r = await other.deposit('0x00000000000000000000000000000000000000d1', 1n);
    assert.ok(!r.ok && r.code === 'not_authorized');
    await other.close();
  } finally {
    await local.close();
  }
  await assert.rejects(openLedger(local.spec), /fetch failed|ECONNREFUSED|HTTP request failed/);
});
