// `odsi demo`: a whole swarm on this machine. Starts N `odsi node` processes on 127.0.0.1,
// each serving a contiguous share of the layers, joins a gateway to them, runs a prompt
// through the route and prints the text and a per-token timeline (who ran which layers,
// compute and transfer ms, slack). --serve keeps swarm + API up.

import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { splitLayers } from '../engine/create.js';
import type { ComputeThread } from '../engine/types.js';
import { modelIdentity } from '../model/identity.js';
import { openModel } from '../model/load.js';
import { writeSyntheticGguf } from '../model/synth.js';
import { createApiServer, type ApiServer } from '../api/server.js';
import { createMetrics } from '../api/metrics.js';
import type { TokenTimeline } from '../api/backend.js';
import { Gateway, WAVE_WAIT_MS } from '../gateway/gateway.js';
import type { RouteCandidate } from '../routing/router.js';
import { LocalSwarm } from '../node/local-swarm.js';
import { Dashboard } from '../dashboard/hub.js';
import { stepView } from '../dashboard/requests.js';
import { mountDashboard } from '../dashboard/http.js';
import { computeThreadOption, engineOption, gatewayAccountabilityConfig } from './config.js'; // accountability
import { PORT, integerOption, numberOption } from './numbers.js';
import { accountabilityReport, type AccountabilityReport } from '../accountability/gateway/report.js'; // accountability
import { openDemoLedger } from './demo-ledger.js'; // ledger
import type { LedgerStatus } from '../ledger/ledger.js'; // ledger
import { formatAmount } from '../ledger/rules.js'; // ledger
import { addressOfPeerId } from '../routing/stake.js'; // ledger
import { describeFaultEvent, nodeFaultArgs, parseNodeFaults, replicateRanges, waitForAdverts } from '../testing/demo-faults.js'; // fault-tolerance

interface DemoOptions {
  model?: string;
  nodes: number;
  layers?: string[];
  prompt: string;
  maxTokens: number;
  temperature: number;
  seed?: number;
  engine: 'ort' | 'reference' | 'llama';
  computeThread: ComputeThread;
  json?: boolean;
  serve?: boolean;
  port: number;
  maxConcurrent: number;
  maxConnections: number;
  requestTimeoutMs: number;
  deadlineMs?: number;
  routeTimeoutMs: number;
  auditRate?: number; // accountability
  replicas: number; // fault-tolerance
  fault: string[]; // fault-tolerance
  dashboard: boolean;
  nodeMetrics?: boolean; // ops
  ledger?: string | true; // ledger
  waves: boolean;
  waveWaitMs: number;
}

export function register(program: Command): void {
  program
    .command('demo')
    .description('run a local swarm (N node processes + gateway) and generate through it')
    .option('-m, --model <path>', "model file or HF directory (default: a synthetic 'tiny' model; its text is meaningless)")
    .option('--nodes <n>', 'number of node processes', integerOption('--nodes', { min: 1 }), 3)
    .option('--layers <a:b...>', 'explicit layer range per node (default: an even split)')
    .option('-p, --prompt <text>', 'prompt', 'Once upon a time')
    .option('-n, --max-tokens <n>', 'tokens to generate', integerOption('--max-tokens', { min: 1 }), 32)
    .option(
      '-t, --temperature <t>',
      'sampling temperature (0 = greedy)',
      numberOption('--temperature', { min: 0, max: 2 }),
      0,
    )
    .option('-s, --seed <n>', 'sampling seed', integerOption('--seed', { min: 0 }))
    .addOption(engineOption('the nodes and the gateway'))
    .addOption(computeThreadOption("the nodes' engines and the gateway's LM head (ort, llama)"))
    .option('--deadline-ms <n>', 'per-token deadline budget of the route (ms)', integerOption('--deadline-ms', { min: 1 }))
    .option('--route-timeout-ms <n>', 'how long to wait for the swarm to cover every layer', integerOption('--route-timeout-ms', { min: 1 }), 30_000)
    .option('--json', 'print one JSON object (text, tokens, prompt_tokens, timeline, nodes)')
    .option('--serve', 'after the prompt, keep the swarm and an OpenAI-compatible API (and the web dashboard at /) running')
    .option('--no-dashboard', 'with --serve: do not serve the web dashboard')
    .option('--port <n>', 'API port with --serve (0 = any)', integerOption('--port', PORT), 8080)
    .option('--max-concurrent <n>', 'with --serve: requests generated at once before answering 503', integerOption('--max-concurrent', { min: 1 }), 64)
    .option(
      '--max-connections <n>',
      'with --serve: open HTTP connections; further ones are closed at once',
      integerOption('--max-connections', { min: 1 }),
      256,
    )
    .option(
      '--request-timeout-ms <n>',
      'with --serve: a request must arrive within this; slower clients are cut off',
      integerOption('--request-timeout-ms', { min: 1 }),
      30_000,
    )
    // accountability: share of each node's steps re-executed by the gateway's referee
    .option('--audit-rate <p>', 'audit rate per node step in [0, 1] (selective redundancy)', numberOption('--audit-rate', { min: 0, max: 1 }))
    .option('--no-waves', "decode steps go into the route as they come, not in waves (waves are the default here: the demo's nodes share this machine's cores)")
    .option('--wave-wait-ms <n>', "how long a wave waits for the last wave's stragglers once the route is empty", integerOption('--wave-wait-ms', { min: 0 }), WAVE_WAIT_MS)
    .option('--node-metrics', 'every node serves Prometheus metrics on a free port (listed with the nodes)') // ops
    // fault-tolerance: replicated ranges and per-node fault injection
    .option('--replicas <r>', 'serve every layer range with R nodes (spares to re-route to)', integerOption('--replicas', { min: 1 }), 1)
    .option(
      '--fault <i:spec>',
      'inject a fault into node i (0-based), e.g. 1:crash@10, 0:stall@5, 2:delay:50; needs ODSI_ALLOW_FAULTS=1',
      (v: string, p: string[]) => [...p, v],
      [] as string[],
    )
    // ledger: stake, slashing, payments and reputation (src/ledger); settled before the demo exits
    .option('--ledger [spec]', "ledger: sqlite (a new file in a temp dir, the default), sqlite:PATH, or evm (starts a local anvil chain and deploys the contracts); --json then includes the ledger's status after settlement")
    .action(async (o: DemoOptions) => {
      await runDemo(o);
    });
}

