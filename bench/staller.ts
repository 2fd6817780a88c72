// What a selective staller costs the requests that meet it, with the gateway remembering
// unexplained failures (routing/unexplained.ts) and without.
//
// Setup: five `odsi node` processes on 127.0.0.1 — two honest nodes per half of the model and
// a staller serving the second half (fault drop@0: it drops every running session's outputs
// while it answers pings and serves fresh sessions' first steps, the gateway's probes), which
// advertises itself as the fastest, so a planner that does not avoid it routes through it.
// Two production Gateways in this process over exactly those nodes: `on` (the default) and `off`
// (GatewayOptions.rememberUnexplained false: only the request that meets the staller avoids
// it). Requests go one at a time, alternating between the two gateways (order flipped per
// round), each a greedy generation of `--tokens` tokens from its own prompt. Per gateway: the
// requests whose route met the staller, the step time-outs they paid, request latency, and
// what the gateway holds about the staller at the end.
//
// Run: npx tsc -p tsconfig.json && node --import ./dist/src/util/polyfill.js dist/bench/staller.js
// Writes bench/results/staller.json.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Gateway } from '../src/gateway/gateway.js';
import { openModel } from '../src/model/load.js';
import { modelIdentity } from '../src/model/identity.js';
import type { FailureEvent } from '../src/route/events.js';
import { NodeProcess } from '../src/node/process.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { table, writeResult } from './lib/results.js';
import { quantile } from './lib/timeline.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '16' },
    tokens: { type: 'string', default: '24' },
    model: { type: 'string', default: resolve(ROOT, '../shared/models/stories260K/stories260K.gguf') },
    out: { type: 'string', default: join(ROOT, 'bench/results/staller.json') },
  },
});

interface Run {
  ms: number;
  metStaller: boolean;
  lostSteps: number;
  ok: boolean;
}

async function main(): Promise<void> {
  const requests = Number(args.requests);
  const tokens = Number(args.tokens);
  const modelPath = args.model!;
  const src = openModel(modelPath);
  const { nLayers: L, vocabSize } = src.config;
  const modelId = modelIdentity(src).modelId;
  src.close();
  const mid = Math.floor(L / 2);
  const dir = mkdtempSync(join(tmpdir(), 'odsi-staller-'));
  const start = (range: [number, number], name: string, faults?: string[]) =>
    NodeProcess.start({ model: modelPath, range, identityFile: join(dir, `${name}.key`), modelId, announceIntervalMs: 600_000, faults });
  process.stderr.write(`starting nodes [0,${mid}) ×2, [${mid},${L}) ×2 and a staller [${mid},${L}) …\n`);
  const nodes = await Promise.all([
    start([0, mid], 'a1'),
    start([0, mid], 'a2'),
    start([mid, L], 'b1'),
    start([mid, L], 'b2'),
    start([mid, L], 'staller', ['drop@0']),
  ]);
  const staller = nodes[4]!;
  const names = ['a1', 'a2', 'b1', 'b2', 'staller'];
  const nameOf = (peerId: string) => names[nodes.findIndex((n) => n.peerId === peerId)] ?? peerId;
  const peers = nodes.map((n) => n.candidate((n === staller ? 0.1 : 1) * (n.info.end - n.info.start)));
  const gateways: Gateway[] = [];
  try {
    const arms = {
      on: await Gateway.start({ modelPath, peers }),
      off: await Gateway.start({ modelPath, peers, rememberUnexplained: false }),
    };
    gateways.push(arms.on, arms.off);
    for (const gw of gateways) await Promise.all(nodes.map((n) => gw.host.ping(n.peerId, { addrs: n.info.addrs })));
    const runs: Record<'on' | 'off', Run[]> = { on: [], off: [] };
    const t0 = performance.now();
    for (let i = 0; i < requests; i++) {
      const prompt = Array.from({ length: 8 }, (_, k) => 1 + ((i * 131 + k * 7919) % (vocabSize - 1)));
      for (const arm of i % 2 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const gw = arms[arm];
        const t = performance.now();
        let met = false;
        try {
          const res = await gw.run({
            promptIds: prompt,
            maxTokens: tokens,
            sampling: { temperature: 0 },
            sessionId: `staller-${arm}-${i}`,
            onToken: (tok) => {
              if (tok.step === 0) met = tok.route.some((h) => h.peerId === staller.peerId);
            },
          });
          const lost = res.events.filter((e): e is FailureEvent => e.type === 'failure' && e.diagnosis === 'unknown').length;
          runs[arm].push({ ms: performance.now() - t, metStaller: met || lost > 0, lostSteps: lost, ok: true });
        } catch (e) {
          process.stderr.write(`${arm} request ${i}: ${(e as Error).message}\n`);
          runs[arm].push({ ms: performance.now() - t, metStaller: met, lostSteps: 0, ok: false });
        }
      }
    }
    const wallMs = performance.now() - t0;
    const summary = (arm: 'on' | 'off') => {
      const rs = runs[arm];
      const ms = rs.map((r) => r.ms);
      const gw = arms[arm];
      return {
        requests: rs.length,
        failed: rs.filter((r) => !r.ok).length,
        metStaller: rs.filter((r) => r.metStaller).length,
        lostSteps: rs.reduce((a, r) => a + r.lostSteps, 0),
        totalMs: +ms.reduce((a, b) => a + b, 0).toFixed(0),
        medianMs: +quantile(ms, 0.5).toFixed(1),
        p95Ms: +quantile(ms, 0.95).toFixed(1),
        // how often each node was banned and doubted over the run (by name)
        bans: Object.fromEntries(gw.bans.list().map((b) => [nameOf(b.peerId), b.failures])),
        doubts: Object.fromEntries(gw.disputes.doubts.list().map((d) => [nameOf(d.peerId), d.failures])),
        unexplained: { ...gw.unexplained.stats },
      };
    };
    const result = {
      bench: 'staller',
      machine: describeMachine(),
      model: modelPath.split('/').pop(),
      requests,
      tokens,
      wallMs: +wallMs.toFixed(0),
      on: summary('on'),
      off: summary('off'),
      runs,
    };
    process.stderr.write(`${machineLine(result.machine)}\n`);
    const row = (arm: 'on' | 'off') => {
      const s = result[arm];
      return [
        arm,
        `${s.metStaller}/${s.requests}`,
        String(s.lostSteps),
        String(s.totalMs),
        String(s.medianMs),
        String(s.p95Ms),
        JSON.stringify(s.bans),
        JSON.stringify(s.doubts),
      ];
    };
    process.stdout.write(
      table(['memory', 'met staller', 'lost steps', 'total ms', 'median ms', 'p95 ms', 'bans', 'doubts'], [row('on'), row('off')]) + '\n',
    );
    writeResult(args.out!, result);
  } finally {
    for (const gw of gateways) await gw.close().catch(() => undefined);
    await Promise.all(nodes.map((n) => n.kill().catch(() => undefined)));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
