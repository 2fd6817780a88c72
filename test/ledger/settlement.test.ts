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
import { GatewaySettlement, MAX_PENDING_REQUESTS } from '../../src/ledger/settlement.js';
import { SqliteLedger } from '../../src/ledger/sqlite/sqlite-ledger.js';
import { testIdentity } from '../accountability/fixtures.js';
import type { Identity } from '../../src/identity/identity.js';
import { receiptOf } from './evidence-fixtures.js';
import { accepted } from './suite.js';
import { h } from '../accountability/fixtures.js';

test('a settlement the ledger fails to take is kept and settled, once and in full, with the next epoch', async () => {
  const f = await fixture(3100, 1);
  const { L, s, client, path } = f;
  const n1 = f.ns[0]!;
  const step = (i: number) => f.step(n1, i);
  try {
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
  } finally {
    await f.close();
  }
});

/** a SQLite ledger in a fresh directory with staked nodes, an authorised gateway and a funded client */
async function fixture(seed: number, nodes: number) {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-settle-'));
  const operator = testIdentity(seed);
  const ns = Array.from({ length: nodes }, (_, i) => testIdentity(seed + 1 + i));
  const gw = testIdentity(seed + 99);
  const path = join(dir, 'ledger.db');
  const L = SqliteLedger.open(path, { operator, busyTimeoutMs: 100 });
  const client = `0x${String(seed).padStart(40, '0')}` as Address;
  for (const n of ns) {
    accepted(await L.register(n));
    accepted(await L.mint(operator, n.address, 1000n * UNIT));
    accepted(await L.stake(n, 1000n * UNIT));
  }
  accepted(await L.register(gw, 'gateway'));
  accepted(await L.authorize(operator, gw.address));
  accepted(await L.deposit(client, 10n * UNIT));
  const s = new GatewaySettlement({ ledger: L, signer: gw });
  const domain = { chainId: DEV_CHAIN_ID };
  /** one step's receipt by node n (2 layers), credited to `request` */
  const step = (n: (typeof ns)[number], i: number, request?: string) =>
    s.addReceipts([receiptOf(n, domain, { step: i, start: 0, end: 2, input: h(`i${i}`), output: h(`o${i}`) })], request);
  const node = async (n: (typeof ns)[number]) => {
    const i = (await L.identity(n.address))!;
    return { layerSteps: i.layerSteps, earned: BigInt(i.earned) };
  };
  const close = async () => {
    await s.stop();
    await L.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { L, s, ns, client, step, node, close, path };
}

test('a request settles with its own charge in the epoch it ends; a request still running keeps its credits pending', async () => {
  const f = await fixture(3110, 2);
  const { L, s, client, step, node } = f;
  const [n1, n2] = f.ns as [Identity, Identity];
  try {
    // epoch 1: A (served by n1) runs and ends, charged; B (served by n2) is still running —
    // its usage is even reported already (a stream charges before its generation is released)
    step(n1, 1, 'A');
    step(n2, 1, 'B');
    step(n1, 2, 'A');
    s.charge(client, 10, 'A');
    s.charge(client, 20, 'B');
    s.end('A');
    const r1 = await s.settle();
    assert.ok(r1, 'epoch 1 settled');
    assert.equal(r1.charged, chargeFor(10, L.params), "only A's charge");
    assert.equal(r1.rewards + r1.fees, r1.charged);
    assert.deepEqual(await node(n1), { layerSteps: 4, earned: r1.rewards }, "A's node paid all of A's rewards");
    assert.deepEqual(await node(n2), { layerSteps: 0, earned: 0n }, "B's node not paid from A's charge");
    assert.equal(s.pendingRequests, 1);
    assert.equal(s.pendingCharge(client), chargeFor(20, L.params));
    assert.equal(await s.settle(), undefined, 'B still running: nothing to settle');

    // epoch 2: B's last step, then B ends: its nodes are paid from its own charge
    step(n2, 2, 'B');
    s.end('B');
    const r2 = await s.settle();
    assert.ok(r2, 'epoch 2 settled');
    assert.equal(r2.epoch, r1.epoch + 1);
    assert.equal(r2.charged, chargeFor(20, L.params));
    assert.deepEqual(await node(n2), { layerSteps: 4, earned: r2.rewards });
    assert.deepEqual(await node(n1), { layerSteps: 4, earned: r1.rewards }, 'A is not paid again');
    assert.equal(s.pendingRequests, 0);
    assert.equal(s.pendingCharge(client), 0n);
    assert.equal(BigInt((await L.account(client))!.charged), chargeFor(30, L.params));
    assert.equal((await L.verify()).ok, true);
  } finally {
    await f.close();
  }
});

test('uncharged requests settle when they end, pending ones are bounded (the oldest settles as it is), shutdown settles the rest', async () => {
  const f = await fixture(3120, 2);
  const { L, s, client, step, node } = f;
  const [n1, n2] = f.ns as [Identity, Identity];
  try {
    // ended without a charge (an error, a cancel): its credits settle in the epoch it ends
    step(n1, 1, 'failed');
    s.end('failed');
    s.end('never-seen'); // nothing of it was credited or charged: ignored
    const r1 = await s.settle();
    assert.ok(r1);
    assert.equal(r1.charged, 0n);
    assert.deepEqual(await node(n1), { layerSteps: 2, earned: 0n });

    // MAX_PENDING_REQUESTS requests running, then one more: the oldest ('r0', charged already)
    // settles now with its charge; the others stay pending through a settlement
    const rc = receiptOf(n2, { chainId: DEV_CHAIN_ID }, { step: 1, start: 0, end: 2, input: h('i'), output: h('o') });
    s.charge(client, 7, 'r0');
    for (let i = 0; i <= MAX_PENDING_REQUESTS; i++) s.addReceipts([rc], `r${i}`);
    assert.equal(s.evicted, 1);
    assert.match(s.refusals.at(-1) ?? '', /the oldest settles/);
    assert.equal(s.pendingRequests, MAX_PENDING_REQUESTS);
    const r2 = await s.settle();
    assert.ok(r2);
    assert.equal(r2.charged, chargeFor(7, L.params), "r0's own charge");
    assert.deepEqual(await node(n2), { layerSteps: 2, earned: r2.rewards });
    assert.equal(await s.settle(), undefined, 'the rest still running');

    // shutdown: the final settlement ends and settles every pending request
    s.charge(client, 3, 'r9');
    const last = await s.settle({ final: true });
    assert.ok(last, 'the final settlement settles the pending requests');
    assert.equal(last.charged, chargeFor(3, L.params));
    assert.deepEqual(await node(n2), { layerSteps: 2 + 2 * MAX_PENDING_REQUESTS, earned: r2.rewards + last.rewards });
    assert.equal(s.pendingRequests, 0);
    assert.equal((await L.verify()).ok, true);
  } finally {
    await f.close();
  }
});