/** The synthetic model used when no --model is given, written once into the temp dir. */
export async function demoModelPath(): Promise<string> {
  const dir = join(tmpdir(), 'odsi-demo');
  const out = join(dir, 'tiny-f32-seed1.gguf');
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${out}.tmp-${process.pid}`;
    await writeSyntheticGguf({ shape: 'tiny', dtype: 'f32', seed: 1, out: tmp, progress: false });
    renameSync(tmp, out); // concurrent demos never see a half-written file
  }
  return out;
}

function parseRanges(specs: string[], nLayers: number): [number, number][] {
  const ranges = specs.map((s) => {
    const m = /^(\d+):(\d+)$/.exec(s.trim());
    if (!m) throw new Error(`--layers expects a:b (e.g. 0:2), got "${s}"`);
    const r: [number, number] = [Number(m[1]), Number(m[2])];
    if (r[0] >= r[1] || r[1] > nLayers) throw new Error(`--layers ${s}: need 0 <= a < b <= ${nLayers}`);
    return r;
  });
  return ranges;
}

async function runDemo(o: DemoOptions): Promise<void> {
  const log = (s: string) => process.stderr.write(s + '\n');
  const accountability = gatewayAccountabilityConfig({ auditRate: o.auditRate }); // accountability; before anything starts: ODSI_AUDIT_RATE checked
  const synthetic = !o.model;
  const modelPath = o.model ?? (await demoModelPath());
  const src = openModel(modelPath);
  const nLayers = src.config.nLayers;
  const { modelId } = modelIdentity(src); // hashed once here (cached), handed to the nodes
  src.close();
  if (!o.layers?.length && o.nodes > nLayers)
    throw new Error(
      `--nodes ${o.nodes}: more nodes than layers — the model has ${nLayers} layers, so at most ${nLayers} nodes can each serve a share (--replicas R adds spare nodes per share)`,
    );
  const ranges = replicateRanges(o.layers?.length ? parseRanges(o.layers, nLayers) : splitLayers(nLayers, o.nodes), o.replicas); // fault-tolerance: --replicas
  const faults = parseNodeFaults(o.fault, ranges.length, process.env.ODSI_ALLOW_FAULTS === '1'); // fault-tolerance: --fault i:spec
  const note = synthetic
    ? `no --model given: using a synthetic 'tiny' model (${modelPath}); its weights are random, so its text is meaningless`
    : undefined;
  if (note) log(`odsi demo: ${note}`);
  if (!o.json) {
    log(`odsi demo: starting ${ranges.length} nodes for ${nLayers} layers: ${ranges.map(([a, b]) => `${a}:${b}`).join(' ')}`);
  }

  const dl = o.ledger ? await openDemoLedger(o.ledger === true ? 'sqlite' : o.ledger, ranges.length) : undefined; // ledger
  if (dl && !o.json) log(`odsi demo: ledger ${dl.spec} (client account ${dl.client})`);
  let swarm: LocalSwarm | undefined;
  let gw: Gateway | undefined;
  let api: ApiServer | undefined;
  let dash: Dashboard | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      await api?.close().catch(() => undefined);
      await gw?.close().catch(() => undefined);
      await swarm?.stop().catch(() => undefined);
      await dl?.close().catch(() => undefined); // ledger
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    swarm = await LocalSwarm.start({
      model: modelPath,
      ranges,
      engine: o.engine,
      modelId,
      // ODSI_SWARM_STDERR=1 shows the nodes' logs (debugging the demo)
      inheritStderr: !!process.env.ODSI_SWARM_STDERR,
      // N nodes loading at once on a shared machine can take minutes (ORT prepacking)
      readyTimeoutMs: 180_000,
      nodeArgs: (i) => ['--compute-thread', o.computeThread, ...nodeFaultArgs(faults, i) /* fault-tolerance */],
      metrics: o.nodeMetrics, // ops
      ...(dl ? { identityFile: (i: number) => dl.nodeKeyFile(i), extraArgs: ['--ledger', dl.spec] } : {}), // ledger: staked keys; nodes read stake
    });
    const metrics = createMetrics(); // ops: the gateway's metrics beside the API's
    gw = await Gateway.start({
      metrics: metrics.registry,
      modelPath,
      bootstrap: swarm.bootstrap,
      peers: faults.size ? staticPeers(swarm) : undefined, // fault-tolerance
      engine: o.engine,
      computeThread: o.computeThread,
      deadlineMs: o.deadlineMs,
      refreshMs: 5_000,
      // N processes on one machine: a step slowed by CPU contention is not a dead node
      failover: { graceMs: 3_000, minStepMs: 1_000 },
      // the nodes share this machine's cores: one large batch per node per round costs less than several small ones
      waves: o.waves && { waitMs: o.waveWaitMs },
      accountability, // accountability
      // ledger: one epoch per run, and with --serve one every DEMO_EPOCH_MS
      ...(dl ? { identity: dl.gateway, ledger: { ledger: dl.ledger, account: dl.client, epochMs: o.serve ? DEMO_EPOCH_MS : 0 } } : {}),
    });
    // the dashboard records from here on, so the demo's own prompt is among its requests
    if (o.serve && o.dashboard) dash = new Dashboard(gw);
    const route = await gw.waitForRoute(o.routeTimeoutMs);
    if (o.replicas > 1 && !faults.size)
      await waitForAdverts(
        gw,
        swarm.nodes.map((n) => n.peerId),
        o.routeTimeoutMs,
      ); // fault-tolerance: know the spares
    if (!o.json)
      log(
        `odsi demo: route ${route.hops.map((h) => `${short(h.peerId)}[${h.start}:${h.end}]`).join(' → ')}${faults.size ? '' : ` (estimated ${route.estimatedMs.toFixed(1)} ms/token)`}`, // static peers: no measured links
      );

    const promptIds = gw.tokenizer.encode(o.prompt, { addBos: gw.addBos });
    const timeline: TokenTimeline[] = [];
    const tokens: number[] = [];
    let text = '';
    const t0 = performance.now();
    const faultsSince = Date.now(); // fault-tolerance
    const it = gw.generate({
      promptIds,
      maxTokens: o.maxTokens,
      sampling: { temperature: o.temperature, seed: o.seed },
      deadlineMs: o.deadlineMs,
    });
    if (!o.json) process.stdout.write(o.prompt);
    let r = await it.next();
    while (!r.done) {
      tokens.push(r.value.id);
      timeline.push(r.value.timeline);
      text += r.value.text;
      if (!o.json) process.stdout.write(r.value.text);
      r = await it.next();
    }
    text += r.value.tailText;
    if (!o.json) process.stdout.write(r.value.tailText + '\n');
    const totalMs = performance.now() - t0;
    const usage = { prompt_tokens: promptIds.length, completion_tokens: tokens.length, total_tokens: promptIds.length + tokens.length };
    // ledger: charge the usage, submit the evidence, settle the open epoch, then read the result
    gw.chargeUsage(usage.total_tokens);
    await gw.settle();
    const ledger = dl ? await dl.ledger.status() : undefined;

    const nodes = swarm.nodes.map((n) => ({
      peerId: n.peerId,
      addrs: n.addrs,
      layers: [n.start, n.end],
      pid: n.pid,
      engine: n.engine,
      msPerToken: n.msPerToken,
      ...(n.metrics ? { metrics: n.metrics } : {}), // ops
    }));
    if (o.json) {
      process.stdout.write(
        JSON.stringify({
          model: gw.model.id,
          modelId,
          synthetic,
          ...(note ? { note } : {}),
          prompt: o.prompt,
          text,
          tokens,
          prompt_tokens: promptIds,
          finish_reason: r.value.finishReason,
          usage,
          total_ms: round(totalMs),
          route: route.hops.map((h) => ({ peerId: h.peerId, layers: [h.start, h.end] })),
          timeline,
          nodes,
          accountability: await accountabilityReport(
            gw.accountability,
            swarm.nodes.map((n) => n.peerId),
          ), // accountability
          faults: gw.faults.events(faultsSince), // fault-tolerance: failures, re-routes, recovery method
          ...(ledger ? { ledger } : {}), // ledger: as `odsi ledger status --json` shows it after settlement
        }) + '\n',
      );
    } else {
      printTimeline(timeline, swarm, gw, totalMs, tokens.length);
      const nodeName = new Map(swarm.nodes.map((nd, i) => [nd.peerId, `n${i + 1}`])); // fault-tolerance
      for (const e of gw.faults.events(faultsSince)) log(`odsi demo: ${describeFaultEvent(e, (p) => nodeName.get(p) ?? short(p))}`); // fault-tolerance
      const report = await accountabilityReport(
        gw.accountability,
        swarm.nodes.map((n) => n.peerId),
      ); // accountability
      for (const line of describeAccountability(report, (p) => nodeName.get(p) ?? short(p))) log(`odsi demo: ${line}`);
      if (ledger) for (const line of describeLedger(ledger, swarm)) log(`odsi demo: ${line}`); // ledger
    }

    if (o.serve) {
      api = createApiServer(gw, {
        metrics,
        deadlineMs: o.deadlineMs,
        maxConcurrent: o.maxConcurrent,
        maxConnections: o.maxConnections,
        requestTimeoutMs: o.requestTimeoutMs,
        onUsage: (u, request) => gw?.chargeUsage(u.total_tokens, request), // ledger: settled with the request's credits
        onEnd: (request) => gw?.endRequest(request),
      });
      if (dash) mountDashboard(api.app, dash);
      const url = await api.listen(o.port, '127.0.0.1');
      const info = {
        event: 'serving',
        api: `${url}/v1`,
        url,
        ...(dash ? { dashboard: `${url}/` } : {}),
        model: gw.model.id,
        gateway: gw.host.addrs(),
        bootstrap: swarm.bootstrap,
        nodes,
        ...(dl ? { ledger: dl.spec } : {}), // ledger
      };
      if (o.json) process.stdout.write(JSON.stringify(info) + '\n');
      else {
        log(`\nodsi demo: serving an OpenAI-compatible API at ${url}/v1 (model "${gw.model.id}"); Ctrl-C stops everything`);
        log(
          `  try: curl ${url}/v1/completions -H 'content-type: application/json' -d '{"model":"${gw.model.id}","prompt":"${o.prompt.replace(/'/g, '')}","max_tokens":20}'`,
        );
        if (dash) log(`  dashboard: ${url}/`);
        log(`  swarm bootstrap: ${swarm.bootstrap.join(' ')}`);
        log(`  swarm status: odsi status --gateway ${url}   (JSON at ${url}/v1/odsi/status, Prometheus at ${url}/metrics)`); // ops
        for (const [i, n] of nodes.entries()) if (n.metrics) log(`  node n${i + 1} metrics: ${n.metrics}`); // ops
      }
      await new Promise<never>(() => undefined); // until a signal ends the process
    }
  } finally {
    await cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * With --fault, the gateway routes over the nodes as started (no DHT lookups, no pings): every
 * link costs the same, so the cheapest route — and whether a faulty node is on it — depends
 * on the layout alone and is the same on every run (e.g. a node serving all layers beats two
 * that split them). The spares are known from the start.
 */
function staticPeers(swarm: LocalSwarm): RouteCandidate[] {
  return swarm.nodes.map((n) => ({
    peerId: n.peerId,
    addrs: n.addrs,
    start: n.start,
    end: n.end,
    msPerToken: n.msPerToken,
    load: 0,
    freeKvTokens: STATIC_FREE_KV_TOKENS,
  }));
}
/** what static peers are assumed to hold (nodes refuse what they cannot, and the route re-routes) */
const STATIC_FREE_KV_TOKENS = 1_000_000;

/** The accountability part of the text output: audits run, how they ended, and who was caught. */
function describeAccountability(r: AccountabilityReport, name: (peerId: string) => string): string[] {
  if (!r.enabled) return ['accountability: off'];
  const audits = (r.audits ?? []) as { pass?: boolean }[];
  const passed = audits.filter((a) => a.pass === true).length;
  const lines = [
    `accountability: ${audits.length} audit(s), ${passed} passed, ${audits.length - passed} failed; ${(r.evidence ?? []).length} piece(s) of signed evidence`,
  ];
  for (const e of (r.evidence ?? []) as { kind: string; peerId: string; identity: string; reason: string }[])
    lines.push(`  evidence (${e.kind}) against ${name(e.peerId)} (${e.identity}): ${e.reason}`);
  return lines;
}

/** The ledger part of the text output: each node's stake, earnings and slashes after settlement. */
function describeLedger(st: LedgerStatus, swarm: LocalSwarm): string[] {
  const byAddr = new Map(st.identities.map((i) => [i.address.toLowerCase(), i]));
  const lines = [`ledger (${st.location}): epoch ${st.epoch} settled, ${st.events} events`];
  swarm.nodes.forEach((n, i) => {
    const id = byAddr.get(addressOfPeerId(n.peerId)?.toLowerCase() ?? '');
    if (id)
      lines.push(
        `  n${i + 1} ${id.address}: stake ${formatAmount(BigInt(id.stake))}, earned ${formatAmount(BigInt(id.earned))}, slashed ${formatAmount(BigInt(id.slashed))} ODSI${id.eligible ? '' : ' (not eligible)'}`,
      );
  });
  for (const a of st.accounts) lines.push(`  client ${a.address}: charged ${formatAmount(BigInt(a.charged))}, balance ${formatAmount(BigInt(a.balance))} ODSI`);
  return lines;
}

/** with --serve and --ledger: settle payments and publish reputation this often */
const DEMO_EPOCH_MS = 5_000;

const short = (peerId: string) => `…${peerId.slice(-6)}`;
const round = (x: number) => Math.round(x * 1000) / 1000;

function printTimeline(timeline: TokenTimeline[], swarm: LocalSwarm, gw: Gateway, totalMs: number, n: number): void {
  const out = (s: string) => process.stdout.write(s + '\n');
  out('');
  out('nodes:');
  for (const [i, nd] of swarm.nodes.entries())
    out(
      `  n${i + 1} ${nd.peerId} layers ${nd.start}:${nd.end} pid ${nd.pid} (${nd.engine}, advertised ${nd.msPerToken.toFixed(2)} ms/token)`,
    );
  const name = new Map(swarm.nodes.map((nd, i) => [nd.peerId, `n${i + 1}`]));
  out('');
  out(
    'per-token timeline (ms): step, token, step total (since the previous token) | per hop: node[layers] c=compute q=queued s=send (slack = budget left), then gateway compute, wire = the step\'s round trip less the hops\' time (links, framing, scheduling) and held = how long after its step the token was released (its receipts\' check, the pipelining)',
  );
  for (const t of timeline) {
    const piece = JSON.stringify(gw.tokenizer.decode([t.token], { atStart: false })).slice(0, 12);
    const v = stepView(t); // the split the dashboard's waterfall shows
    const hops = v.hops
      .map(
        (h) =>
          `${name.get(h.peerId) ?? short(h.peerId)}[${h.start}:${h.end}] c${h.computeMs.toFixed(2)} q${h.queueMs.toFixed(2)} s${h.sendMs.toFixed(2)}` +
          (h.slackMs === undefined ? '' : ` slack ${h.slackMs.toFixed(1)}`),
      )
      .join('  ');
    // step 0 is the prefill's tail: its wall time holds the whole prompt
    const rest = t.step > 0 ? `  wire ${v.wireMs.toFixed(2)}${t.routeMs !== undefined ? `  held ${v.heldMs.toFixed(2)}` : ''}` : '';
    out(`  ${String(t.step).padStart(4)}  ${piece.padEnd(12)} ${t.stepMs.toFixed(2).padStart(7)} | ${hops}  gateway ${v.gatewayMs.toFixed(2)}${rest}`);
  }
  const decode = timeline.slice(1).reduce((a, t) => a + t.stepMs, 0);
  out('');
  out(
    `${n} tokens in ${totalMs.toFixed(0)} ms (first token after ${(timeline[0] ? totalMs - decode : 0).toFixed(0)} ms; decode ${(n > 1 ? decode / (n - 1) : 0).toFixed(2)} ms/token)`,
  );
}
