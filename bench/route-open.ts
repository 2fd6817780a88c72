// How long a route takes to open on loopback, where links cost nothing and what is left is the
// processes' own work: this process as the gateway (a libp2p host and the production
// RouteClient), `odsi node` processes on 127.0.0.1 serving stories260K's layers in a chain. Each
// route is opened, timed to OPENED (`ready`), then closed before the next; a route whose first
// step goes right behind its OPEN (eager, the default) alternates with one that waits for OPENED.
// The first open also dials the links (TCP, Noise, identify) and is reported apart.
//
//   node --import ./dist/src/util/polyfill.js dist/bench/route-open.js [--hops 2] [--opens 40] [--out FILE]
//
// Writes bench/results/route-open.json.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { generateIdentity } from '../src/identity/identity.js';
import { openModel } from '../src/model/load.js';
import { modelIdentity } from '../src/model/identity.js';
import { NodeProcess } from '../src/node/process.js';
import { createHost } from '../src/p2p/host.js';
import { RouteClient } from '../src/route/route-client.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { table, writeResult } from './lib/results.js';
import { dist } from './lib/timeline.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const STORIES = resolve(ROOT, '../shared/models/stories260K/stories260K.gguf');

const { values: args } = parseArgs({
  options: {
    hops: { type: 'string', default: '2' },
    opens: { type: 'string', default: '40' },
    model: { type: 'string' },
    out: { type: 'string', default: join(ROOT, 'bench/results/route-open.json') },
  },
});

async function main(): Promise<void> {
  const modelPath = resolve(args.model ?? STORIES);
  const src = openModel(modelPath);
  const config = src.config;
  const modelId = modelIdentity(src).modelId;
  src.close();
  const k = Math.max(1, Math.min(Number(args.hops), config.nLayers));
  const opens = Math.max(2, Number(args.opens));
  const ranges = Array.from({ length: k }, (_, i): [number, number] => [
    Math.floor((i * config.nLayers) / k),
    Math.floor(((i + 1) * config.nLayers) / k),
  ]);
  const machine = describeMachine();
  console.log(`route-open: ${machineLine(machine)}; ${k} hops, ${opens} opens`);
  const dir = mkdtempSync(join(tmpdir(), 'odsi-route-open-'));
  const nodes: NodeProcess[] = [];
  const host = await createHost({ identity: generateIdentity() });
  try {
    for (const [i, range] of ranges.entries())
      nodes.push(
        await NodeProcess.start({ model: modelPath, range, identityFile: join(dir, `n${i}.key`), modelId, announceIntervalMs: 600_000 }),
      );
    const routes = await RouteClient.start(host);
    const hops = nodes.map((n, i) => ({ peerId: n.peerId, addrs: n.info.addrs, start: ranges[i]![0], end: ranges[i]![1] }));
    const ms = { eager: [] as number[], afterOpened: [] as number[] };
    let firstMs = 0;
    for (let i = 0; i < opens + 1; i++) {
      const eager = i % 2 === 1;
      const t0 = performance.now();
      const route = await routes.open({ modelId, config, hops, sessionId: `open-${i}-${process.pid}`, eager, openTimeoutMs: 30_000 });
      await route.ready;
      const t = performance.now() - t0;
      if (i === 0) firstMs = t;
      else (eager ? ms.eager : ms.afterOpened).push(t);
      await route.dispose();
    }
    const r3 = (x: number) => Math.round(x * 1000) / 1000;
    const result = {
      what: 'loopback route open → OPENED, ms: a route opened and closed at a time, eager (first step behind the OPEN) and after-OPENED alternating; the first open dials the links',
      machine,
      loadAvgAtEnd: describeMachine().loadAvg,
      hops: k,
      ranges,
      model: modelPath,
      firstOpenMs: r3(firstMs),
      eagerMs: dist(ms.eager),
      afterOpenedMs: dist(ms.afterOpened),
    };
    console.log(
      table(
        ['open', 'n', 'median ms', 'p90 ms', 'min ms'],
        [
          ['first (dials the links)', '1', r3(firstMs).toString(), '', ''],
          ...(['eager', 'afterOpened'] as const).map((m) => {
            const d = m === 'eager' ? result.eagerMs : result.afterOpenedMs;
            return [m, String(d.n), d.p50.toFixed(2), d.p90.toFixed(2), d.min.toFixed(2)];
          }),
        ],
      ),
    );
    writeResult(args.out!, result);
    console.log(`\nwrote ${args.out}`);
  } finally {
    await Promise.all(nodes.map((n) => n.kill('SIGTERM').catch(() => undefined)));
    await host.stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    console.error(e.stack ?? e.message);
    process.exit(1);
  },
);
