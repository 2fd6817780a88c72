// Recovery time after a node dies mid-generation, as a function of the positions already
// processed (prompt + generated tokens), on a synthetic SmolLM2-135M-shaped model.
//
// Setup: three `odsi node` processes on 127.0.0.1 — A [0,15), B [15,30), spare C [15,30) —
// and the production Gateway in this process over exactly those nodes (a fixed peer list whose
// costs prefer A → B). For each context length T: one greedy request with a T−2 token prompt:
// the prefill, 2 decoded tokens (baseline step time), then B is SIGKILLed (and has exited)
// before the next step, which is timed: detection + diagnosis + opening A → C + replaying T
// positions + the step itself.
// kv-transfer: for 'transfer', B gets SIGTERM instead: it hands its KV cache to C and answers
// the next step with a 'draining' notice; the route swaps B for C without replay. Timed from
// 200 ms after the SIGTERM (time for the signal to land; the hand-over runs in it and any rest
// of it is inside the measured step, which queues behind it on B).
//
// Run: npx tsc -p tsconfig.json && node --import ./dist/src/util/polyfill.js dist/bench/recovery.js
// Writes bench/results/recovery.json.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Gateway } from '../src/gateway/gateway.js';
import { openModel } from '../src/model/load.js';
import { modelIdentity } from '../src/model/identity.js';
import { writeSyntheticGguf } from '../src/model/synth.js';
import type { RerouteEvent } from '../src/route/events.js';
import { NodeProcess } from '../src/node/process.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { table, writeResult } from './lib/results.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');

const { values: args } = parseArgs({
  options: {
    lengths: { type: 'string', default: '16,128,512' },
    methods: { type: 'string', default: 'replay,transfer' }, // kv-transfer
    engine: { type: 'string', default: 'ort' }, // kv-transfer: nodes' engine (ort: quick prefill)
    model: { type: 'string' },
    out: { type: 'string', default: join(ROOT, 'bench/results/recovery.json') },
  },
});

