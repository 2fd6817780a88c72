// Gas per OdsiRegistry operation on a local anvil chain (gas is deterministic: the same on
// any EVM within a few gas), plus how settlement and reputation scale with batch size, and the
// wall time of one write through EvmLedger (simulate + send + mined receipt; indicative only,
// the machine's load is recorded). Writes bench/results/ledger-gas.json (or --out FILE).
//   node dist/bench/ledger-gas.js [--out FILE]
import { parseArgs } from 'node:util';
import { loadavg, cpus } from 'node:os';
import { startLocalEvmLedger } from '../src/ledger/evm/local-chain.js';
import type { EvmLedger } from '../src/ledger/evm/evm-ledger.js';
import { UNIT } from '../src/ledger/rules.js';
import type { LedgerResult } from '../src/ledger/ledger.js';
import { identityFromSecret, type Identity } from '../src/identity/identity.js';
import type { Hex } from '../src/accountability/records/eip712.js';
import { receiptHash, signVerdict, type SignedReceipt } from '../src/accountability/records/receipts.js';
import { receiptOf } from '../test/ledger/evidence-fixtures.js';
import { detectEquivocation } from '../src/accountability/checks/equivocation.js';
import { createHash } from 'node:crypto';
import { writeResult } from './lib/results.js';

const OUT = parseArgs({ options: { out: { type: 'string', default: 'bench/results/ledger-gas.json' } } }).values.out!;
const key = (n: number): Identity => identityFromSecret(new Uint8Array(createHash('sha256').update(`odsi-bench-${n}`).digest()));
const h = (s: string): Hex => `0x${createHash('sha256').update(s).digest('hex')}`;
const DOMAIN = { chainId: 31337 };

/** a receipt as the ledger tests build them (test/ledger/evidence-fixtures.ts), under this bench's domain */
const receipt = (id: Identity, o: Parameters<typeof receiptOf>[2]): SignedReceipt => receiptOf(id, DOMAIN, o);

const gasRows: { operation: string; gas: number; ms: number }[] = [];
async function measure<T extends object>(
  L: EvmLedger,
  operation: string,
  fn: string,
  write: () => Promise<LedgerResult<T>>,
): Promise<LedgerResult<T>> {
  const before = L.gasUsed.get(fn)?.gas ?? 0n;
  const t0 = performance.now();
  const r = await write();
  const ms = performance.now() - t0;
  if (!r.ok) throw new Error(`${operation}: ${r.code}: ${r.reason}`);
  gasRows.push({ operation, gas: Number((L.gasUsed.get(fn)?.gas ?? 0n) - before), ms: Math.round(ms * 10) / 10 });
  return r;
}

