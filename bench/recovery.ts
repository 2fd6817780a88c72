// Recovery time after a node dies mid-generation, as a function of the positions already
// processed (prompt + generated tokens), on a synthetic SmolLM2-135M-shaped model.
//
// Setup: three `odsi node` processes on 127.0.0.1 — A [0,15), B [15,30), spare C [15,30) —
// the gateway's ends (embedding, head) in this process, and a ResilientRoute (StaticPlanner
// preferring A → B). For each context length T: prefill T−2 prompt tokens, decode 2 tokens
// (baseline step time), SIGKILL B and wait for it to exit, then time the next token: that is
// detection + diagnosis + opening A → C + replaying T positions + the step itself.
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
import { createStage } from '../src/engine/create.js';
import { forwardPipeline } from '../src/engine/pipeline.js';
import { generateIdentity } from '../src/identity/identity.js';
import { openModel } from '../src/model/load.js';
import { modelIdentity } from '../src/model/identity.js';
import { writeSyntheticGguf } from '../src/model/synth.js';
import { createHost } from '../src/p2p/host.js';
import { BanList } from '../src/routing/bans.js';
import type { FaultEvent, RerouteEvent } from '../src/route/events.js';
import { StaticPlanner } from '../src/routing/planner.js';
import { NodeProcess } from '../src/node/process.js';
import { openResilientRoute } from '../src/route/resilient-route.js';
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
  const dir = mkdtempSync(join(tmpdir(), 'odsi-recovery-'));
  const host = await createHost({ identity: generateIdentity() });
  const embed = await createStage('reference', src, { start: 0, end: 0, embed: true, head: false });
  const head = await createStage('reference', src, { start: L, end: L, embed: false, head: true });
  const maxLen = Math.max(...lengths) + 8;
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
  await Promise.all(nodes.map((n) => host.ping(n.peerId, { addrs: n.info.addrs })));
  const bans = new BanList();
  const cand = (n: NodeProcess, ms: number) => n.candidate(ms);
  const planner = new StaticPlanner([cand(a!, 10), cand(b!, 10), cand(c!, 20)], L, bans);

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
      const events: FaultEvent[] = [];
      const route = await openResilientRoute({
        host,
        modelId,
        config: cfg,
        sessionId: `bench-${T}-${method}`,
        planner,
        bans,
        maxTokens: maxLen,
        graceMs: 5000,
        onEvent: (e) => (events.push(e), process.stderr.write(`  ${JSON.stringify(e)}\n`)),
      });
      if (route.hops[1]!.peerId !== b!.peerId) throw new Error('the planner did not pick A → B');
      const stages = [embed, route, head];
      const sessionId = `bench-${T}-${method}`;
      const prompt = Array.from({ length: T - 2 }, (_, i) => 1 + ((i * 7919) % (cfg.vocabSize - 1)));
      for (let p = 0; p < prompt.length; p += 128) {
        await forwardPipeline(stages, { sessionId, pos: p, tokens: Int32Array.from(prompt.slice(p, p + 128)) });
      }
      let pos = prompt.length;
      const base: number[] = [];
      for (let k = 0; k < 2; k++) {
        const t = performance.now();
        await forwardPipeline(stages, { sessionId, pos: pos++, tokens: Int32Array.of(5) });
        base.push(performance.now() - t);
      }
      let leaving: Promise<void> | undefined;
      if (method === 'transfer') {
        leaving = b!.kill('SIGTERM'); // kv-transfer
        await new Promise((r) => setTimeout(r, 200));
      } else await b!.kill('SIGKILL');
      const t = performance.now();
      await forwardPipeline(stages, { sessionId, pos: pos++, tokens: Int32Array.of(5) });
      const recoveryMs = performance.now() - t;
      await leaving;
      const re = events.find((e): e is RerouteEvent => e.type === 'reroute');
      if (!re) throw new Error(`no re-route recorded: ${JSON.stringify(events)}`);
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
      await route.dispose();
      await b!.restart();
      bans.clear(b!.peerId);
      await host.ping(b!.peerId, { addrs: b!.info.addrs });
    }
  } finally {
    await Promise.all(nodes.map((n) => n.kill('SIGTERM')));
    await host.stop();
    await embed.dispose();
    await head.dispose();
    src.close();
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
      'replay: failure → next token = diagnosis (ping all hops) + opening the new route + replaying the history + one decode step. transfer: timed from 200 ms after the SIGTERM = the rest of the KV hand-over + the draining notice + re-opening the route with the spare (resumeFrom) + one decode step. Gateway ends (embedding, head) use the reference engine in the bench process.',
    results: rows,
    failures,
  });
}

const round = (x: number) => Math.round(x * 1000) / 1000;

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
