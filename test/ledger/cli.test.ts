// The ledger commands through the real `odsi` binary, as an operator would type them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { bytesToHex } from '../../src/identity/identity.js';
import { UNIT } from '../../src/ledger/rules.js';
import type { LedgerStatus } from '../../src/ledger/ledger.js';
import { testIdentity } from '../accountability/fixtures.js';
import { runOdsi } from '../helpers/cli.js';

test('odsi ledger status/verify/mint, stake, unstake, withdraw, deposit on an embedded ledger', { timeout: 180_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-ledger-cli-'));
  try {
    const spec = `sqlite:${join(dir, 'ledger.db')}`;
    const id = testIdentity(9001);
    const keyFile = join(dir, 'node.key');
    writeFileSync(keyFile, bytesToHex(id.secret) + '\n', { mode: 0o600 });
    const odsi = (...args: string[]) => runOdsi(args, { timeoutMs: 60_000 });
    const ok = (...args: string[]) => {
      const r = odsi(...args);
      assert.equal(r.code, 0, `odsi ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };

    const empty = JSON.parse(ok('ledger', 'status', '--ledger', spec, '--json')) as LedgerStatus;
    assert.equal(empty.backend, 'sqlite');
    assert.deepEqual(empty.identities, []);
    assert.equal(empty.epoch, 0);
    assert.equal(JSON.parse(ok('ledger', 'mint', '--ledger', spec, '--to', id.address, '2500', '--json')).ok, true);
    assert.match(ok('stake', '--ledger', spec, '--identity', keyFile, '1500'), /staked 1500 ODSI/);
    assert.equal(JSON.parse(ok('unstake', '--ledger', spec, '--identity', keyFile, '100', '--json')).ok, true);
    const early = odsi('withdraw', '--ledger', spec, '--identity', keyFile);
    assert.equal(early.code, 1);
    assert.match(early.stderr, /withdraw rejected \(unbonding_not_over\)/);
    const dep = JSON.parse(ok('deposit', '--ledger', spec, '--account', '0x00000000000000000000000000000000000000c1', '12.5', '--json')) as { balance: string };
    assert.equal(dep.balance, (125n * UNIT / 10n).toString());

    const st = JSON.parse(ok('ledger', 'status', '--ledger', spec, '--json')) as LedgerStatus;
    const me = st.identities.find((x) => x.address === id.address)!;
    assert.ok(me, 'the identity is listed by its EIP-55 address');
    assert.equal(me.stake, (1400n * UNIT).toString());
    assert.equal(me.unbonding, (100n * UNIT).toString());
    assert.equal(me.slashed, '0');
    assert.equal(me.earned, '0');
    assert.equal(me.reputation, 0);
    assert.equal(st.accounts[0]!.balance, (125n * UNIT / 10n).toString());
    assert.match(ok('ledger', 'status', '--ledger', spec), /stake 1400 unbonding 100/);
    const v = JSON.parse(ok('ledger', 'verify', '--ledger', spec, '--json')) as { ok: boolean; events: number };
    assert.equal(v.ok, true);
    assert.equal(v.events, st.events);

    // an inconsistency makes verify exit non-zero and name it
    const db = new Database(join(dir, 'ledger.db'));
    db.prepare("UPDATE state SET value = '1' WHERE tbl = 'wallets' AND key = ?").run(id.address.toLowerCase());
    db.close();
    const bad = odsi('ledger', 'verify', '--ledger', spec);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /INCONSISTENT/);
    assert.match(bad.stdout, /wallets/);
    assert.equal(odsi('ledger', 'status', '--ledger', spec).code, 1, 'a corrupt ledger is not served');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
