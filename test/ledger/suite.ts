// The ledger's rules as one test suite that every backend must pass (SQLite: sqlite.test.ts;
// the contract on anvil: the evm backend's test). A backend supplies a fixture: a fresh ledger
// with default rules, its operator key, the EIP-712 domain receipts are signed under, fresh
// keys, and a way to move the ledger's clock.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { OdsiDomain } from '../../src/accountability/records/eip712.js';
import type { Identity } from '../../src/identity/identity.js';
import type { Address, Ledger, LedgerResult, LedgerSigner, RejectCode } from '../../src/ledger/ledger.js';
import { conductScore, decayReputation, UNIT, updateReputation } from '../../src/ledger/rules.js';
import { computationFault, equivocation, equivocationOtherPair, forgedCustody, honestHandoff, verdictOn } from './evidence-fixtures.js';

export interface LedgerFixture {
  ledger: Ledger;
  operator: LedgerSigner;
  /** the domain receipts and verdicts are signed under (what the ledger verifies them with) */
  domain: OdsiDomain;
  /** moves the ledger's clock forward by `sec` seconds */
  advanceTime(sec: number): Promise<void>;
  /** distinct keys, neither registered nor funded */
  keys: Identity[];
  /** a second handle on the same ledger, opened without the operator's key */
  openWithoutOperator(): Promise<Ledger>;
  close(): Promise<void>;
}

export type MakeFixture = () => Promise<LedgerFixture>;

/** Asserts an accepted write and returns it. */
export function accepted<T extends object>(r: LedgerResult<T>, what = 'write'): T & { ok: true } {
  if (!r.ok) assert.fail(`${what} rejected: ${r.code}: ${r.reason}`);
  return r as T & { ok: true };
}

/** Runs `write`, which must be rejected with `code`, and checks the ledger's status did not change at all. */
export async function rejectedUnchanged(ledger: Ledger, code: RejectCode, write: () => Promise<LedgerResult>): Promise<string> {
  const before = await ledger.status();
  const r = await write();
  assert.equal(r.ok, false, `expected a rejection (${code}), got acceptance`);
  if (r.ok) throw new Error('unreachable');
  assert.equal(r.code, code, `expected ${code}, got ${r.code}: ${r.reason}`);
  assert.ok(r.reason.length > 0, 'a rejection says why');
  assert.deepEqual(await ledger.status(), before, `a rejected write (${code}) changed the ledger`);
  return r.reason;
}

const U = UNIT;
const ppm = (x: bigint, p: bigint): bigint => (x * p) / 1_000_000n;

