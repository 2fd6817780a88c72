// The ledger's pure rules: exact integer arithmetic both backends and routing share.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  auditRatePpm,
  conductScore,
  DEFAULT_PARAMS,
  formatAmount,
  makeParams,
  maxGainPerStep,
  parseAmount,
  paramsFromJson,
  paramsJson,
  routingWeight,
  splitPayments,
  stepUnits,
  takeMatured,
  takeSlash,
  UNIT,
} from '../../src/ledger/rules.js';
import { seededUniform } from '../../src/util/rng.js';

const p = makeParams();

test('a slash takes bonded stake first, then unbonding entries latest release first', () => {
  const entries = [
    { amount: 100n, releaseAt: 10 },
    { amount: 200n, releaseAt: 30 },
    { amount: 300n, releaseAt: 20 },
  ];
  assert.deepEqual(takeSlash(50n, entries, 30n), { stake: 20n, entries });
  assert.deepEqual(takeSlash(50n, entries, 300n), {
    stake: 0n,
    entries: [
      { amount: 100n, releaseAt: 10 },
      { amount: 250n, releaseAt: 20 },
    ],
  });
  assert.deepEqual(takeSlash(50n, entries, 400n).entries, [
    { amount: 100n, releaseAt: 10 },
    { amount: 150n, releaseAt: 20 },
  ]);
  assert.throws(() => takeSlash(50n, entries, 651n), /exceeds/);
  assert.deepEqual(takeMatured(entries, 20, 350n), [
    { amount: 200n, releaseAt: 30 },
    { amount: 50n, releaseAt: 20 },
  ]);
  assert.throws(() => takeMatured(entries, 20, 401n), /exceeds/);
});

test('payments: rewards + fees = charged to the unit for random batches; forfeited shares go to fees', () => {
  const rnd = seededUniform(99);
  for (let i = 0; i < 500; i++) {
    const charged = BigInt(Math.floor(rnd() * 1e15)) * BigInt(1 + Math.floor(rnd() * 1e6));
    const credits = Array.from({ length: Math.floor(rnd() * 8) }, () => ({ units: BigInt(Math.floor(rnd() * 1e6)), forfeited: rnd() < 0.2 }));
    const s = splitPayments(charged, credits, p);
    assert.equal(s.rewards + s.fees, charged);
    assert.equal(s.paid.reduce((a, b) => a + b, 0n), s.rewards);
    assert.ok(s.fees >= (charged * 20_000n) / 1_000_000n);
    credits.forEach((c, j) => c.forfeited && assert.equal(s.paid[j], 0n));
  }
  assert.deepEqual(splitPayments(1000n, [], p), { charged: 1000n, fees: 1000n, rewards: 0n, paid: [] });
});

test('step units: tight deadlines and the bottleneck pay more, a missed deadline nothing', () => {
  const base = { layers: 3, deadlineMet: true, budgetUs: 100_000, referenceBudgetUs: 100_000, bottleneck: false };
  assert.equal(stepUnits(base), 3000n);
  assert.equal(stepUnits({ ...base, budgetUs: 80_000 }), 3750n); // 25 % tighter → +25 %
  assert.equal(stepUnits({ ...base, budgetUs: 10_000 }), 4500n); // capped at +50 %
  assert.equal(stepUnits({ ...base, bottleneck: true }), 3750n);
  assert.equal(stepUnits({ ...base, deadlineMet: false }), 0n);
});

test('probation and reputation set audit rates; routing weight is linear in stake (no Sybil gain)', () => {
  assert.equal(auditRatePpm(1_000_000, 0, p), p.auditRateMaxPpm);
  assert.equal(auditRatePpm(1_000_000, p.probationSteps, p), p.auditRateMinPpm);
  assert.equal(auditRatePpm(0, p.probationSteps, p), p.auditRateMaxPpm);
  const S = 10_000n * UNIT;
  for (const rep of [0, 300_000, 1_000_000])
    for (const steps of [0, p.probationSteps]) {
      const one = routingWeight({ stake: S, slashed: false, reputationPpm: rep, layerSteps: steps }, p);
      const ten = 10n * routingWeight({ stake: S / 10n, slashed: false, reputationPpm: rep, layerSteps: steps }, p);
      assert.ok(one - ten >= 0n && one - ten < 20n, `rep ${rep}, steps ${steps}: ${one} vs ${ten}`);
    }
  assert.equal(routingWeight({ stake: S, slashed: true, reputationPpm: 1_000_000, layerSteps: 1e6 }, p), 0n);
  assert.equal(routingWeight({ stake: p.minStake - 1n, slashed: false, reputationPpm: 1_000_000, layerSteps: 1e6 }, p), 0n);
  assert.equal(conductScore({ deadlinesMet: 0, deadlinesMissed: 0, auditsPassed: 0, auditsFailed: 0, availabilityPpm: 1_000_000, throughputPpm: 1_000_000 }), 1_000_000);
  assert.equal(conductScore({ deadlinesMet: 1, deadlinesMissed: 1, auditsPassed: 0, auditsFailed: 1, availabilityPpm: 0, throughputPpm: 0 }), 175_000);
});

test('parameters validate and round-trip; amounts parse and print in ODSI', () => {
  assert.deepEqual(paramsFromJson(paramsJson(DEFAULT_PARAMS)), makeParams());
  assert.throws(() => makeParams({ feePpm: 1_000_001 }), /feePpm/);
  assert.throws(() => makeParams({ verdictQuorum: 0 }), /verdictQuorum/);
  assert.throws(() => makeParams({ auditRateMinPpm: 300_000 }), /auditRateMinPpm/);
  assert.equal(maxGainPerStep(p), 4n * UNIT);
  assert.equal(parseAmount('12.5'), 125n * UNIT / 10n);
  assert.equal(parseAmount('0.000000000000000001'), 1n);
  assert.throws(() => parseAmount('-1'));
  assert.throws(() => parseAmount('1e3'));
  assert.equal(formatAmount(1234n * UNIT + 5n * 10n ** 17n), '1234.5');
  assert.equal(formatAmount(0n), '0');
});
