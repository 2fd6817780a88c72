// `odsi ledger deploy` and the ledger commands against a contract on a real anvil chain,
// through the real `odsi` binary: deploy with a key file, mint as operator, stake, status,
// verify.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex } from '../../src/identity/identity.js';
import { startAnvil, type Anvil } from '../../src/ledger/evm/anvil.js';
import { UNIT } from '../../src/ledger/rules.js';
import type { LedgerStatus } from '../../src/ledger/ledger.js';
import { testIdentity } from '../accountability/fixtures.js';
import { runOdsi } from '../helpers/cli.js';

let anvil: Anvil;
let dir: string;
before(async () => {
  anvil = await startAnvil();
  dir = mkdtempSync(join(tmpdir(), 'odsi-evm-cli-'));
});
after(async () => {
  await anvil?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('odsi ledger deploy prints the address; mint, stake, status and verify work on evm:RPC@ADDRESS', { timeout: 120_000 }, () => {
  const op = testIdentity(9100);
  const node = testIdentity(9101);
  const opKey = join(dir, 'operator.key');
  const nodeKey = join(dir, 'node.key');
  writeFileSync(opKey, bytesToHex(op.secret) + '\n', { mode: 0o600 });
  writeFileSync(nodeKey, `0x${bytesToHex(node.secret)}\n`, { mode: 0o600 });
  const ok = (...args: string[]) => {
    const r = runOdsi(args, { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `odsi ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const d = JSON.parse(ok('ledger', 'deploy', '--rpc', anvil.rpcUrl, '--key', opKey, '--json')) as {
    address: string;
    ledger: string;
    operator: string;
  };
  assert.match(d.address, /^0x[0-9a-fA-F]{40}$/);
  assert.equal(d.ledger, `evm:${anvil.rpcUrl}@${d.address}`);
  assert.equal(d.operator, op.address);
  const spec = d.ledger;
  ok('ledger', 'mint', '--ledger', spec, '--to', node.address, '2500', '--operator', opKey);
  assert.match(ok('stake', '--ledger', spec, '--identity', nodeKey, '1500'), /staked 1500 ODSI/);
  // the faucet deposit, as on the embedded ledger, with the operator's key (a chain keeps none)
  ok('deposit', '--ledger', spec, '--account', '0x00000000000000000000000000000000000000c1', '3', '--operator', opKey);
  const st = JSON.parse(ok('ledger', 'status', '--ledger', spec, '--json')) as LedgerStatus;
  assert.equal(st.backend, 'evm');
  const me = st.identities.find((i) => i.address === node.address)!;
  assert.equal(me.stake, (1500n * UNIT).toString());
  assert.equal(me.wallet, (1000n * UNIT).toString());
  assert.equal(st.accounts.find((a) => a.address.toLowerCase() === '0x00000000000000000000000000000000000000c1')?.balance, (3n * UNIT).toString());
  assert.match(ok('ledger', 'verify', '--ledger', spec), /^ok: /);
});
