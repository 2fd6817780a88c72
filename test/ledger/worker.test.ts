// The embedded ledger in a worker thread (what gateways and nodes open): the same file, the same
// answers as in-process, refusals and corruption reported as such, and nothing after close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openLedger } from '../../src/ledger/open.js';
import { UNIT } from '../../src/ledger/rules.js';
import { LedgerCorruptError, SqliteLedger } from '../../src/ledger/sqlite/sqlite-ledger.js';
import { WorkerLedger } from '../../src/ledger/sqlite/worker-ledger.js';
import { testIdentity } from '../accountability/fixtures.js';
import { accepted } from './suite.js';

test('a worker-thread SQLite ledger writes durably, refuses like the in-process one, and reports a corrupt file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-wledger-'));
  const path = join(dir, 'ledger.db');
  const operator = testIdentity(3200);
  const a = testIdentity(3201);
  try {
    const W = await openLedger(`sqlite:${path}`, { operator, worker: true });
    assert.ok(W instanceof WorkerLedger);
    assert.equal(W.operator, operator.address);
    accepted(await W.register(a));
    accepted(await W.mint(operator, a.address, 2000n * UNIT));
    const s = accepted(await W.stake(a, 1000n * UNIT));
    assert.equal(s.stake, 1000n * UNIT); // bigints cross the thread boundary
    const r = await W.stake(a, 5000n * UNIT);
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.code, 'overdrawn');
    const faucet = accepted(await W.deposit('0x00000000000000000000000000000000000000c3', 3n * UNIT));
    assert.equal(faucet.balance, 3n * UNIT);
    const seen = await W.status();
    await W.close();
    await assert.rejects(W.status(), /closed/);

    // the file as an in-process handle reads it: the same state, verified
    const L = SqliteLedger.open(path, { operator });
    assert.deepEqual(await L.status(), seen);
    assert.equal((await L.verify()).ok, true);
    await L.close();

    // a state row changed behind the log's back: opening in the worker fails as corrupt
    const db = new Database(path);
    db.prepare("UPDATE state SET value = '1' WHERE tbl = 'wallets' AND key = ?").run(a.address.toLowerCase());
    db.close();
    await assert.rejects(openLedger(`sqlite:${path}`, { worker: true }), (e: unknown) => e instanceof LedgerCorruptError && /wallets/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