async function main(): Promise<void> {
  const op = key(0);
  const local = await startLocalEvmLedger({ operator: op });
  try {
    const L = local.ledger;
    const d = local.deployment;
    const nodes = Array.from({ length: 24 }, (_, i) => key(i + 1));
    const gw = key(100);
    const [a, b, c, v] = nodes as [Identity, Identity, Identity, Identity];
    await measure(L, 'register', 'register', () => L.register(a));
    for (const n of nodes.slice(1)) await L.register(n);
    await L.register(gw, 'gateway');
    await measure(L, 'authorize (operator)', 'authorize', () => L.authorize(op, gw.address));
    await measure(L, 'mint to a wallet (operator)', 'mint', () => L.mint(op, a.address, 5000n * UNIT));
    for (const n of nodes.slice(1)) await L.mint(op, n.address, 5000n * UNIT);
    await measure(L, 'stake (first)', 'stake', () => L.stake(a, 2000n * UNIT));
    for (const n of nodes.slice(1)) await L.stake(n, 2000n * UNIT);
    await measure(L, 'stake (top-up)', 'stake', () => L.stake(a, 100n * UNIT));
    await measure(L, 'requestUnstake', 'requestUnstake', () => L.requestUnstake(a, 100n * UNIT));
    const client = '0x00000000000000000000000000000000000c1e47' as const;
    await measure(L, 'deposit from the operator faucet (mint to account)', 'mint', () => L.deposit(client, 100n * UNIT));
    await measure(L, 'deposit from a wallet', 'deposit', () => L.deposit(client, 10n * UNIT, b));
    // evidence
    const ra = receipt(a, { step: 1, start: 0, end: 2, input: h('in'), output: h('out-a') });
    const rb = receipt(a, { step: 1, start: 0, end: 2, input: h('in'), output: h('out-b') });
    await measure(L, 'slashEquivocation (2 EIP-712 digests, 2 ecrecover)', 'slashEquivocation', () =>
      L.submitEvidence(gw, detectEquivocation(ra, rb, DOMAIN)!),
    );
    const up = receipt(b, { step: 2, start: 0, end: 2, input: h('in2'), output: h('out2') });
    const down = receipt(c, { step: 2, start: 2, end: 4, input: h('not out2'), output: h('x'), upstream: receiptHash(up.record, DOMAIN) });
    await measure(L, 'slashCustody (3 digests, 2 ecrecover)', 'slashCustody', () =>
      L.submitEvidence(gw, { kind: 'custody', code: 'input_mismatch', reason: 'bench', receipts: [up, down], detectedAt: 0 }),
    );
    const verdict = (s: SignedReceipt, by: Identity, pass: boolean) =>
      signVerdict(
        by,
        {
          receiptHash: receiptHash(s.record, DOMAIN),
          auditOutputHash: h('ref'),
          profilePair: 'reference/f32|reference/f32',
          distancePpb: 1e9,
          tolerancePpb: 1000,
          pass,
        },
        DOMAIN,
      );
    const w1 = receipt(v, { step: 3, start: 0, end: 2, input: h('in3'), output: h('out3') });
    await measure(L, 'accuse with a guilty quorum of 1 verdict (slash)', 'accuse', () =>
      L.submitEvidence(gw, { kind: 'audit', receipt: w1, verdicts: [verdict(w1, nodes[5]!, false)], detectedAt: 0 }),
    );
    await L.mint(op, gw.address, 100n * UNIT);
    const w2 = receipt(nodes[6]!, { step: 4, start: 0, end: 2, input: h('in4'), output: h('out4') });
    const opened = await measure(L, 'accuse without verdicts (dispute opened, bond locked)', 'accuse', () =>
      L.submitEvidence(gw, { kind: 'audit', receipt: w2, verdicts: [], detectedAt: 0 }),
    );
    if (!opened.ok || opened.outcome !== 'dispute') throw new Error('expected a dispute');
    await measure(L, 'addVerdicts, 1 verdict deciding the dispute (slash)', 'addVerdicts', () =>
      L.addVerdicts(gw, opened.disputeId, [verdict(w2, nodes[7]!, false)]),
    );
    // settlement and reputation scaling
    const credits = (k: number) => nodes.slice(8, 8 + k).map((n, i) => ({ identity: n.address, units: BigInt(1000 + i), layerSteps: 1 }));
    let epoch = 0;
    for (const k of [1, 16]) {
      await measure(L, `settleEpoch, 1 charge, ${k} credit(s)`, 'settleEpoch', () =>
        L.settleEpoch(gw, { epoch: ++epoch, charges: [{ account: client, amount: 10n ** 15n }], credits: credits(k) }),
      );
    }
    const report = (n: Identity) => ({
      identity: n.address,
      deadlinesMet: 9,
      deadlinesMissed: 1,
      auditsPassed: 1,
      auditsFailed: 0,
      availabilityPpm: 990_000,
      throughputPpm: 800_000,
    });
    let rep = 0;
    for (const k of [1, 16]) {
      await measure(L, `publishReputation, ${k} report(s)`, 'publishReputation', () =>
        L.publishReputation(gw, ++rep, nodes.slice(8, 8 + k).map(report)),
      );
    }
    // withdraw after the unbonding period
    const { createPublicClient, http } = await import('viem');
    const rpc = createPublicClient({ transport: http(local.anvil.rpcUrl) });
    await rpc.request({ method: 'evm_increaseTime' as never, params: [L.params.unbondingSec + 1] as never });
    await rpc.request({ method: 'evm_mine' as never, params: [] as never });
    await measure(L, 'withdraw (one matured entry)', 'withdraw', () => L.withdraw(a));
    const perCredit =
      (gasRows.find((r) => r.operation.endsWith('16 credit(s)'))!.gas - gasRows.find((r) => r.operation.endsWith(', 1 credit(s)'))!.gas) /
      15;
    const perReport =
      (gasRows.find((r) => r.operation.endsWith('16 report(s)'))!.gas - gasRows.find((r) => r.operation.endsWith(' 1 report(s)'))!.gas) /
      15;
    const ms = gasRows.map((r) => r.ms).sort((x, y) => x - y);
    const out = {
      what: 'gas per OdsiRegistry operation on anvil 1.7.1 (solc 0.8.37, optimizer 200 runs, EVM cancun); ms = one EvmLedger write (simulate + send + receipt)',
      machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg: loadavg(), node: process.version },
      deploy: { token: Number(d.gas.token), registry: Number(d.gas.registry), setMinter: Number(d.gas.setMinter) },
      operations: gasRows,
      marginal: { settlePerCredit: Math.round(perCredit), reputationPerReport: Math.round(perReport) },
      writeMs: { p50: ms[Math.floor(ms.length / 2)], max: ms[ms.length - 1] },
    };
    writeResult(OUT, out);
    console.log(JSON.stringify(out, null, 2));
    const verify = await L.verify();
    if (!verify.ok) throw new Error(`verify: ${verify.problems.join('; ')}`);
  } finally {
    await local.close();
  }
}

await main();
