// The gateway's settlement against a real SQLite ledger that fails once: another process holds
// the file's write lock (a second connection in BEGIN IMMEDIATE), so the epoch's write throws
// SQLITE_BUSY. The batch must survive and settle, in full and once, with the next epoch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { DEV_CHAIN_ID } from '../../src/accountability/records/eip712.js';
import type { Address } from '../../src/ledger/ledger.js';
import { chargeFor, UNIT } from '../../src/ledger/rules.js';
import { GatewaySettlement } from '../../src/ledger/settlement.js';
import { SqliteLedger } from '../../src/ledger/sqlite/sqlite-ledger.js';
import { testIdentity } from '../accountability/fixtures.js';
import { receiptOf } from './evidence-fixtures.js';
import { accepted } from './suite.js';
import { h } from '../accountability/fixtures.js';

test('a settlement the ledger fails to take is kept and settled, once and in full, with the next epoch', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-settle-'));
  const path = join(dir, 'ledger.db');
  const operator = testIdentity(3100);
  const [n1, gw] = [testIdentity(3101), testIdentity(3102)];
  const L = SqliteLedger.open(path, { operator, busyTimeoutMs: 100 });
  const client = '0x00000000000000000000000000000000000000c7' as Address;
  try {
    accepted(await L.register(n1));
    accepted(await L.mint(operator, n1.address, 1000n * UNIT));
    accepted(await L.stake(n1, 1000n * UNIT));
    accepted(await L.register(gw, 'gateway'));
    accepted(await L.authorize(operator, gw.address));
    accepted(await L.deposit(client, 10n * UNIT));
    const s = new GatewaySettlement({ ledger: L, signer: gw });
    const domain = { chainId: DEV_CHAIN_ID };
    const step = (i: number) => s.addReceipts([receiptOf(n1, domain, { step: i, start: 0, end: 2, input: h(`i${i}`), output: h(`o${i}`) })]);
    step(1);
    s.charge(client, 10);

    // another process holds the write lock: the epoch's write throws, nothing is lost
    const other = new Database(path);
    other.prepare('BEGIN IMMEDIATE').run();
    assert.equal(await s.settle(), undefined);
    other.prepare('ROLLBACK').run();
    other.close();
    assert.match(s.refusals.at(-1) ?? '', /kept for the next epoch/);
    assert.equal((await L.status()).epoch, 0);
    assert.equal(s.pendingCharge(client), chargeFor(10, L.params));

    // the next epoch carries both: one settlement, everything charged and credited once
    step(2);
    s.charge(client, 5);
    const r = await s.settle();
    assert.ok(r, 'settled');
    assert.equal(r.epoch, 1);
    assert.equal(r.charged, chargeFor(10, L.params) + chargeFor(5, L.params));
    assert.equal(r.rewards + r.fees, r.charged);
    assert.equal((await L.identity(n1.address))!.layerSteps, 4);
    assert.equal(s.pendingCharge(client), 0n);
    assert.equal(await s.settle(), undefined, 'nothing left to settle');
    assert.equal((await L.account(client))!.charged, r.charged.toString());
    assert.equal((await L.verify()).ok, true);
    await s.stop();
  } finally {
    await L.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an epoch that closes while a request runs (its credits in, its charge not yet) carries the credits to the charge, not to nothing', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-settle-'));
  const operator = testIdentity(3110);
  const [n1, n2, gw] = [testIdentity(3111), testIdentity(3112), testIdentity(3113)];
  const L = SqliteLedger.open(join(dir, 'ledger.db'), { operator });
  const client = '0x00000000000000000000000000000000000000c8' as Address;
  try {
    for (const n of [n1, n2]) {
      accepted(await L.register(n));
      accepted(await L.mint(operator, n.address, 1000n * UNIT));
      accepted(await L.stake(n, 1000n * UNIT));
    }
    accepted(await L.register(gw, 'gateway'));
    accepted(await L.authorize(operator, gw.address));
    accepted(await L.deposit(client, 10n * UNIT));
    const s = new GatewaySettlement({ ledger: L, signer: gw });
    const domain = { chainId: DEV_CHAIN_ID };
    const step = (n: typeof n1, i: number) => s.addReceipts([receiptOf(n, domain, { step: i, start: 0, end: 2, input: h(`i${i}`), output: h(`o${i}`) })]);

    // a request served by n1 runs across the epoch's end: its receipts are in, its usage is not
    step(n1, 1);
    step(n1, 2);
    assert.equal(await s.settle(), undefined, 'nothing charged: nothing settled');
    assert.equal((await L.status()).epoch, 0);
    // it ends in the next epoch (charged), and n2 serves a request in it too
    s.charge(client, 10);
    step(n2, 3);
    s.charge(client, 5);
    const r = await s.settle();
    assert.ok(r, 'settled');
    assert.equal(r.charged, chargeFor(15, L.params));
    assert.equal(r.rewards + r.fees, r.charged);
    const [i1, i2] = [(await L.identity(n1.address))!, (await L.identity(n2.address))!];
    assert.equal(i1.layerSteps, 4);
    assert.equal(i2.layerSteps, 2);
    // paid pro rata to units (4 : 2 layer-steps), nothing lost to the empty epoch
    assert.equal(BigInt(i1.earned), 2n * BigInt(i2.earned));
    assert.ok(BigInt(i2.earned) > 0n);

    // credits never charged (the gateway shuts down) are still recorded by the final settlement
    step(n2, 4);
    assert.equal(await s.settle(), undefined);
    const last = await s.settle({ final: true });
    assert.ok(last, 'the final settlement settles uncharged credits');
    assert.equal(last.charged, 0n);
    assert.equal((await L.identity(n2.address))!.layerSteps, 4);
    assert.equal((await L.verify()).ok, true);
    await s.stop();
  } finally {
    await L.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
