// The contract's own checks on a real anvil chain: evidence verified by ecrecover over odsi's
// EIP-712 records (no help from the TypeScript side: calls go straight to the contract where
// it matters), exact slash amounts from rules.ts, custody and computation faults, disputes,
// settlement conservation, and the gas each operation costs (printed for docs).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicClient, createWalletClient, http, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { startAnvil, type Anvil } from '../../src/ledger/evm/anvil.js';
import { chainFor, deployOdsi, secretHex } from '../../src/ledger/evm/deploy.js';
import { openEvmLedger, type EvmLedger } from '../../src/ledger/evm/evm-ledger.js';
import { loadContracts } from '../../src/ledger/evm/contracts.js';
import { receiptWords } from '../../src/ledger/evm/records.js';
import { domainSeparator, typedDigest } from '../../src/accountability/records/eip712.js';
import { receiptHash, signReceipt, signVerdict, type SignedReceipt } from '../../src/accountability/records/receipts.js';
import { detectEquivocation } from '../../src/accountability/checks/equivocation.js';
import { slashAmount, splitPayments, splitSlash, UNIT, DEFAULT_PARAMS } from '../../src/ledger/rules.js';
import type { Identity } from '../../src/identity/identity.js';
import { DOMAIN, h, routeStep, testIdentity } from '../accountability/fixtures.js';

let anvil: Anvil;
before(async () => {
  anvil = await startAnvil();
});
after(async () => {
  await anvil?.close();
});

const op = testIdentity(900);
const P = DEFAULT_PARAMS;

async function fresh(): Promise<EvmLedger> {
  const d = await deployOdsi({ rpcUrl: anvil.rpcUrl, deployer: op, fundGasOnDevChain: true });
  const L = await openEvmLedger({ rpcUrl: anvil.rpcUrl, registry: d.registry });
  L.operatorSigner = op;
  return L;
}

async function staked(L: EvmLedger, ids: Identity[], stake = 2000n * UNIT): Promise<void> {
  for (const id of ids) {
    assert.ok((await L.register(id)).ok);
    assert.ok((await L.mint(op, id.address, stake + 100n * UNIT)).ok);
    assert.ok((await L.stake(id, stake)).ok);
  }
}

async function advance(sec: number): Promise<void> {
  const c = createPublicClient({ transport: http(anvil.rpcUrl) });
  await c.request({ method: 'evm_increaseTime' as never, params: [sec] as never });
  await c.request({ method: 'evm_mine' as never, params: [] as never });
}