async function main(): Promise<void> {
  const lengths = args.lengths!.split(',').map(Number);
  const modelPath = args.model ?? join(ROOT, 'bench/tmp/recovery-smollm2-135m-f32.gguf');
  if (!existsSync(modelPath)) {
    mkdirSync(join(ROOT, 'bench/tmp'), { recursive: true });
    process.stderr.write(`writing ${modelPath} …\n`);
    await writeSyntheticGguf({ shape: 'smollm2-135m', dtype: 'f32', seed: 7, out: modelPath, progress: false });
  }
  const src = openModel(modelPath);
  const cfg = src.config;
  const L = cfg.nLayers;
  const mid = Math.floor(L / 2);
  const modelId = modelIdentity(src).modelId;
  src.close();
  const dir = mkdtempSync(join(tmpdir(), 'odsi-recovery-'));
  const start = (range: [number, number], i: number) =>
    NodeProcess.start({
      model: modelPath,
      range,
      identityFile: join(dir, `n${i}.key`),
      modelId,
      announceIntervalMs: 600_000,
      readyTimeoutMs: 180_000,
      engine: args.engine as 'reference' | 'ort', // kv-transfer
      benchTokens: 4 /* warm: replay time, not first-touch loading */,
    });
  process.stderr.write(`starting nodes [0,${mid}) [${mid},${L}) [${mid},${L}) …\n`);
  const [a, b, c] = await Promise.all([start([0, mid], 0), start([mid, L], 1), start([mid, L], 2)]);
  const nodes = [a!, b!, c!];
  const cand = (n: NodeProcess, ms: number) => n.candidate(ms);
  const gw = await Gateway.start({ modelPath, peers: [cand(a!, 10), cand(b!, 10), cand(c!, 20)], failover: { graceMs: 5000 } });
  await Promise.all(nodes.map((n) => gw.host.ping(n.peerId, { addrs: n.info.addrs })));
  const bans = gw.bans;

  const failures: { tokens: number; error: string }[] = [];
  const rows: {
    tokens: number;
    baselineStepMs: number;
    recoveryToNextTokenMs: number;
    diagnoseMs: number;
    openMs: number;
    replayMs: number;
    replayedTokens: number;
    method: string;
  }[] = [];
  try {
    for (const T of lengths)
      for (const method of args.methods!.split(',') as ('replay' | 'transfer')[]) {
        try {
          await measure(T, method);
        } catch (e) {
          process.stderr.write(`T=${T}: failed: ${(e as Error).message}\n`);
          failures.push({ tokens: T, error: (e as Error).message });
          if (!b!.alive) await b!.restart().catch(() => undefined);
          bans.clear(b!.peerId);
          bans.clear(c!.peerId);
        }
      }
    async function measure(T: number, method: 'replay' | 'transfer'): Promise<void> {
      const prompt = Array.from({ length: T - 2 }, (_, i) => 1 + ((i * 7919) % (cfg.vocabSize - 1)));
      // token k arrives at at[k]: 0 after the prefill, 1 and 2 are the baseline decode steps;
      // B fails after token 2 (the next step waits for it), and token 3 is the recovery
      const at: number[] = [];
      let failedAt = 0;
      let leaving: Promise<void> | undefined;
      const res = await gw.run({
        promptIds: prompt,
        maxTokens: 4,
        sampling: { temperature: 0 },
        sessionId: `bench-${T}-${method}`,
        onToken: async (t) => {
          at.push(performance.now());
          if (t.step === 0 && t.route[1]?.peerId !== b!.peerId) throw new Error('the planner did not pick A → B');
          if (t.step !== 2) return;
          if (method === 'transfer') {
            leaving = b!.kill('SIGTERM'); // kv-transfer
            await new Promise((r) => setTimeout(r, 200));
          } else await b!.kill('SIGKILL');
          failedAt = performance.now();
        },
      });
      await leaving;
      for (const e of res.events) process.stderr.write(`  ${JSON.stringify(e)}\n`);
      if (at.length !== 4) throw new Error(`the request ended after ${at.length} tokens (${res.finishReason})`);
      const base = [at[1]! - at[0]!, at[2]! - at[1]!];
      const recoveryMs = at[3]! - failedAt;
      const re = res.events.find((e): e is RerouteEvent => e.type === 'reroute');
      if (!re) throw new Error(`no re-route recorded: ${JSON.stringify(res.events)}`);
      if (re.method !== method) throw new Error(`expected recovery by ${method}, got ${re.method}`);
      rows.push({
        tokens: T,
        baselineStepMs: round(Math.min(...base)),
        recoveryToNextTokenMs: round(recoveryMs),
        diagnoseMs: re.diagnoseMs,
        openMs: re.openMs,
        replayMs: re.replayMs,
        replayedTokens: re.replayedTokens,
        method: re.method,
      });
      process.stderr.write(
        `T=${T} ${method}: next token ${recoveryMs.toFixed(0)} ms after the kill (replay ${re.replayMs.toFixed(0)} ms)\n`,
      );
      await b!.restart();
      bans.clear(b!.peerId);
      await gw.host.ping(b!.peerId, { addrs: b!.info.addrs });
    }
  } finally {
    await Promise.all(nodes.map((n) => n.kill('SIGTERM')));
    await gw.close();
    rmSync(dir, { recursive: true, force: true });
  }

  const machine = describeMachine();
  console.log(machineLine(machine));
  console.log(
    `model: synthetic smollm2-135m f32 (${L} layers, dim ${cfg.dim}); route [0,${mid}) → [${mid},${L}), the second hop SIGKILLed (replay) or SIGTERMed (transfer), spare [${mid},${L}) takes over; nodes: ${args.engine} engine`,
  );
  console.log(
    table(
      ['positions', 'decode step ms', 'failure → next token ms', 'diagnose', 'open route', 'replay', 'method'],
      rows.map((r) => [
        String(r.tokens),
        r.baselineStepMs.toFixed(1),
        r.recoveryToNextTokenMs.toFixed(1),
        r.diagnoseMs.toFixed(1),
        r.openMs.toFixed(1),
        r.replayMs.toFixed(1),
        r.method,
      ]),
    ),
  );
  writeResult(args.out!, {
    bench: 'recovery',
    date: new Date().toISOString(),
    machine,
    model: { shape: 'smollm2-135m', dtype: 'f32', nLayers: L, dim: cfg.dim, engine: args.engine },
    setup: `route [0,${mid}) → [${mid},${L}); after T positions the second hop is SIGKILLed (replay: the spare [${mid},${L}) replaces it and the route replays T positions) or SIGTERMed (transfer: it hands its KV cache to the spare, which replaces it without replay)`,
    notes:
      'replay: failure → next token = diagnosis (ping all hops) + opening the new route + replaying the history + one decode step. transfer: timed from 200 ms after the SIGTERM = the rest of the KV hand-over + the draining notice + re-opening the route with the spare (resumeFrom) + one decode step. Requests go through the production Gateway (fixed peer list); its ends (embedding, head) use the reference engine in the bench process. Step times are between token arrivals (sampling included).',
    results: rows,
    failures,
  });
}

const round = (x: number) => Math.round(x * 1000) / 1000;

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
