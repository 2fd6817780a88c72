// What the ledger costs on the token path, side by side in one run: two identical swarms of
// `odsi node` processes (two halves of a model, accountability on in both), one gateway with a
// SQLite ledger (stake-aware routing, evidence drain, receipts credited and usage charged per
// request, an epoch settled every --epoch-ms while tokens flow; its nodes read stake from the
// same ledger for their peer limits) and one without. Greedy generations alternate between the
// two so load drift hits both alike. Reports decode ms/token (median and p95 of the per-step
// wall time) on vs off and their ratio, and the settlements made meanwhile. Both sides audit at
// the same rate (--audit-rate, default the rules' probation rate) so the difference is the ledger's;
// the audits each side actually ran are counted and reported (audit selection is random).
// --ledger evm runs the ledger side on a local anvil chain with the contracts deployed.
//
// Statistic: rounds alternate the order (on, off / off, on); each round gives one paired ratio
// of the two runs' median ms/token. Reported: the pooled p50/p95 of every step, their ratio,
// and a 95 % bootstrap confidence interval of the pooled p50 ratio (rounds resampled with their
// pairs, 2000 resamples, seeded), so a difference inside the noise is visible as such.
// --profile DIR writes V8 CPU profiles of every node process there (on-N / off-N by their
// ledger side; run the bench itself under `node --cpu-prof --cpu-prof-dir DIR` for the gateways).
//
//   node --import ./dist/src/util/polyfill.js dist/bench/control-plane.js [--ledger sqlite|evm] [--shape smollm2-135m] [--rounds 20] [--tokens 24] [--epoch-ms 2000] [--profile DIR]
//
// Without --shape it runs stories260K (per-token compute ~1 ms, so fixed costs show most).
// Writes bench/results/control-plane[-<shape>][-evm].json.

import '../src/util/polyfill.js';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Gateway } from '../src/gateway/gateway.js';
import { openModel } from '../src/model/load.js';
import { SHAPES, writeSyntheticGguf } from '../src/model/synth.js';
import { modelIdentity } from '../src/model/identity.js';
import { NodeProcess } from '../src/node/process.js';
import { openDemoLedger } from '../src/cli/demo-ledger.js';
import { DEFAULT_PARAMS, PPM } from '../src/ledger/rules.js';
import { seededUniform } from '../src/util/rng.js';

const here = dirname(fileURLToPath(import.meta.url));
const REPO = existsSync(resolve(here, '../package.json')) ? resolve(here, '..') : resolve(here, '../..');
const STORIES = resolve(REPO, '../shared/models/stories260K/stories260K.gguf');
const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
};
const ROUNDS = Number(arg('rounds', '20'));
const PROFILE = arg('profile', '');
const TOKENS = Number(arg('tokens', '24'));
const EPOCH_MS = Number(arg('epoch-ms', '2000'));
// both gateways audit at this rate: the ledger's rules put new (probation) identities at
// auditRateMaxPpm, so the 'on' side would otherwise audit more, which is the rules' cost, not the ledger's
// (a lower --audit-rate is raised to it: the ledger side's new identities are on probation,
// and the gateway's own rate is only a floor under the rules' rate)
const AUDIT_RATE = Math.max(Number(arg('audit-rate', '0')), DEFAULT_PARAMS.auditRateMaxPpm / PPM);
const SHAPE = arg('shape', '');
/** sqlite (a file in a temp dir) or evm (a local anvil chain with the contracts deployed) */
const LEDGER = arg('ledger', 'sqlite');
const OUT = resolve(arg('out', join(REPO, `bench/results/control-plane${SHAPE ? `-${SHAPE}` : ''}${LEDGER === 'sqlite' ? '' : `-${LEDGER}`}.json`)));