/** a raw transaction to the registry, skipping EvmLedger's local checks */
async function raw(L: EvmLedger, who: Identity, functionName: string, args: unknown[]): Promise<string | undefined> {
  const chain = chainFor(anvil.chainId, anvil.rpcUrl);
  const pub = createPublicClient({ chain, transport: http(anvil.rpcUrl) });
  const account = privateKeyToAccount(secretHex(who.secret));
  try {
    const { request } = await pub.simulateContract({ address: L.registry, abi: loadContracts().contracts.OdsiRegistry.abi, functionName, args, account });
    const hash = await createWalletClient({ chain, transport: http(anvil.rpcUrl), account }).writeContract(request);
    await pub.waitForTransactionReceipt({ hash });
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

function resign(s: SignedReceipt, id: Identity, patch: Partial<SignedReceipt['record']>): SignedReceipt {
  const { signer: _s, ...rest } = s.record;
  return signReceipt(id, { ...rest, ...patch }, DOMAIN);
}

const N = 115792089237316195423570985008687907852837564279074904382605163141518161494337n;
/** the same signature with s → n − s (and v flipped): valid for plain ecrecover, refused as malleable */
function highS(sig: Hex): Hex {
  const s = BigInt(`0x${sig.slice(66, 130)}`);
  const v = parseInt(sig.slice(130, 132), 16);
  return `${sig.slice(0, 66)}${(N - s).toString(16).padStart(64, '0')}${(v === 27 ? 28 : 27).toString(16)}` as Hex;
}

test('the contract hashes records exactly as odsi signs them', async () => {
  const L = await fresh();
  const pub = createPublicClient({ transport: http(anvil.rpcUrl) });
  const abi = loadContracts().contracts.OdsiRegistry.abi;
  const sep = await pub.readContract({ address: L.registry, abi, functionName: 'DOMAIN_SEPARATOR' });
  assert.equal(sep, domainSeparator(DOMAIN));
  const [r] = routeStep([{ id: testIdentity(1), start: 0, end: 2 }], 1);
  assert.equal(receiptWords(r!.record).length, 19);
  assert.equal(L.receiptDigest(r!), typedDigest('ExecutionReceipt', r!.record, DOMAIN));
});

test('equivocation: slashed on the contract own check, exact amounts, once; high-s and forged pairs refused', async () => {
  const L = await fresh();
  const [A, G] = [testIdentity(1), testIdentity(2)];
  await staked(L, [A, G]);
  // part of A's stake is unbonding: the slash still reaches it
  assert.ok((await L.requestUnstake(A, 500n * UNIT)).ok);
  const [a] = routeStep([{ id: A, start: 0, end: 3 }], 4);
  const b = resign(a!, A, { outputHash: h('another output') });
  const ev = detectEquivocation(a!, b, DOMAIN)!;

  // forged: someone else's signature over A's record; malleable high-s copies — straight to the contract
  const forged = resign(a!, G, { outputHash: h('x') });
  const words = (s: SignedReceipt) => receiptWords(s.record);
  assert.match((await raw(L, G, 'slashEquivocation', [words(a!), a!.signature, words({ ...forged, record: { ...forged.record, signer: A.address } }), forged.signature]))!, /BadSignature/);
  assert.match((await raw(L, G, 'slashEquivocation', [words(a!), highS(a!.signature), words(b), b.signature]))!, /BadSignature/);
  assert.match((await raw(L, G, 'slashEquivocation', [words(a!), a!.signature, words(a!), a!.signature]))!, /Unprovable/);

  const r = await L.submitEvidence(G, ev);
  assert.ok(r.ok && r.outcome === 'slashed', JSON.stringify(r, (_, v) => (typeof v === 'bigint' ? String(v) : v)));
  const atRisk = 2000n * UNIT;
  const amount = slashAmount('equivocation', atRisk, P);
  assert.equal(r.slash.slashed, amount);
  assert.deepEqual({ reporterReward: r.slash.reporterReward, burned: r.slash.burned }, splitSlash(amount, P));
  const a2 = (await L.identity(A.address))!;
  // 1600 taken: 1500 from stake, 100 from the unbonding entry
  assert.equal(a2.stake, '0');
  assert.equal(a2.unbonding, (500n * UNIT - (amount - 1500n * UNIT)).toString());
  assert.equal(a2.eligible, false);
  assert.equal((await L.identity(G.address))!.wallet, (100n * UNIT + splitSlash(amount, P).reporterReward).toString());

  const again = await L.submitEvidence(G, ev);
  assert.ok(!again.ok && again.code === 'replayed_evidence');
  // a third receipt for the same slot is the same fault: spent too
  const c = resign(a!, A, { outputHash: h('a third output') });
  const third = await L.submitEvidence(G, detectEquivocation(a!, c, DOMAIN)!);
  assert.ok(!third.ok && third.code === 'replayed_evidence');
  assert.deepEqual((await L.verify()).problems, []);
});

test('forged custody: a receipt contradicting the upstream receipt it names is slashed; an honest handoff is not', async () => {
  const L = await fresh();
  const [A, B, G] = [testIdentity(1), testIdentity(2), testIdentity(3)];
  await staked(L, [A, B, G]);
  const hops = [
    { id: A, start: 0, end: 2 },
    { id: B, start: 2, end: 4 },
  ];
  const [up, down] = routeStep(hops, 1);
  const honest = await L.submitEvidence(G, { kind: 'custody', code: 'input_mismatch', reason: 'x', receipts: [up!, down!], detectedAt: 0 });
  assert.ok(!honest.ok && honest.code === 'unprovable_evidence');
  const lie = resign(down!, B, { inputHash: h('not what A sent'), upstreamReceiptHash: receiptHash(up!.record, DOMAIN) });
  const r = await L.submitEvidence(G, { kind: 'custody', code: 'input_mismatch', blame: B.address, reason: 'x', receipts: [up!, lie], detectedAt: 0 });
  assert.ok(r.ok && r.outcome === 'slashed' && r.slash.kind === 'custody' && r.slash.accused === B.address);
  assert.equal(r.slash.slashed, slashAmount('custody', 2000n * UNIT, P));
  const again = await L.submitEvidence(G, { kind: 'custody', code: 'input_mismatch', reason: 'x', receipts: [up!, lie], detectedAt: 0 });
  assert.ok(!again.ok && again.code === 'replayed_evidence');
});

test('computation fault: a failing verdict quorum slashes; a passing one costs the accuser its bond; an undecided dispute expires at settlement', async () => {
  const L = await fresh();
  const [W, R, G, X] = [testIdentity(1), testIdentity(2), testIdentity(3), testIdentity(4)];
  await staked(L, [W, R, G, X]);
  const gw = testIdentity(5);
  assert.ok((await L.register(gw, 'gateway')).ok);
  assert.ok((await L.authorize(op, gw.address)).ok);
  const step = (n: number) => routeStep([{ id: W, start: 0, end: 2 }], n)[0]!;
  const verdict = (s: SignedReceipt, by: Identity, pass: boolean) =>
    signVerdict(by, { receiptHash: receiptHash(s.record, DOMAIN), auditOutputHash: h('ref'), profilePair: 'reference/f32|reference/f32', distancePpb: pass ? 0 : 10 ** 9, tolerancePpb: 1000, pass }, DOMAIN);

  // guilty
  const s1 = step(1);
  const own = await L.submitEvidence(G, { kind: 'audit', receipt: s1, verdicts: [verdict(s1, W, false)], detectedAt: 0 });
  assert.ok(own.ok && own.outcome === 'dispute' && own.guilty === 0, 'the accused cannot referee itself');
  assert.equal((await L.identity(G.address))!.bonded, P.accuserBond.toString());
  const g = await L.addVerdicts(G, own.disputeId, [verdict(s1, R, false)]);
  assert.ok(g.ok && g.outcome === 'slashed' && g.slash.kind === 'computation');
  assert.equal(g.slash.slashed, slashAmount('computation', 2000n * UNIT, P));
  assert.equal((await L.identity(G.address))!.bonded, '0');

  // frivolous: the bond goes to the accused (X accuses R, R's work passes)
  const s2 = routeStep([{ id: R, start: 0, end: 2 }], 2)[0]!;
  const walletR = BigInt((await L.identity(R.address))!.wallet);
  const f = await L.submitEvidence(X, { kind: 'audit', receipt: s2, verdicts: [verdict(s2, G, true)], detectedAt: 0 });
  assert.ok(f.ok && f.outcome === 'frivolous' && f.bondForfeited === P.accuserBond);
  assert.equal(BigInt((await L.identity(R.address))!.wallet), walletR + P.accuserBond);
  assert.equal(BigInt((await L.identity(X.address))!.wallet), 100n * UNIT - P.accuserBond);

  // undecided, then expired by the first settlement after its window
  const s3 = routeStep([{ id: G, start: 0, end: 2 }], 3)[0]!;
  const d = await L.submitEvidence(X, { kind: 'audit', receipt: s3, verdicts: [], detectedAt: 0 });
  assert.ok(d.ok && d.outcome === 'dispute');
  assert.equal((await L.status()).disputes.length, 1);
  await advance(P.disputeWindowSec + 1);
  const e = await L.settleEpoch(gw, { epoch: 1, charges: [], credits: [] });
  assert.ok(e.ok && e.closedDisputes.length === 1 && e.closedDisputes[0] === d.disputeId);
  const late = await L.addVerdicts(R, d.disputeId, [verdict(s3, R, false)]);
  assert.ok(!late.ok && late.code === 'dispute_closed');
  assert.deepEqual((await L.verify()).problems, []);
});

test('settlement: payments in = rewards out + fees to the unit, slashed identities forfeit; gas per operation', async () => {
  const L = await fresh();
  const [A, B, C] = [testIdentity(1), testIdentity(2), testIdentity(3)];
  await staked(L, [A, B, C]);
  const gw = testIdentity(5);
  assert.ok((await L.register(gw, 'gateway')).ok);
  const unauth = await L.settleEpoch(gw, { epoch: 1, charges: [], credits: [] });
  assert.ok(!unauth.ok && unauth.code === 'not_authorized');
  assert.ok((await L.authorize(op, gw.address)).ok);
  const client = '0x00000000000000000000000000000000000c1e47' as const;
  assert.ok((await L.deposit(client, 1000n * UNIT)).ok);
  const credits = [
    { identity: A.address, units: 3000n, layerSteps: 3 },
    { identity: B.address, units: 7001n, layerSteps: 7 },
    { identity: C.address, units: 1n, layerSteps: 1 },
  ];
  const charged = 777_777_777_777_777n;
  const over = await L.settleEpoch(gw, { epoch: 1, charges: [{ account: client, amount: 1001n * UNIT }], credits });
  assert.ok(!over.ok && over.code === 'overdrawn');
  const r = await L.settleEpoch(gw, { epoch: 1, charges: [{ account: client, amount: charged }], credits });
  assert.ok(r.ok);
  const want = splitPayments(charged, credits.map((c) => ({ units: c.units, forfeited: false })), P);
  assert.equal(r.charged, charged);
  assert.equal(r.rewards + r.fees, charged);
  assert.deepEqual(r.paid.map((p) => p.amount), want.paid);
  assert.equal(r.fees, want.fees);
  assert.equal((await L.account(client))!.balance, (1000n * UNIT - charged).toString());
  assert.equal((await L.identity(B.address))!.layerSteps, 7);
  const again = await L.settleEpoch(gw, { epoch: 1, charges: [], credits: [] });
  assert.ok(!again.ok && again.code === 'epoch_order');

  const rep = await L.publishReputation(gw, 1, [{ identity: A.address, deadlinesMet: 9, deadlinesMissed: 1, auditsPassed: 1, auditsFailed: 0, availabilityPpm: 1_000_000, throughputPpm: 500_000 }]);
  assert.ok(rep.ok);
  const a = (await L.identity(A.address))!;
  assert.ok(a.reputation > 0 && a.reputation <= 1);
  const gas = Object.fromEntries([...L.gasUsed].map(([k, v]) => [k, Number(v.gas / BigInt(v.calls))]));
  console.log(`# gas per call (mean): ${JSON.stringify(gas)}`);
  assert.deepEqual((await L.verify()).problems, []);
});
