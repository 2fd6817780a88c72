// One upstream receipt check as a node makes it (CryptoPool.verify of an ExecutionReceipt): on
// the crypto worker thread vs on the calling thread, with the secp256k1 backend this process
// chose (ODSI_ECDSA; the native addon where it loads). What ODSI_CRYPTO_WORKER=auto decides on.
//
//   node dist/bench/receipt-check.js [--rounds 9] [--checks 500] [--out FILE]
//
// Each round runs one block per side in alternating order: `checks` receipts verified one after
// another (each awaited before the next, as a node checks one step's receipt at a time), timed by
// wall clock and by process CPU (process.cpuUsage counts every thread, so the worker's share is
// in). Results: medians over rounds of µs per check, and the per-round ratio worker / calling
// thread. A batch (`checks` at once: what the worker's per-tick message coalesces) is timed too.

import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CryptoPool } from '../src/accountability/records/crypto-pool.js';
import { ZERO_HASH, toBytes32, type ExecutionReceipt } from '../src/accountability/records/eip712.js';
import { checkSigned, signReceipt, type SignedReceipt } from '../src/accountability/records/receipts.js';
import { generateIdentity } from '../src/identity/identity.js';
import { ecdsa } from '../src/identity/ecdsa.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { stats } from './lib/stats.js';
import { writeResult, table } from './lib/results.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '9' },
    checks: { type: 'string', default: '500' },
    out: { type: 'string' },
  },
});
const ROUNDS = Number(args.rounds);
const CHECKS = Number(args.checks);
const OUT = args.out ?? join(ROOT, 'bench/results/receipt-check.json');

const domain = { chainId: 31337 };
const id = generateIdentity();

function receipt(step: number): SignedReceipt {
  const r: Omit<ExecutionReceipt, 'signer'> = {
    requestId: toBytes32('request'),
    sessionId: toBytes32('session'),
    step,
    pos: step,
    nTokens: 1,
    layerStart: 0,
    layerEnd: 10,
    modelId: ZERO_HASH,
    profile: 'llama-q4',
    inputHash: toBytes32(`input-${step}`),
    budgetUs: 250_000,
    outputHash: toBytes32(`output-${step}`),
    recvUs: 1_000,
    computeUs: 5_000,
    sendUs: 10,
    upstreamReceiptHash: ZERO_HASH,
    prevReceiptHash: ZERO_HASH,
    commitmentHash: ZERO_HASH,
  };
  return signReceipt(id, r, domain);
}

type Side = 'worker' | 'calling thread';
const SIDES: Side[] = ['worker', 'calling thread'];

async function main(): Promise<void> {
  const machine = describeMachine();
  console.log(`${machineLine(machine)}; secp256k1 backend ${ecdsa().name}`);
  const signed = Array.from({ length: CHECKS }, (_, i) => receipt(i));
  const pools: Record<Side, CryptoPool> = { worker: new CryptoPool({ worker: true }), 'calling thread': new CryptoPool({ worker: false }) };
  const want = checkSigned('ExecutionReceipt', signed[0], domain);
  for (const s of SIDES) {
    const got = await pools[s].verify('ExecutionReceipt', signed[0], domain);
    if (JSON.stringify(got) !== JSON.stringify(want) || !got.ok) throw new Error(`${s}: the check differs from checkSigned`);
    for (const x of signed) await pools[s].verify('ExecutionReceipt', x, domain); // warm-up
  }
  const wall: Record<Side, number[]> = { worker: [], 'calling thread': [] };
  const cpu: Record<Side, number[]> = { worker: [], 'calling thread': [] };
  const batchWall: Record<Side, number[]> = { worker: [], 'calling thread': [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const s of r % 2 ? [...SIDES].reverse() : SIDES) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (const x of signed) await pools[s].verify('ExecutionReceipt', x, domain);
      const t = performance.now() - t0;
      const c = process.cpuUsage(c0);
      wall[s].push((t * 1000) / CHECKS);
      cpu[s].push((c.user + c.system) / CHECKS);
      const t1 = performance.now();
      await Promise.all(signed.map((x) => pools[s].verify('ExecutionReceipt', x, domain)));
      batchWall[s].push(((performance.now() - t1) * 1000) / CHECKS);
    }
  }
  const ratio = (xs: Record<Side, number[]>) => stats(xs.worker.map((w, i) => w / xs['calling thread'][i]!));
  const res = {
    wallUsPerCheck: { worker: stats(wall.worker), callingThread: stats(wall['calling thread']), ratio: ratio(wall) },
    cpuUsPerCheck: { worker: stats(cpu.worker), callingThread: stats(cpu['calling thread']), ratio: ratio(cpu) },
    batchWallUsPerCheck: { worker: stats(batchWall.worker), callingThread: stats(batchWall['calling thread']), ratio: ratio(batchWall) },
  };
  const f = (x: { median: number; min: number }) => `${x.median.toFixed(1)} (${x.min.toFixed(1)})`;
  console.log(
    table(
      ['µs per check, median (min)', 'worker', 'calling thread', 'worker ÷ calling'],
      [
        [
          'one at a time, wall',
          f(res.wallUsPerCheck.worker),
          f(res.wallUsPerCheck.callingThread),
          res.wallUsPerCheck.ratio.median.toFixed(2),
        ],
        [
          'one at a time, CPU (all threads)',
          f(res.cpuUsPerCheck.worker),
          f(res.cpuUsPerCheck.callingThread),
          res.cpuUsPerCheck.ratio.median.toFixed(2),
        ],
        [
          `${CHECKS} at once, wall`,
          f(res.batchWallUsPerCheck.worker),
          f(res.batchWallUsPerCheck.callingThread),
          res.batchWallUsPerCheck.ratio.median.toFixed(2),
        ],
      ],
    ),
  );
  writeResult(OUT, {
    what: 'one upstream receipt check (CryptoPool.verify of an ExecutionReceipt) on the crypto worker vs on the calling thread, one at a time and all at once, blocks alternating per round',
    machine,
    ecdsa: ecdsa().name,
    options: { rounds: ROUNDS, checks: CHECKS },
    ...res,
    loadAvgAtEnd: describeMachine().loadAvg,
  });
  console.log(`wrote ${OUT}`);
  process.exit(0); // the worker thread is unref'd, but be explicit
}

await main();
