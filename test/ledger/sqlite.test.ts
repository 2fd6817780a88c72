// The shared ledger suite against the embedded SQLite backend, plus what only a file can do:
// reopening (replay-and-verify), a tampered file, two handles on one file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { DEV_CHAIN_ID } from '../../src/accountability/records/eip712.js';
import { openLedger, parseLedgerSpec } from '../../src/ledger/open.js';
import { LedgerCorruptError, SqliteLedger } from '../../src/ledger/sqlite/sqlite-ledger.js';
import { UNIT } from '../../src/ledger/rules.js';
import { testIdentity } from '../accountability/fixtures.js';
import { accepted, ledgerSuite, type LedgerFixture } from './suite.js';
import { equivocation } from './evidence-fixtures.js';

let n = 0;
function tempDb(): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-ledger-'));
  return { path: join(dir, 'ledger.db'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

async function sqliteFixture(): Promise<LedgerFixture> {
  const { path, cleanup } = tempDb();
  let now = 1_700_000_000;
  const operator = testIdentity(1000);
  const base = 2000 + 20 * n++;
  const ledger = await openLedger(`sqlite:${path}`, { clock: () => now, operator });
  return {
    ledger,
    operator,
    domain: { chainId: DEV_CHAIN_ID },
    advanceTime: (sec) => {
      now += sec;
      return Promise.resolve();
    },
    keys: Array.from({ length: 12 }, (_, i) => testIdentity(base + i)),
    openWithoutOperator: () => openLedger(`sqlite:${path}`, { clock: () => now }),
    close: async () => {
      await ledger.close();
      cleanup();
    },
  };
}

ledgerSuite('sqlite', sqliteFixture);

test('ledger specs: sqlite:PATH and evm:RPC_URL@ADDRESS parse, anything else is refused clearly', () => {
  assert.deepEqual(parseLedgerSpec('sqlite:/tmp/x.db'), { backend: 'sqlite', path: '/tmp/x.db' });
  assert.deepEqual(parseLedgerSpec('evm:http://127.0.0.1:8545@0x5FbDB2315678afecb367f032d93F642f64180aa3'), {
    backend: 'evm',
    rpcUrl: 'http://127.0.0.1:8545',
    address: '0x5FbDB2315678afecb367f032d93F642f64180aa3',
  });
  assert.throws(() => parseLedgerSpec('sqlite:'), /needs a path/);
  assert.throws(() => parseLedgerSpec('evm:127.0.0.1@0x12'), /evm:RPC_URL@ADDRESS/);
  assert.throws(() => parseLedgerSpec('postgres://x'), /sqlite:PATH or evm:RPC_URL@ADDRESS/);
});

test('a reopened ledger replays and verifies its log, and continues where it stopped', async () => {
  const { path, cleanup } = tempDb();
  try {
    let now = 1_700_000_000;
    const [a, g] = [testIdentity(1), testIdentity(2)];
    const L = SqliteLedger.open(path, { clock: () => now });
    const op = L.operatorKey()!; // generated and kept in the file
    accepted(await L.register(a));
    accepted(await L.register(g));
    accepted(await L.mint(op, a.address, 3000n * UNIT));
    accepted(await L.stake(a, 2000n * UNIT));
    accepted(await L.submitEvidence(g, equivocation(a, { chainId: DEV_CHAIN_ID })));
    accepted(await L.deposit('0x00000000000000000000000000000000000000c1', 7n * UNIT));
    const before = await L.status();
    await L.close();
    now += 10;
    const L2 = SqliteLedger.open(path, { clock: () => now });
    assert.deepEqual(await L2.status(), before);
    assert.equal(L2.operatorKey()?.address, op.address);
    accepted(await L2.requestUnstake(a, 1n));
    const v = await L2.verify();
    assert.equal(v.ok, true);
    assert.equal(v.events, before.events + 1);
    await L2.close();
  } finally {
    cleanup();
  }
});

test('a tampered file fails replay-and-verify on open; verify() names the problem', async () => {
  const { path, cleanup } = tempDb();
  try {
    const now = 1_700_000_000;
    const a = testIdentity(3);
    const L = SqliteLedger.open(path, { clock: () => now });
    const op = L.operatorKey()!;
    accepted(await L.register(a));
    accepted(await L.mint(op, a.address, 3000n * UNIT));
    accepted(await L.stake(a, 2000n * UNIT));
    await L.close();
    // 1. a state row changed behind the log's back
    let db = new Database(path);
    assert.throws(() => db.prepare('DELETE FROM events').run(), /append-only/);
    const row = db.prepare("SELECT key, value FROM state WHERE tbl = 'wallets' AND key = ?").get(a.address.toLowerCase()) as {
      key: string;
      value: string;
    };
    db.prepare("UPDATE state SET value = ? WHERE tbl = 'wallets' AND key = ?").run((BigInt(row.value) + 1n).toString(), row.key);
    db.close();
    assert.throws(
      () => SqliteLedger.open(path, { clock: () => now }),
      (e: unknown) => e instanceof LedgerCorruptError && /wallets/.test(e.message),
    );
    const L2 = SqliteLedger.open(path, { clock: () => now, allowInconsistent: true });
    const v = await L2.verify();
    assert.equal(v.ok, false);
    assert.ok(v.problems.some((p) => p.includes('differs from the replay')));
    await L2.close();
    // 2. an event rewritten (stake amount) even with the triggers dropped: the chain breaks
    db = new Database(path);
    db.prepare("UPDATE state SET value = ? WHERE tbl = 'wallets' AND key = ?").run(row.value, row.key);
    db.exec('DROP TRIGGER events_append_only_u');
    const ev = db.prepare("SELECT seq, event FROM events WHERE kind = 'stake'").get() as { seq: number; event: string };
    db.prepare('UPDATE events SET event = ? WHERE seq = ?').run(
      ev.event.replace('2000000000000000000000', '1000000000000000000000'),
      ev.seq,
    );
    db.close();
    const L3 = SqliteLedger.open(path, { clock: () => now, allowInconsistent: true });
    const v3 = await L3.verify();
    assert.equal(v3.ok, false);
    assert.ok(
      v3.problems.some((p) => p.includes('chain hash')),
      v3.problems.join('\n'),
    );
    await L3.close();
  } finally {
    cleanup();
  }
});

test('two handles on one file (two processes) see and extend one log', async () => {
  const { path, cleanup } = tempDb();
  try {
    const now = 1_700_000_000;
    const op = testIdentity(4);
    const a = testIdentity(5);
    const L1 = SqliteLedger.open(path, { clock: () => now, operator: op });
    const L2 = SqliteLedger.open(path, { clock: () => now, operator: op });
    accepted(await L1.register(a));
    accepted(await L2.mint(op, a.address, 5000n * UNIT)); // L2 catches up on the registration first
    accepted(await L1.stake(a, 1500n * UNIT)); // and L1 on the mint (op's nonce advanced in L2)
    assert.deepEqual(await L1.status(), await L2.status());
    assert.equal((await L2.identity(a.address))!.stake, (1500n * UNIT).toString());
    assert.equal((await L1.verify()).ok, true);
    await L1.close();
    await L2.close();
  } finally {
    cleanup();
  }
});