async function modelPath(): Promise<string> {
  if (!SHAPE) return STORIES;
  if (!SHAPES[SHAPE]) throw new Error(`unknown --shape ${SHAPE}; known: ${Object.keys(SHAPES).join(', ')}`);
  const p = join(REPO, 'bench/tmp', `${SHAPE}-f32.gguf`);
  if (!existsSync(p)) {
    mkdirSync(dirname(p), { recursive: true });
    await writeSyntheticGguf({ shape: SHAPE, dtype: 'f32', seed: 1, out: p });
  }
  return p;
}

const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * (s.length - 1) + 0.5))]! : 0;
};
const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** 95 % percentile-bootstrap interval of p50(on)/p50(off), resampling whole rounds (seeded). */
function bootstrapRatioCi(rounds: { on: number[]; off: number[] }[], resamples = 2000): [number, number] {
  const rand = seededUniform(12);
  const ratios: number[] = [];
  for (let b = 0; b < resamples; b++) {
    const on: number[] = [];
    const off: number[] = [];
    for (let i = 0; i < rounds.length; i++) {
      const r = rounds[Math.floor(rand() * rounds.length)]!;
      on.push(...r.on);
      off.push(...r.off);
    }
    ratios.push(pct(on, 0.5) / pct(off, 0.5));
  }
  return [pct(ratios, 0.025), pct(ratios, 0.975)];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-cp-'));
  const MODEL = await modelPath();
  const src = openModel(MODEL);
  const L = src.config.nLayers;
  const modelId = modelIdentity(src).modelId;
  src.close();
  const RANGES: [number, number][] = [
    [0, L >> 1],
    [L >> 1, L],
  ];
  const dl = await openDemoLedger(LEDGER, RANGES.length);
  const nodes: NodeProcess[] = [];
  const gateways: Gateway[] = [];
  const load0 = loadavg();
  try {
    const start = (tag: string, withLedger: boolean) =>
      Promise.all(
        RANGES.map((range, i) =>
          NodeProcess.start({
            model: MODEL,
            range,
            identityFile: withLedger ? dl.nodeKeyFile(i) : join(dir, `${tag}${i}.key`),
            modelId,
            announceIntervalMs: 600_000,
            readyTimeoutMs: 300_000, // a bigger model loads slowly on a loaded VM
            extraArgs: withLedger ? ['--ledger', dl.spec] : [],
            nodeArgs: PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${join(resolve(PROFILE), `${tag}-${i}`)}`] : undefined,
          }),
        ),
      );
    const onNodes = await start('on', true);
    const offNodes = await start('off', false);
    nodes.push(...onNodes, ...offNodes);
    const failover = SHAPE ? { graceMs: 10_000, minStepMs: 30_000 } : undefined;
    const on = await Gateway.start({
      modelPath: MODEL,
      peers: onNodes.map((n) => n.candidate(1)),
      identity: dl.gateway,
      ledger: { ledger: dl.ledger, account: dl.client, epochMs: EPOCH_MS },
      accountability: { auditRate: AUDIT_RATE },
      failover,
    });
    gateways.push(on);
    const off = await Gateway.start({ modelPath: MODEL, peers: offNodes.map((n) => n.candidate(1)), accountability: { auditRate: AUDIT_RATE }, failover });
    gateways.push(off);
    const prompt = on.tokenizer.encode('Once upon a time, there was a little', { addBos: true });
    const run = async (gw: Gateway, id: string) => {
      const stepMs: number[] = [];
      const r = await gw.run({
        promptIds: prompt,
        maxTokens: TOKENS,
        sampling: { temperature: 0 },
        sessionId: id,
        onToken: (t) => {
          if (t.step > 0) stepMs.push(t.stepMs);
        },
      });
      gw.chargeUsage(prompt.length + r.tokens.length); // what the API would report as usage
      return { stepMs, tokens: r.tokens };
    };
    // a run that fails (on a loaded machine a node can miss the failover deadline) is counted and
    // its round dropped, on both sides, rather than ending the benchmark
    const failures: string[] = [];
    const tryRun = async (gw: Gateway, id: string) => {
      try {
        return await run(gw, id);
      } catch (e) {
        failures.push(`${id}: ${(e as Error).message.slice(0, 200)}`);
        process.stderr.write(`run ${id} failed: ${(e as Error).message}\n`);
        return undefined;
      }
    };
    if (!(await tryRun(on, 'warm-on'))) await run(on, 'warm-on-2');
    if (!(await tryRun(off, 'warm-off'))) await run(off, 'warm-off-2');
    const msOn: number[] = [];
    const msOff: number[] = [];
    const rounds: { on: number[]; off: number[] }[] = [];
    const audited0 = { on: on.accountability?.stats.audited ?? 0, off: off.accountability?.stats.audited ?? 0 };
    let same = true;
    for (let r = 0; r < ROUNDS; r++) {
      const round = { on: [] as number[], off: [] as number[] };
      let failed = false;
      for (const which of r % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
        const res = await tryRun(which === 'on' ? on : off, `${which}-${r}`);
        if (!res) failed = true;
        else {
          round[which].push(...res.stepMs);
          if (res.tokens.length !== TOKENS) same = false;
        }
      }
      if (failed) continue;
      msOn.push(...round.on);
      msOff.push(...round.off);
      rounds.push(round);
      process.stderr.write(`round ${r + 1}/${ROUNDS}: on p50 ${r3(pct(msOn, 0.5))} ms, off p50 ${r3(pct(msOff, 0.5))} ms\n`);
    }
    const audited = {
      on: (on.accountability?.stats.audited ?? 0) - audited0.on,
      off: (off.accountability?.stats.audited ?? 0) - audited0.off,
    };
    const skipped = { on: on.accountability?.stats.auditsSkipped ?? 0, off: off.accountability?.stats.auditsSkipped ?? 0 };
    await on.settle();
    const st = await dl.ledger.status();
    const ci = bootstrapRatioCi(rounds);
    const paired = rounds.map((x) => pct(x.on, 0.5) / pct(x.off, 0.5));
    const result = {
      benchmark: 'control-plane',
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavgStart: load0, loadavgEnd: loadavg() },
      model: SHAPE ? `synthetic ${SHAPE} f32` : 'stories260K',
      layers: L,
      ranges: RANGES,
      rounds: ROUNDS,
      /** runs that failed; their rounds are left out of every statistic */
      failedRuns: failures,
      tokensPerRun: TOKENS,
      epochMs: EPOCH_MS,
      auditRateBothSides: AUDIT_RATE,
      ledger: LEDGER,
      decodeMsPerToken: {
        on: { p50: r3(pct(msOn, 0.5)), p95: r3(pct(msOn, 0.95)), n: msOn.length },
        off: { p50: r3(pct(msOff, 0.5)), p95: r3(pct(msOff, 0.95)), n: msOff.length },
      },
      ratioP50: r3(pct(msOn, 0.5) / pct(msOff, 0.5)),
      differencePct: r3((pct(msOn, 0.5) / pct(msOff, 0.5) - 1) * 100),
      /** 95 % bootstrap interval of the pooled p50 ratio (rounds resampled in pairs) */
      ratioP50Ci95: [r3(ci[0]), r3(ci[1])],
      /** per round: median ms/token on ÷ off (spread of the paired comparison) */
      pairedRoundRatios: { p50: r3(pct(paired, 0.5)), min: r3(Math.min(...paired)), max: r3(Math.max(...paired)) },
      /** audits run during the measured rounds (random selection at the same rate on both sides) */
      audits: { on: audited.on, off: audited.off, skipped },
      settledEpochs: st.epoch,
      ledgerEvents: st.events,
      charged: st.totals.charged,
      allRunsComplete: same,
    };
    mkdirSync(dirname(OUT), { recursive: true });
    writeFileSync(OUT, JSON.stringify(result, null, 2) + '\n');
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } finally {
    for (const g of gateways) await g.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    await dl.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
