// The embedded ledger's costs on this machine: per-write latency of a durable event
// (synchronous=FULL: fsync before the call returns) and of a NORMAL one, interleaved so load
// noise hits both; one epoch settlement of a large batch; replay-and-verify on open (checkpoint)
// and a full verify() from genesis (every signature). The control plane needs a handful of
// writes per epoch per gateway, so the question is only whether any of it could matter.
//   node --import ./dist/src/util/polyfill.js dist/bench/ledger-sqlite.js [--writes 300] [--credits 1000] [--out FILE]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { identityFromSecret } from '../src/identity/identity.js';
import { SqliteLedger } from '../src/ledger/sqlite/sqlite-ledger.js';
import { UNIT } from '../src/ledger/rules.js';
import type { Address, LedgerResult } from '../src/ledger/ledger.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { stats } from './lib/stats.js';
import { writeResult } from './lib/results.js';

const { values: args } = parseArgs({
  options: {
    writes: { type: 'string', default: '300' },
    credits: { type: 'string', default: '1000' },
    out: { type: 'string', default: 'bench/results/ledger-sqlite.json' },
  },
});
const WRITES = Number(args.writes);
const CREDITS = Number(args.credits);
const OUT = args.out!;
const key = (n: number) => identityFromSecret(new Uint8Array(createHash('sha256').update(`bench-ledger-${n}`).digest()));
const ok = (r: LedgerResult): void => {
  if (!r.ok) throw new Error(`${r.code}: ${r.reason}`);
};

const dir = mkdtempSync(join(tmpdir(), 'odsi-bench-ledger-'));
try {
  const path = join(dir, 'ledger.db');
  const operator = key(0);
  const gw = key(1);
  const L = SqliteLedger.open(path, { operator });
  ok(await L.register(gw, 'gateway'));
  ok(await L.authorize(operator, gw.address));
  const account = '0x00000000000000000000000000000000000000aa' as Address;
  ok(await L.deposit(account, 1_000_000n * UNIT));
  const full: number[] = [];
  const normal: number[] = [];
  for (let i = 0; i < WRITES; i++) {
    let t = performance.now();
    ok(await L.deposit(account, 1n)); // durable: FULL
    full.push(performance.now() - t);
    t = performance.now();
    ok(await L.publishReputation(gw, i + 1, [])); // NORMAL
    normal.push(performance.now() - t);
  }
  const nodes = Array.from({ length: CREDITS }, (_, i) => key(100 + i));
  for (const n of nodes) ok(await L.register(n));
  let t = performance.now();
  const settle = await L.settleEpoch(gw, {
    epoch: 1,
    charges: [{ account, amount: 123_456_789_000n }],
    credits: nodes.map((n, i) => ({ identity: n.address, units: BigInt(1000 + i), layerSteps: 1 })),
  });
  ok(settle);
  const settleMs = performance.now() - t;
  const events = (await L.status()).events;
  await L.close();
  t = performance.now();
  const L2 = SqliteLedger.open(path, { operator });
  const openMs = performance.now() - t;
  const v = await L2.verify();
  await L2.close();
  const m = describeMachine();
  const sf = stats(full);
  const sn = stats(normal);
  const result = {
    machine: m,
    writes: WRITES,
    durableWriteMs: { median: sf.median, min: sf.min },
    normalWriteMs: { median: sn.median, min: sn.min },
    durableOverNormal: sf.median / sn.median,
    settleBatch: { credits: CREDITS, ms: settleMs },
    events,
    openReplayMs: openMs,
    fullVerify: { ms: v.ms, eventsPerSec: (v.events / v.ms) * 1000, ok: v.ok },
  };
  console.log(machineLine(m));
  console.log(
    `durable (FULL) write: median ${sf.median.toFixed(2)} ms; NORMAL write: median ${sn.median.toFixed(2)} ms; ratio ${result.durableOverNormal.toFixed(2)}`,
  );
  console.log(
    `settleEpoch with ${CREDITS} credits: ${settleMs.toFixed(1)} ms; open (replay ${events} events, checkpoint) ${openMs.toFixed(0)} ms; full verify ${v.ms} ms (${result.fullVerify.eventsPerSec.toFixed(0)} events/s)`,
  );
  writeResult(OUT, result);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
