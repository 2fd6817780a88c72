// Incentive test: at the default rules, a node that skips the work of a fraction f of its
// layer-steps ends up with less than an honest node, for every f > 0. Simulated over many
// epochs with the real rules code (payment split, audit rate under probation and reputation,
// reputation updates, computation slash), two ways:
//   - exactly in expectation: per epoch the cheater survives with probability (1 − p·f)^n and
//     a caught cheater loses the computation slash, the epoch's rewards and all later ones;
//   - by seeded Monte Carlo for a few f (each cheated step audited with probability p).
// A control with audits switched off shows the simulation is not vacuous: there, cheating pays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  auditRate,
  chargeFor,
  computationDeterrence,
  conductScore,
  makeParams,
  slashAmount,
  splitPayments,
  stepUnits,
  UNIT,
  updateReputation,
  type LedgerParams,
} from '../../src/ledger/rules.js';
import { seededUniform } from '../../src/util/rng.js';

const NODES = 4; // a route of 4 hops, 2 layers each; every hop does every step
const STEPS = 1000; // layer-steps per node per epoch (one token each)
const EPOCHS = 200;
const COST_SHARE = 0.5; // an honest node's compute cost per step, as a share of its reward per step
const F_GRID = [1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1];

const odsi = (x: bigint): number => Number(x) / Number(UNIT);

/** One node's reward for an epoch in which all NODES did STEPS equal steps (real payment split). */
function epochReward(p: LedgerParams): number {
  const units = stepUnits({ layers: 2, deadlineMet: true, budgetUs: 100_000, referenceBudgetUs: 100_000, bottleneck: false }) * BigInt(STEPS);
  const split = splitPayments(
    chargeFor(STEPS, p),
    Array.from({ length: NODES }, () => ({ units, forfeited: false })),
    p,
  );
  assert.equal(split.rewards + split.fees, split.charged);
  return odsi(split.paid[0]!);
}

interface Path {
  /** audit rate per epoch, as the rules give it from the (honest-looking) record so far */
  rates: number[];
}

/** The audit rate each epoch for a node whose record looks honest (a surviving cheater's looks the same). */
function auditPath(p: LedgerParams): Path {
  let rep = 0;
  let steps = 0;
  const rates: number[] = [];
  for (let e = 0; e < EPOCHS; e++) {
    const rate = auditRate(rep, steps, p);
    rates.push(rate);
    const passed = Math.round(STEPS * rate);
    rep = updateReputation(rep, conductScore({ deadlinesMet: STEPS, deadlinesMissed: 0, auditsPassed: passed, auditsFailed: 0, availabilityPpm: 1e6, throughputPpm: 1e6 }), p);
    steps += STEPS;
  }
  return { rates };
}

/** Expected final wealth (stake + net earnings, ODSI) of a node cheating on a fraction f of its steps. */
function expectedWealth(f: number, p: LedgerParams): number {
  const R = epochReward(p);
  const r = R / STEPS;
  const c = COST_SHARE * r;
  const S = odsi(p.minStake);
  const slash = odsi(slashAmount('computation', p.minStake, p));
  const { rates } = auditPath(p);
  let alive = 1;
  let wealth = S;
  for (const rate of rates) {
    const survive = Math.pow(1 - rate * f, STEPS); // E[(1 − p)^k], k ~ Binomial(STEPS, f)
    // costs of the honest steps are paid either way; rewards only if not caught; the slash if caught
    wealth += alive * (R * survive - c * STEPS * (1 - f) - slash * (1 - survive));
    alive *= survive;
  }
  return wealth;
}

/** Seeded Monte Carlo of the same model: mean final wealth over `trials`. */
function simulatedWealth(f: number, p: LedgerParams, trials: number, seed: number): number {
  const rnd = seededUniform(seed);
  const R = epochReward(p);
  const c = (COST_SHARE * R) / STEPS;
  const S = odsi(p.minStake);
  const slash = odsi(slashAmount('computation', p.minStake, p));
  const { rates } = auditPath(p);
  let total = 0;
  for (let t = 0; t < trials; t++) {
    let wealth = S;
    for (const rate of rates) {
      let cheated = 0;
      let caught = false;
      for (let i = 0; i < STEPS; i++)
        if (rnd() < f) {
          cheated++;
          if (rnd() < rate) caught = true;
        }
      wealth -= c * (STEPS - cheated);
      if (caught) {
        wealth -= slash; // and the epoch's rewards are forfeited, and it is excluded from now on
        break;
      }
      wealth += R;
    }
    total += wealth;
  }
  return total / trials;
}

test('at the default rules a node cheating on any fraction f > 0 of its steps ends with less than an honest one', () => {
  const p = makeParams();
  const honest = expectedWealth(0, p);
  assert.ok(honest > odsi(p.minStake), 'an honest node earns');
  for (const f of F_GRID) {
    const cheat = expectedWealth(f, p);
    assert.ok(cheat < honest, `f = ${f}: cheater ${cheat} ODSI ≥ honest ${honest} ODSI`);
  }
  // the per-step inequality p·s_c·S ≥ g holds at the lowest audit rate, with a wide margin
  const gain = UNIT / 1000n; // far above any per-step reward at the default price
  assert.equal(computationDeterrence(p, { gainPerStep: gain }).deters, true);
  assert.equal(computationDeterrence(p, { gainPerStep: 5n * UNIT }).deters, false);
});

test('seeded Monte Carlo agrees: cheating loses for f = 0.01, 0.1 and 1', () => {
  const p = makeParams();
  const honest = simulatedWealth(0, p, 1, 1);
  for (const f of [0.01, 0.1, 1]) {
    const cheat = simulatedWealth(f, p, 40, 7);
    assert.ok(cheat < honest, `f = ${f}: cheater ${cheat} ≥ honest ${honest}`);
  }
});

test('control: with audits switched off, cheating pays — the simulation can tell', () => {
  const p = makeParams({ auditRateMaxPpm: 0, auditRateMinPpm: 0 });
  const honest = expectedWealth(0, p);
  for (const f of [0.01, 0.5, 1]) assert.ok(expectedWealth(f, p) > honest, `f = ${f}`);
});