export function ledgerSuite(name: string, makeFixture: MakeFixture): void {
  describe(`ledger rules: ${name}`, () => {
    /** a fresh fixture per test; verify() must pass at the end of each */
    const withLedger = (title: string, body: (f: LedgerFixture) => Promise<void>): void => {
      test(title, async () => {
        const f = await makeFixture();
        try {
          await body(f);
          const v = await f.ledger.verify();
          assert.deepEqual(v.problems, []);
          assert.equal(v.ok, true);
        } finally {
          await f.close();
        }
      });
    };
    const stakeOf = async (f: LedgerFixture, a: Address): Promise<bigint> => BigInt((await f.ledger.identity(a))!.stake);
    const walletOf = async (f: LedgerFixture, a: Address): Promise<bigint> => BigInt((await f.ledger.identity(a))!.wallet);
    /** registers `id`, mints `funds` to it and stakes `stake` of it */
    const node = async (f: LedgerFixture, id: Identity, funds: bigint, stake = 0n, role: 'node' | 'gateway' = 'node'): Promise<void> => {
      accepted(await f.ledger.register(id, role), 'register');
      if (funds > 0n) accepted(await f.ledger.mint(f.operator, id.address, funds), 'mint');
      if (stake > 0n) accepted(await f.ledger.stake(id, stake), 'stake');
    };

    withLedger('registration and staking follow the rules (minimum stake, funds, operator-only mint)', async (f) => {
      const [a, b] = f.keys as [Identity, Identity];
      const L = f.ledger;
      await rejectedUnchanged(L, 'unknown_identity', () => L.stake(a, 1000n * U));
      accepted(await L.register(a));
      await rejectedUnchanged(L, 'already_registered', () => L.register(a));
      await rejectedUnchanged(L, 'overdrawn', () => L.stake(a, 1000n * U));
      await rejectedUnchanged(L, 'not_authorized', () => L.mint(a, a.address, 5000n * U));
      await rejectedUnchanged(L, 'malformed', () => L.mint(f.operator, a.address, 0n));
      accepted(await L.mint(f.operator, a.address, 3000n * U));
      await rejectedUnchanged(L, 'below_min_stake', () => L.stake(a, 999n * U));
      assert.equal(accepted(await L.stake(a, 1000n * U)).stake, 1000n * U);
      assert.equal(accepted(await L.stake(a, 1n)).stake, 1000n * U + 1n);
      const s = (await L.identity(a.address))!;
      assert.equal(s.address, a.address);
      assert.equal(s.wallet, (2000n * U - 1n).toString());
      assert.equal(s.eligible, true);
      assert.equal(await L.identity(b.address), undefined);
    });

    withLedger('unbonding is enforced: withdraw only after the unbonding period, exact amounts', async (f) => {
      const [a] = f.keys as [Identity];
      const L = f.ledger;
      await node(f, a, 2000n * U, 1500n * U);
      await rejectedUnchanged(L, 'overdrawn', () => L.requestUnstake(a, 1501n * U));
      await rejectedUnchanged(L, 'nothing_to_withdraw', () => L.withdraw(a));
      const u = accepted(await L.requestUnstake(a, 500n * U));
      assert.equal(await stakeOf(f, a.address), 1000n * U);
      assert.equal((await L.identity(a.address))!.unbonding, (500n * U).toString());
      await rejectedUnchanged(L, 'unbonding_not_over', () => L.withdraw(a));
      await f.advanceTime(L.params.unbondingSec - 60);
      await rejectedUnchanged(L, 'unbonding_not_over', () => L.withdraw(a));
      await f.advanceTime(120);
      const id = (await L.identity(a.address))!;
      assert.ok(u.releaseAt <= id.registeredAt + L.params.unbondingSec + 3600);
      await rejectedUnchanged(L, 'overdrawn', () => L.withdraw(a, 500n * U + 1n));
      assert.equal(accepted(await L.withdraw(a, 200n * U)).withdrawn, 200n * U);
      assert.equal(accepted(await L.withdraw(a)).withdrawn, 300n * U);
      assert.equal(await walletOf(f, a.address), 1000n * U);
      await rejectedUnchanged(L, 'nothing_to_withdraw', () => L.withdraw(a));
    });

    withLedger('slashes reach unbonding stake; the reporter gets its share, the rest is burned', async (f) => {
      const [a, g] = f.keys as [Identity, Identity];
      const L = f.ledger;
      await node(f, a, 1500n * U, 1500n * U);
      await node(f, g, 0n);
      accepted(await L.requestUnstake(a, 1000n * U));
      const r = accepted(await L.submitEvidence(g, equivocation(a, f.domain)));
      assert.equal(r.outcome, 'slashed');
      if (r.outcome !== 'slashed') return;
      const slash = ppm(1500n * U, 800_000n); // 1200 ODSI
      assert.equal(slash, 1200n * U);
      assert.equal(r.slash.slashed, slash);
      assert.equal(r.slash.reporterReward, 120n * U);
      assert.equal(r.slash.burned, 1080n * U);
      assert.equal(r.slash.accused, a.address);
      assert.equal(r.slash.kind, 'equivocation');
      const s = (await L.identity(a.address))!;
      assert.equal(s.stake, '0');
      assert.equal(s.unbonding, (300n * U).toString()); // 500 from stake, 700 from unbonding
      assert.equal(s.slashed, slash.toString());
      assert.equal(s.eligible, false);
      assert.equal(s.slashes.length, 1);
      assert.equal(await walletOf(f, g.address), 120n * U);
      await rejectedUnchanged(L, 'slashed', () => L.stake(a, 1000n * U));
      await f.advanceTime(L.params.unbondingSec + 60);
      assert.equal(accepted(await L.withdraw(a)).withdrawn, 300n * U);
      const st = await L.status();
      assert.equal(st.totals.slashed, slash.toString());
      assert.equal(st.totals.burned, (1080n * U).toString());
    });

    withLedger('evidence is usable once: the same evidence, or another pair for the same slot, is rejected', async (f) => {
      const [a, b, g] = f.keys as [Identity, Identity, Identity];
      const L = f.ledger;
      await node(f, a, 2000n * U, 2000n * U);
      await node(f, b, 2000n * U, 2000n * U);
      await node(f, g, 100n * U);
      const ev = equivocation(a, f.domain);
      accepted(await L.submitEvidence(g, ev));
      await rejectedUnchanged(L, 'replayed_evidence', () => L.submitEvidence(g, ev));
      await rejectedUnchanged(L, 'replayed_evidence', () => L.submitEvidence(b, ev));
      await rejectedUnchanged(L, 'replayed_evidence', () => L.submitEvidence(g, equivocationOtherPair(a, f.domain)));
      // a different slot is a different offence
      accepted(await L.submitEvidence(g, equivocation(a, f.domain, 2)));
      const custody = forgedCustody(a, b, f.domain);
      accepted(await L.submitEvidence(g, custody));
      await rejectedUnchanged(L, 'replayed_evidence', () => L.submitEvidence(g, custody));
      const fault = computationFault(a, b, f.domain, 7);
      // b was slashed above: its verdict no longer counts, so this opens a dispute (bond from g)
      const d = accepted(await L.submitEvidence(g, fault));
      assert.equal(d.outcome, 'dispute');
      await rejectedUnchanged(L, 'replayed_evidence', () => L.submitEvidence(g, fault));
    });

    withLedger('slash amounts are exact for equivocation, forged custody and computation faults', async (f) => {
      const [a, b, c, v, g] = f.keys as [Identity, Identity, Identity, Identity, Identity];
      const L = f.ledger;
      const S = 1234_567890123456789012n; // 1234.567… ODSI, not a round number
      for (const id of [a, b, c]) await node(f, id, S, S);
      await node(f, v, 1000n * U, 1000n * U);
      await node(f, g, 0n);
      const expect = async (ev: Parameters<Ledger['submitEvidence']>[1], who: Identity, p: bigint, kind: string): Promise<void> => {
        const r = accepted(await L.submitEvidence(g, ev));
        if (r.outcome !== 'slashed') assert.fail(`expected a slash, got ${r.outcome}`);
        const amount = (S * p) / 1_000_000n;
        assert.equal(r.slash.kind, kind);
        assert.equal(r.slash.accused, who.address);
        assert.equal(r.slash.slashed, amount);
        assert.equal(r.slash.reporterReward, (amount * 100_000n) / 1_000_000n);
        assert.equal(r.slash.reporterReward + r.slash.burned, amount);
        assert.equal(await stakeOf(f, who.address), S - amount);
      };
      await expect(equivocation(a, f.domain), a, 800_000n, 'equivocation');
      await expect(forgedCustody(a, b, f.domain), b, 800_000n, 'custody');
      await expect(computationFault(c, v, f.domain), c, 200_000n, 'computation');
      const st = await L.status();
      const total = ((S * 800_000n) / 1_000_000n) * 2n + (S * 200_000n) / 1_000_000n;
      assert.equal(st.totals.slashed, total.toString());
    });

    withLedger('a computation fault needs a verdict quorum from staked identities; a dispute collects verdicts', async (f) => {
      const [w, v, unstaked, g] = f.keys as [Identity, Identity, Identity, Identity];
      const L = f.ledger;
      await node(f, w, 2000n * U, 2000n * U);
      await node(f, v, 1000n * U, 1000n * U);
      await node(f, unstaked, 0n);
      await node(f, g, 50n * U);
      // a verdict by an identity without stake does not count: the accusation waits, bonded
      const d = accepted(await L.submitEvidence(g, computationFault(w, unstaked, f.domain, 3)));
      if (d.outcome !== 'dispute') assert.fail(`expected a dispute, got ${d.outcome}`);
      assert.equal(d.bond, L.params.accuserBond);
      assert.equal(await walletOf(f, g.address), 50n * U - L.params.accuserBond);
      // the accused's own verdict never counts; a stranger's verdict is refused
      await rejectedUnchanged(L, 'unknown_identity', () => L.addVerdicts(g, d.disputeId, [verdictOn(w, f.keys[9]!, f.domain, 3, false)]));
      await rejectedUnchanged(L, 'unknown_dispute', () => L.addVerdicts(g, `0x${'ab'.repeat(32)}`, []));
      const r = accepted(await L.addVerdicts(g, d.disputeId, [verdictOn(w, v, f.domain, 3, false)]));
      if (r.outcome !== 'slashed') assert.fail(`expected a slash, got ${r.outcome}`);
      assert.equal(r.slash.slashed, ppm(2000n * U, 200_000n));
      // bond back plus the reporter's share
      assert.equal(await walletOf(f, g.address), 50n * U + r.slash.reporterReward);
      assert.equal((await L.identity(g.address))!.bonded, '0');
      await rejectedUnchanged(L, 'dispute_closed', () => L.addVerdicts(g, d.disputeId, [verdictOn(w, v, f.domain, 3, false)]));
    });

    withLedger('a frivolous accusation costs the accuser its bond (innocent verdicts, or no quorum in time)', async (f) => {
      const [w, v, g, poor, gw] = f.keys as [Identity, Identity, Identity, Identity, Identity];
      const L = f.ledger;
      await node(f, w, 1000n * U, 1000n * U);
      await node(f, v, 1000n * U, 1000n * U);
      await node(f, g, 100n * U);
      await node(f, poor, 0n);
      await node(f, gw, 0n, 0n, 'gateway');
      accepted(await L.authorize(f.operator, gw.address));
      const bond = L.params.accuserBond;
      // innocent verdict from a staked auditor: frivolous at once
      const withPass = { ...computationFault(w, v, f.domain, 1), verdicts: [verdictOn(w, v, f.domain, 1, true)] };
      const r1 = accepted(await L.submitEvidence(g, withPass));
      assert.equal(r1.outcome, 'frivolous');
      assert.equal(await walletOf(f, g.address), 100n * U - bond);
      assert.equal(await walletOf(f, w.address), bond);
      // no verdict at all: bond locked, lost when the window closes
      const bare = { ...computationFault(w, v, f.domain, 2), verdicts: [] };
      await rejectedUnchanged(L, 'overdrawn', () => L.submitEvidence(poor, bare));
      const d = accepted(await L.submitEvidence(g, bare));
      if (d.outcome !== 'dispute') assert.fail(`expected a dispute, got ${d.outcome}`);
      assert.equal((await L.identity(g.address))!.bonded, bond.toString());
      await f.advanceTime(L.params.disputeWindowSec + 60);
      await rejectedUnchanged(L, 'dispute_closed', () => L.addVerdicts(g, d.disputeId, [verdictOn(w, v, f.domain, 2, false)]));
      const s = accepted(await L.settleEpoch(gw, { epoch: 1, charges: [], credits: [] }));
      assert.deepEqual(
        s.closedDisputes.map((x) => x.toLowerCase()),
        [d.disputeId.toLowerCase()],
      );
      assert.equal(await walletOf(f, g.address), 100n * U - 2n * bond);
      assert.equal((await L.identity(g.address))!.bonded, '0');
      assert.equal(await walletOf(f, w.address), 2n * bond);
      assert.equal(await stakeOf(f, w.address), 1000n * U); // never slashed
      await rejectedUnchanged(L, 'replayed_evidence', () => L.submitEvidence(g, bare));
    });

    withLedger('deposits: the faucet needs the operator key (a handle without it refuses), a wallet deposit needs funds', async (f) => {
      const [payer] = f.keys as [Identity];
      const L = f.ledger;
      const c = '0x00000000000000000000000000000000000000c9' as Address;
      const other = await f.openWithoutOperator();
      try {
        await rejectedUnchanged(L, 'not_authorized', () => other.deposit(c, 1n * U));
        assert.equal(accepted(await L.deposit(c, 2n * U)).balance, 2n * U);
        await node(f, payer, 5n * U);
        assert.equal(accepted(await other.deposit(c, 3n * U, payer)).balance, 5n * U); // from a wallet: no operator needed
        assert.equal(await walletOf(f, payer.address), 2n * U);
        assert.equal((await L.account(c))!.deposited, (5n * U).toString());
      } finally {
        await other.close();
      }
    });

    withLedger('payments in = rewards out + fees, to the unit; charges never overdraw an account', async (f) => {
      const [n1, n2, n3, gw, stranger] = f.keys as [Identity, Identity, Identity, Identity, Identity];
      const L = f.ledger;
      for (const n of [n1, n2, n3]) await node(f, n, 1000n * U, 1000n * U);
      await node(f, gw, 0n, 0n, 'gateway');
      const c1 = '0x00000000000000000000000000000000000000c1' as Address;
      const c2 = '0x00000000000000000000000000000000000000C2' as Address;
      accepted(await L.deposit(c1, 10n * U));
      accepted(await L.deposit(c2, 3n * U));
      const batch = {
        epoch: 1,
        charges: [
          { account: c1, amount: 1_234_567_891n },
          { account: c2, amount: 7_654_321_987n },
        ],
        credits: [
          { identity: n1.address, units: 3000n, layerSteps: 3 },
          { identity: n2.address, units: 2500n, layerSteps: 2 },
          { identity: n3.address, units: 1001n, layerSteps: 1 },
        ],
      };
      await rejectedUnchanged(L, 'not_authorized', () => L.settleEpoch(gw, batch));
      accepted(await L.authorize(f.operator, gw.address));
      await rejectedUnchanged(L, 'overdrawn', () => L.settleEpoch(gw, { ...batch, charges: [{ account: c2, amount: 3n * U + 1n }] }));
      await rejectedUnchanged(L, 'unknown_identity', () =>
        L.settleEpoch(gw, { ...batch, credits: [{ identity: stranger.address, units: 1n, layerSteps: 1 }] }),
      );
      await rejectedUnchanged(L, 'malformed', () => L.settleEpoch(gw, { ...batch, charges: [batch.charges[0]!, batch.charges[0]!] }));
      const r = accepted(await L.settleEpoch(gw, batch));
      const charged = 1_234_567_891n + 7_654_321_987n;
      const fee = (charged * 20_000n) / 1_000_000n;
      const pool = charged - fee;
      const want = [3000n, 2500n, 1001n].map((u) => (pool * u) / 6501n);
      assert.equal(r.charged, charged);
      assert.deepEqual(
        r.paid.map((p) => p.amount),
        want,
      );
      assert.equal(r.rewards, want[0]! + want[1]! + want[2]!);
      assert.equal(r.rewards + r.fees, charged);
      assert.equal(r.fees, fee + (pool - r.rewards));
      assert.equal((await L.account(c1))!.balance, (10n * U - 1_234_567_891n).toString());
      assert.equal((await L.account(c2))!.charged, '7654321987');
      assert.equal((await L.identity(n1.address))!.earned, want[0]!.toString());
      assert.equal((await L.identity(n1.address))!.layerSteps, 3);
      await rejectedUnchanged(L, 'epoch_order', () => L.settleEpoch(gw, batch));
      // a slashed identity's share is forfeited to fees: still in = out + fees
      accepted(await L.submitEvidence(gw, equivocation(n3, f.domain)));
      const r2 = accepted(await L.settleEpoch(gw, { ...batch, epoch: 2 }));
      assert.equal(r2.paid[2]!.amount, 0n);
      assert.equal(r2.rewards + r2.fees, charged);
      assert.equal(r2.fees, charged - want[0]! - want[1]!);
      const st = await L.status();
      assert.equal(st.epoch, 2);
      assert.equal(BigInt(st.totals.charged), 2n * charged);
      assert.equal(BigInt(st.totals.rewards) + BigInt(st.totals.fees), 2n * charged);
    });

    withLedger('bad input is rejected with a reason and stored nowhere', async (f) => {
      const [a, b, g, stranger] = f.keys as [Identity, Identity, Identity, Identity];
      const L = f.ledger;
      await node(f, a, 1000n * U, 1000n * U);
      await node(f, b, 1000n * U, 1000n * U);
      await node(f, g, 5n * U);
      const ev = equivocation(a, f.domain);
      // bad signatures: b's receipt carrying a's other signature; a flipped bit in r
      await rejectedUnchanged(L, 'bad_signature', () => L.submitEvidence(g, { ...ev, b: { ...ev.b, signature: ev.a.signature } }));
      const flipped = `${ev.b.signature.slice(0, 10)}${ev.b.signature[10] === '0' ? '1' : '0'}${ev.b.signature.slice(11)}` as `0x${string}`;
      await rejectedUnchanged(L, 'bad_signature', () => L.submitEvidence(g, { ...ev, b: { ...ev.b, signature: flipped } }));
      // a record altered after signing no longer verifies
      await rejectedUnchanged(L, 'bad_signature', () =>
        L.submitEvidence(g, { ...ev, b: { ...ev.b, record: { ...ev.b.record, step: 99 } } }),
      );
      // unknown identities: the accused, the submitter
      await rejectedUnchanged(L, 'unknown_identity', () => L.submitEvidence(g, equivocation(stranger, f.domain)));
      await rejectedUnchanged(L, 'unknown_identity', () => L.submitEvidence(stranger, ev));
      // malformed and unprovable evidence
      await rejectedUnchanged(L, 'malformed', () => L.submitEvidence(g, { ...ev, a: {} as never }));
      await rejectedUnchanged(L, 'malformed', () => L.submitEvidence(g, { kind: 'nonsense' } as never));
      await rejectedUnchanged(L, 'malformed', () => L.submitEvidence(g, { ...forgedCustody(a, b, f.domain), receipts: [] }));
      await rejectedUnchanged(L, 'unprovable_evidence', () => L.submitEvidence(g, honestHandoff(a, b, f.domain)));
      await rejectedUnchanged(L, 'unprovable_evidence', () => L.submitEvidence(g, { ...ev, b: ev.a }));
      // overdrawn balances
      await rejectedUnchanged(L, 'overdrawn', () => L.deposit('0x00000000000000000000000000000000000000d1', 6n * U, g));
      await rejectedUnchanged(L, 'overdrawn', () => L.requestUnstake(a, 1000n * U + 1n));
      await rejectedUnchanged(L, 'malformed', () => L.deposit('0x1234' as Address, 1n * U, g));
      await rejectedUnchanged(L, 'malformed', () => L.stake(a, -5n));
      // and the genuine evidence still works afterwards
      accepted(await L.submitEvidence(g, ev));
      accepted(await L.deposit('0x00000000000000000000000000000000000000d1', 5n * U, g));
    });

    withLedger('reputation follows the published conduct and decays without reports', async (f) => {
      const [n1, n2, gw] = f.keys as [Identity, Identity, Identity];
      const L = f.ledger;
      await node(f, n1, 1000n * U, 1000n * U);
      await node(f, n2, 1000n * U, 1000n * U);
      await node(f, gw, 0n, 0n, 'gateway');
      const report = {
        identity: n1.address,
        deadlinesMet: 90,
        deadlinesMissed: 10,
        auditsPassed: 5,
        auditsFailed: 0,
        availabilityPpm: 1_000_000,
        throughputPpm: 500_000,
      };
      await rejectedUnchanged(L, 'not_authorized', () => L.publishReputation(gw, 1, [report]));
      accepted(await L.authorize(f.operator, gw.address));
      await rejectedUnchanged(L, 'unknown_identity', () => L.publishReputation(gw, 1, [{ ...report, identity: f.keys[8]!.address }]));
      await rejectedUnchanged(L, 'malformed', () => L.publishReputation(gw, 1, [{ ...report, availabilityPpm: 1_000_001 }]));
      accepted(await L.publishReputation(gw, 1, [report]));
      const p = L.params;
      const r1 = updateReputation(0, conductScore(report), p);
      assert.equal((await L.identity(n1.address))!.reputationPpm, r1);
      assert.equal((await L.identity(n2.address))!.reputationPpm, 0);
      await rejectedUnchanged(L, 'epoch_order', () => L.publishReputation(gw, 1, [report]));
      accepted(await L.publishReputation(gw, 3, [{ ...report, identity: n2.address }]));
      const n1s = (await L.identity(n1.address))!;
      assert.equal(n1s.reputationPpm, decayReputation(decayReputation(r1, p), p));
      assert.ok(n1s.reputation >= 0 && n1s.reputation <= 1);
      assert.equal(n1s.reputation, n1s.reputationPpm / 1e6);
    });

    withLedger('status JSON has what `odsi ledger status --json` promises', async (f) => {
      const [a] = f.keys as [Identity];
      await node(f, a, 1500n * U, 1200n * U);
      const st = JSON.parse(JSON.stringify(await f.ledger.status())) as Record<string, unknown>;
      const ids = st.identities as Record<string, unknown>[];
      const me = ids.find((x) => x.address === a.address)!;
      assert.ok(me, 'identities are listed by EIP-55 address');
      for (const k of ['stake', 'slashed', 'earned', 'unbonding', 'wallet'])
        assert.match(me[k] as string, /^\d+$/, `${k} is a decimal string`);
      assert.equal(me.stake, (1200n * U).toString());
      assert.equal(typeof me.reputation, 'number');
      assert.ok(Array.isArray(st.accounts));
      assert.equal(typeof st.epoch, 'number');
      const totals = st.totals as Record<string, string>;
      assert.equal(totals.minted, (1500n * U).toString());
      assert.equal(totals.stake, (1200n * U).toString());
    });
  });
}
