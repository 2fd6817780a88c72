// A 3-node swarm across emulated WAN links, built from network namespaces this benchmark creates
// (root only): token latency against the floor compute + (k+1)·one-way delay, and prefill
// transfer time by activation precision on the wire.
//
//   node --import ./dist/src/util/polyfill.js dist/bench/wan.js [--profiles wan20,lan5] [--model FILE]
//        [--engine ort|reference] [--threads N] [--compute-thread worker|main] [--tokens N] [--rounds N] [--warmup 4] [--prefill N] [--prefill-reps 6] [--prompt-chunk N] [--slow-start-after-idle on|off] [--recoveries N]
//        [--out FILE]
//
// Topology (bench/lib/netns.ts): namespaces <prefix>-gw, -n1, -n2, -n3, each joined by a veth pair
// to <prefix>-hub, where nothing is forwarded: the only way between two namespaces is a TCP relay
// in the hub (bench/lib/wan-relay.ts) that delays each chunk by the one-way delay ± jitter and
// emulates loss as an extra retransmission timeout (see that file for the approximation). Rate is
// shaped by tbf on both ends of every veth. Every libp2p connection between gateway and nodes or
// between nodes goes through a relay, so each of the k+1 transfers of a step pays one one-way delay.
//
// Roles: this process (the host namespace) builds the namespaces, starts the relay, an echo server
// (link measurement) and the `odsi node` processes, then runs itself with --inner inside the
// gateway namespace: that child measures RTT and rate of the emulated link, drives a production
// Gateway over the fixed route (accountability on, as deployed), and opens extra routes at each
// wire dtype for the prefill transfer. Everything is removed after each profile, also on failure
// and on SIGINT/SIGTERM. The decode rounds come after --warmup unmeasured rounds of 8 concurrent
// generations per gateway: a fresh swarm is slower per hop for its first thousand or so steps.
//
// Recovery (--recoveries N > 0): a 4th node, in its own namespace behind its own relay, serves
// hop 1's layers (a spare the gateways know, costed higher than hop 1). Per repetition each
// gateway (re-routes opened eagerly / after OPENED; interleaved, order flipped per repetition)
// runs a generation, and after token tokens/3 the node serving hop 1 is SIGKILLed (steps remain);
// the route re-routes to the spare with replay. Reported: kill → failure detected, the reroute
// event's diagnose / open / replay ms, and kill → the first token after the re-route. The outer
// process then restarts the killed node (same key and address, over an IPC request from the
// gateway side) and both gateways forget its ban before the next run.
//
// Reported per profile: measured RTT (64 B and 8 KB echoes) and rate; per decode step: step wall
// time at the gateway, Σ compute of all stages, floor = Σ compute + (k+1)·(measured RTT / 2), and
// step − floor (target: median ≤ 5 ms); prefill transfer time by wire dtype (f32, f16, bf16),
// with every row coming back and with the last row alone (StageInput.lastRow, as the gateway
// asks), interleaved, and the route output's relative L2 difference from the f32 run.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir, availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { odsiBin } from '../src/util/children.js';
import type { ComputeThread } from '../src/engine/types.js';
import { NetnsStar, isRoot } from './lib/netns.js';
import type { RelayConfig, EchoConfig } from './lib/wan-relay.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult } from './lib/results.js';
import { dist, stepSample, type Dist, type StepSample } from './lib/timeline.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const HERE = resolve(fileURLToPath(import.meta.url), '..');
const NODE_PORT = 4001;
const ECHO_PORT = 5001;
/** the relay and echo server stand in for the network, not for a party: on this shared VM they run
 *  at a higher CPU priority so that waiting for a core shows up less as link delay */
const EMULATOR_NICE = ['-n', '-10'];
/** concurrent generations per gateway in a warm-up round */
const WARMUP_STREAMS = 8;

export interface LinkProfile {
  name: string;
  /** one-way delay added per transfer, ms */
  delayMs: number;
  /** ± uniform, ms */
  jitterMs: number;
  /** packet loss probability */
  loss: number;
  rateMbit: number;
}

export const PROFILES: Record<string, LinkProfile> = {
  wan20: { name: 'wan20', delayMs: 20, jitterMs: 2, loss: 0.001, rateMbit: 100 },
  lan5: { name: 'lan5', delayMs: 5, jitterMs: 0, loss: 0, rateMbit: 1000 },
  wan50: { name: 'wan50', delayMs: 50, jitterMs: 5, loss: 0.001, rateMbit: 50 },
  /** wan20 without loss: an emulated loss costs a whole retransmission timeout, which swamps byte-count effects */
  wan20clean: { name: 'wan20clean', delayMs: 20, jitterMs: 2, loss: 0, rateMbit: 100 },
  /** no delay, jitter, loss or shaping: what the namespaces and the relay cost by themselves */
  lan0: { name: 'lan0', delayMs: 0, jitterMs: 0, loss: 0, rateMbit: 0 },
};

interface InnerConfig {
  profile: LinkProfile;
  accountability: boolean;
  /** negotiated streams the gateway and the nodes keep ready per peer just used (odsi node --stream-spares) */
  streamSpares: number;
  /** extra routes opened (and closed) one after the other, each timed */
  reopens: number;
  /** repetitions of the recovery phase per gateway (0: none, no spare node) */
  recoveries: number;
  modelPath: string;
  /** the model's identity (hashed once here; nodes are told it with --model-id) */
  modelId: string;
  engine: 'ort' | 'reference';
  threads: number;
  /** where the nodes' engine and the gateways' LM head compute (odsi node --compute-thread) */
  computeThread: ComputeThread;
  tokens: number;
  rounds: number;
  /** unmeasured rounds of WARMUP_STREAMS concurrent generations per gateway before the rounds (a fresh swarm is slower per hop at first) */
  warmup: number;
  prefillTokens: number;
  /** repetitions of each prefill way per wire dtype (their order rotates: a multiple of 3 puts each way in each place alike) */
  prefillReps: number;
  /** tokens per chunk of the chunked way (default: the gateway's PROMPT_CHUNK) */
  promptChunk?: number;
  dtypes: ('f32' | 'f16' | 'bf16')[];
  listen: string;
  hops: { peerId: string; addrs: string[]; start: number; end: number }[];
  /** recovery: a node serving hop 1's layers, and every node's pid (for the SIGKILL) */
  spare?: { peerId: string; addrs: string[]; start: number; end: number };
  pids: Record<string, number>;
  echo: { host: string; port: number };
  out: string;
}

const { values: args } = parseArgs({
  options: {
    inner: { type: 'string' },
    profiles: { type: 'string', default: 'wan20,lan5' },
    model: { type: 'string' },
    engine: { type: 'string' },
    threads: { type: 'string' },
    'compute-thread': { type: 'string', default: 'worker' },
    tokens: { type: 'string', default: '24' },
    rounds: { type: 'string', default: '4' },
    warmup: { type: 'string', default: '4' },
    prefill: { type: 'string', default: '128' },
    dtypes: { type: 'string', default: 'f32,f16,bf16' },
    out: { type: 'string' },
    // off: nodes run with ODSI_ACCOUNTABILITY=0 and the gateway checks no receipts (diagnosis)
    accountability: { type: 'string', default: 'on' },
    // 0: every session stream negotiates its protocol (one round trip per link of a route open)
    'stream-spares': { type: 'string', default: '1' },
    // extra routes opened (and closed) one after the other, each timed
    reopens: { type: 'string', default: '6' },
    'prefill-reps': { type: 'string', default: '6' },
    'prompt-chunk': { type: 'string' },
    /** net.ipv4.tcp_slow_start_after_idle in the namespaces: on (the kernel's default) or off */
    'slow-start-after-idle': { type: 'string', default: 'on' },
    // repetitions of the recovery phase (hop 1 SIGKILLed mid-generation) per gateway; 0: none
    recoveries: { type: 'string', default: '2' },
  },
});

// ---------------------------------------------------------------- outer: namespaces and processes

/** spawn one `odsi node` in a namespace; resolves with its ready line */
function startNode(
  star: NetnsStar,
  ns: string,
  listen: string,
  model: string,
  range: [number, number],
  engine: string,
  threads: number,
  modelId: string,
  accountability: boolean,
  streamSpares: number,
  /** key file (created on first start): a restarted node is the same peer */
  keyFile: string,
  computeThread: ComputeThread,
): Promise<{ peerId: string; pid: number }> {
  const p = star.spawn(
    ns,
    process.execPath,
    [
      odsiBin(),
      'node',
      '--model',
      model,
      '--layers',
      `${range[0]}:${range[1]}`,
      '--listen',
      listen,
      '--engine',
      engine,
      '--threads',
      String(threads),
      '--compute-thread',
      computeThread,
      '--bench-tokens',
      '0',
      '--model-id',
      modelId,
      '--announce-interval',
      '60000',
      '--stream-spares',
      String(streamSpares),
      '--log-level',
      'warn',
      '--identity',
      keyFile,
      '--protection-sync',
      'normal',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ODSI_ACCOUNTABILITY: accountability ? '1' : '0' } },
  );
  return waitReady(p, `node ${range.join(':')} in ${ns}`, 300_000) as Promise<{ peerId: string; pid: number }>;
}

function waitReady(p: import('node:child_process').ChildProcess, label: string, ms: number): Promise<Record<string, unknown>> {
  const tail: string[] = [];
  p.stderr?.on('data', (b: Buffer) => {
    tail.push(b.toString());
    if (tail.length > 20) tail.shift();
  });
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${label} not ready within ${ms} ms: ${tail.join('').slice(-800)}`)), ms);
    createInterface({ input: p.stdout! }).on('line', (l) => {
      try {
        const m = JSON.parse(l) as Record<string, unknown>;
        if (m.event === 'ready') {
          clearTimeout(timer);
          res(m);
        }
      } catch {
        /* not JSON */
      }
    });
    p.once('exit', (code, sig) => {
      clearTimeout(timer);
      rej(new Error(`${label} exited (${sig ?? code}) before it was ready: ${tail.join('').slice(-800)}`));
    });
  });
}

async function runProfile(
  profile: LinkProfile,
  o: Omit<InnerConfig, 'profile' | 'listen' | 'hops' | 'spare' | 'pids' | 'echo' | 'out'>,
  splits: [number, number][],
): Promise<unknown> {
  const prefix = `odsi-wan-${process.pid}`;
  // recovery: node k+1 (the spare) serves hop 1's layers
  const ranges = o.recoveries > 0 ? [...splits, splits[0]!] : splits;
  const names = ['gw', ...ranges.map((_, i) => `n${i + 1}`)];
  console.log(
    `\n[${profile.name}] ${profile.delayMs} ms ± ${profile.jitterMs} ms one-way, ${profile.rateMbit} Mbit/s, loss ${(profile.loss * 100).toFixed(2)} %`,
  );
  const star = NetnsStar.create(prefix, names, { rateMbit: profile.rateMbit, slowStartAfterIdle: args['slow-start-after-idle'] !== 'off' });
  current = star;
  const tmp = mkdtempSync(join(tmpdir(), 'odsi-wan-'));
  try {
    // relays in the hub: one per node (and the gateway, for reply dials), one to the echo server
    const rules = names.map((_, i) => ({
      listenHost: star.hubAddr(i),
      listenPort: NODE_PORT,
      targetHost: star.addr(i),
      targetPort: NODE_PORT,
    }));
    rules.push({ listenHost: star.hubAddr(1), listenPort: ECHO_PORT, targetHost: star.addr(1), targetPort: ECHO_PORT });
    const relayCfg: RelayConfig = {
      mode: 'relay',
      delayMs: profile.delayMs,
      jitterMs: profile.jitterMs,
      loss: profile.loss,
      rules,
      seed: 1,
    };
    const relayJs = join(HERE, 'lib/wan-relay.js');
    const relay = star.spawn(star.hub, 'nice', [...EMULATOR_NICE, process.execPath, relayJs, JSON.stringify(relayCfg)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await waitReady(relay, 'relay', 10_000);
    // the relay's own lateness since the last ask (SIGUSR2 → one 'lateness' line), for the gateway side
    const lateness: ((m: Record<string, unknown>) => void)[] = [];
    createInterface({ input: relay.stdout! }).on('line', (l) => {
      if (l.startsWith('{"event":"lateness"')) lateness.shift()?.(JSON.parse(l) as Record<string, unknown>);
    });
    const echoCfg: EchoConfig = { mode: 'echo', host: star.addr(1), port: ECHO_PORT };
    await waitReady(
      star.spawn(star.ns(1), 'nice', [...EMULATOR_NICE, process.execPath, relayJs, JSON.stringify(echoCfg)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
      'echo',
      10_000,
    );
    const t0 = performance.now();
    const start = (i: number) =>
      startNode(
        star,
        star.ns(i + 1),
        `/ip4/${star.addr(i + 1)}/tcp/${NODE_PORT}`,
        o.modelPath,
        ranges[i]!,
        o.engine,
        o.threads,
        o.modelId,
        o.accountability,
        o.streamSpares,
        join(tmp, `node${i + 1}.key`),
        o.computeThread,
      );
    const nodes = await Promise.all(ranges.map((_, i) => start(i)));
    console.log(`  nodes up in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${nodes.map((n) => n.peerId.slice(-6)).join(', ')}`);
    const out = join(tmp, 'result.json');
    // the gateway reaches node i only through the relay on the hub's side of node i's link
    const hop = (i: number) => ({
      peerId: nodes[i]!.peerId,
      addrs: [`/ip4/${star.hubAddr(i + 1)}/tcp/${NODE_PORT}/p2p/${nodes[i]!.peerId}`],
      start: ranges[i]![0],
      end: ranges[i]![1],
    });
    const cfg: InnerConfig = {
      ...o,
      profile,
      listen: `/ip4/${star.addr(0)}/tcp/${NODE_PORT}`,
      hops: splits.map((_, i) => hop(i)),
      spare: ranges.length > splits.length ? hop(splits.length) : undefined,
      pids: Object.fromEntries(nodes.map((n) => [n.peerId, n.pid])),
      echo: { host: star.hubAddr(1), port: ECHO_PORT },
      out,
    };
    const cfgFile = join(tmp, 'config.json');
    writeFileSync(cfgFile, JSON.stringify(cfg));
    const inner = star.spawn(
      star.ns(0),
      process.execPath,
      ['--import', join(ROOT, 'dist/src/util/polyfill.js'), fileURLToPath(import.meta.url), '--inner', cfgFile],
      {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      },
    );
    // recovery: the gateway side asks for a killed node back (same key, same address); and for
    // the relay's lateness since it last asked
    inner.on('message', (m: { restart?: string; lateness?: boolean }) => {
      if (m.lateness) {
        lateness.push((x) => inner.send({ relayLateness: x }));
        relay.kill('SIGUSR2');
        return;
      }
      const i = nodes.findIndex((n) => n.peerId === m.restart);
      if (i < 0) return;
      start(i).then(
        (n) => inner.send({ restarted: n.peerId, pid: n.pid }),
        (e: Error) => inner.send({ restarted: m.restart, error: e.message }),
      );
    });
    const code = await new Promise<number | null>((r) => inner.once('exit', (c) => r(c)));
    if (code !== 0 || !existsSync(out)) throw new Error(`gateway side of ${profile.name} failed (exit ${code})`);
    return JSON.parse(readFileSync(out, 'utf8'));
  } finally {
    await star.destroy();
    current = undefined;
    rmSync(tmp, { recursive: true, force: true });
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.startsWith(prefix));
    if (left.length) console.error(`WARNING: namespaces left behind: ${left.join(', ')}`);
  }
}

let current: NetnsStar | undefined;

async function outer(): Promise<void> {
  if (!isRoot()) throw new Error('bench/wan builds network namespaces and needs root (run it as root, or skip it)');
  const profiles = args.profiles!.split(',').map((n) => {
    const p = PROFILES[n];
    if (!p) throw new Error(`unknown profile ${n} (have ${Object.keys(PROFILES).join(', ')})`);
    return p;
  });
  const modelPath = resolve(args.model ?? join(ROOT, 'bench/tmp/smollm2-135m-f32.gguf'));
  if (!existsSync(modelPath))
    throw new Error(
      `${modelPath} missing: node bin/odsi.js model synth --shape smollm2-135m --dtype f32 --seed 1 --out bench/tmp/smollm2-135m-f32.gguf`,
    );
  const { openModel } = await import('../src/model/load.js');
  const { splitLayers } = await import('../src/engine/create.js');
  const { modelIdentity } = await import('../src/model/identity.js');
  const src = openModel(modelPath);
  const c = src.config;
  const { modelId } = modelIdentity(src);
  src.close();
  const engine = (args.engine ?? (c.headDim % 16 === 0 ? 'ort' : 'reference')) as 'ort' | 'reference';
  const threads = Number(args.threads ?? Math.max(1, Math.floor(availableParallelism() / 2)));
  const computeThread = args['compute-thread'] as ComputeThread;
  if (computeThread !== 'worker' && computeThread !== 'main')
    throw new Error(`--compute-thread: worker or main, got ${String(computeThread)}`);
  const splits = splitLayers(c.nLayers, 3);
  const dtypes = args.dtypes!.split(',') as InnerConfig['dtypes'];
  const machine = describeMachine();
  console.log(machineLine(machine));
  console.log(
    `${modelPath}: ${c.nLayers} layers, dim ${c.dim}; engine ${engine}, ${threads} threads per process, computing on the ${computeThread} thread; nodes [${splits.map((r) => r.join(':')).join(' ')}]`,
  );
  const o = {
    modelPath,
    modelId,
    accountability: args.accountability !== 'off',
    streamSpares: Number(args['stream-spares']),
    reopens: Number(args.reopens),
    recoveries: Number(args.recoveries),
    engine,
    threads,
    computeThread,
    tokens: Number(args.tokens),
    rounds: Number(args.rounds),
    warmup: Number(args.warmup),
    prefillTokens: Number(args.prefill),
    prefillReps: Number(args['prefill-reps']),
    promptChunk: args['prompt-chunk'] !== undefined ? Number(args['prompt-chunk']) : undefined,
    dtypes,
  };
  const results: unknown[] = [];
  for (const p of profiles) results.push(await runProfile(p, o, splits));
  const outFile =
    args.out ??
    join(
      ROOT,
      `bench/results/wan${modelPath.includes('stories') ? '-stories260k' : ''}${o.accountability ? '' : '-noaccountability'}.json`,
    );
  writeResult(outFile, {
    what: '3-node swarm across network namespaces with emulated WAN links (tbf rate + user-space delay/jitter/loss relay): per-token latency vs floor compute + (k+1)·one-way delay; prefill transfer by wire dtype',
    note: `all processes share this machine's ${machine.cores} cores (the VM is shared with other jobs: see loadAvg); loss is emulated as an extra retransmission timeout on a fraction of chunks (bench/lib/wan-relay.ts)`,
    machine,
    loadAvgAtEnd: describeMachine().loadAvg,
    model: modelPath.replace(`${ROOT}/`, ''),
    options: { ...o, modelPath: undefined, splits, slowStartAfterIdle: args['slow-start-after-idle'] !== 'off' },
    profiles: results,
  });
  console.log(`\nwrote ${outFile}`);
}

// ---------------------------------------------------------------- inner: the gateway's namespace

async function inner(cfgFile: string): Promise<void> {
  const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as InnerConfig;
  const { echoRtt, sinkRate } = await import('./lib/link-probe.js');
  const { Gateway } = await import('../src/gateway/gateway.js');
  const { openModel } = await import('../src/model/load.js');
  const { createStage } = await import('../src/engine/create.js');
  const { createHost } = await import('../src/p2p/host.js');
  const { RouteClient } = await import('../src/route/route-client.js');
  const { forwardInChunks } = await import('../src/route/chunked-steps.js');
  const { CHUNKS_IN_FLIGHT, PROMPT_CHUNK } = await import('../src/route/resilient-route.js');
  const promptChunk = cfg.promptChunk ?? PROMPT_CHUNK;
  const { generateIdentity } = await import('../src/identity/identity.js');
  const p = cfg.profile;
  const r3 = (x: number) => Math.round(x * 1000) / 1000;

  // 1. what the link delivers (gateway → hub relay → node 1's namespace)
  await relayLateness(); // a new log: the idle link's probes only
  const rtt64 = await echoRtt(cfg.echo.host, cfg.echo.port, 40, 64);
  const idleLateness = await relayLateness();
  const rtt8k = await echoRtt(cfg.echo.host, cfg.echo.port, 20, 8192);
  const bulk = Math.min(16 << 20, Math.max(1 << 20, Math.round((p.rateMbit * 1e6) / 8 / 4)));
  const rate = await sinkRate(cfg.echo.host, cfg.echo.port, bulk, rtt64.median, 3);
  const oneWayMs = rtt64.median / 2;
  console.log(
    `  link: RTT 64 B ${rtt64.min.toFixed(2)} (${rtt64.median.toFixed(2)}) ms, 8 KB ${rtt8k.median.toFixed(2)} ms; rate ${rate.median.toFixed(1)} Mbit/s (of ${p.rateMbit}, ${(bulk / 2 ** 20).toFixed(1)} MiB transfers)`,
  );

  // 2. decode through production Gateways (accountability on), fixed route: one sends each
  // request's first step right behind its route's OPEN (the default), one after OPENED; every
  // round runs a request on each, the order flipped every round
  const k = cfg.hops.length;
  const start = (eagerOpen: boolean, listen: string) =>
    Gateway.start({
      modelPath: cfg.modelPath,
      engine: cfg.engine,
      computeThread: cfg.computeThread,
      listen: [listen],
      // recovery: the spare costs more than hop 1, so routes take hop 1 while it is up
      peers: [...cfg.hops.map((h) => ({ ...h, msPerToken: 1 })), ...(cfg.spare ? [{ ...cfg.spare, msPerToken: 4 }] : [])].map((h) => ({
        ...h,
        load: 0,
        freeKvTokens: 1e6,
      })),
      failover: { graceMs: 60_000, minStepMs: 120_000 },
      accountability: { enabled: cfg.accountability },
      streamSpares: cfg.streamSpares,
      eagerOpen,
    });
  const gws = [await start(true, cfg.listen), await start(false, cfg.listen.replace(`/tcp/${NODE_PORT}`, '/tcp/0'))] as const;
  const samples: (StepSample & { round: number })[] = [];
  const tokensPerRun: number[] = [];
  /** request start → first token (route open, prefill, first step), per round, eager open / after OPENED */
  const firstTokenMs: { eager: number[]; afterOpened: number[] } = { eager: [], afterOpened: [] };
  const recoveries: RecoverySample[] = [];
  const recoveryErrors: { mode: string; rep: number; error: string }[] = [];
  let decodeLateness: Dist | undefined;
  try {
    const promptIds = gws[0].tokenizer
      .encode('Once upon a time, in a small village by the sea, there lived an old fisherman', { addBos: gws[0].addBos })
      .slice(0, 16);
    for (const gw of gws) await gw.run({ promptIds, maxTokens: 3, sampling: { temperature: 0 } });
    // a freshly started swarm (and gateway) is slower per hop for its first thousand or so steps
    // (bench/README.md, session 11): --warmup rounds first, unmeasured, each WARMUP_STREAMS
    // concurrent generations per gateway (one at a time would take minutes on 20-ms links)
    for (let w = 0; w < cfg.warmup; w++)
      await Promise.all(
        gws.flatMap((gw) =>
          Array.from({ length: WARMUP_STREAMS }, () => gw.run({ promptIds, maxTokens: cfg.tokens, sampling: { temperature: 0 } })),
        ),
      );
    await relayLateness(); // a new log: the decode rounds only
    for (let r = 0; r < cfg.rounds; r++) {
      for (const i of r % 2 ? [1, 0] : [0, 1]) {
        const ttft = i === 0 ? firstTokenMs.eager : firstTokenMs.afterOpened;
        const t0 = performance.now();
        let first = true;
        const res = await gws[i].run({
          promptIds,
          maxTokens: cfg.tokens,
          sampling: { temperature: 0 },
          onToken: (t) => {
            if (first) ttft.push(r3(performance.now() - t0));
            first = false;
            if (t.step > 0) samples.push({ ...stepSample(t.timeline), round: r });
          },
        });
        tokensPerRun.push(res.tokens.length);
      }
      const mine = samples.filter((s) => s.round === r);
      const med = dist(mine.map((s) => s.stepMs)).p50;
      console.log(
        `  round ${r + 1}/${cfg.rounds}: median step ${med.toFixed(1)} ms; first token ${firstTokenMs.eager.at(-1)} ms (step behind the OPEN) vs ${firstTokenMs.afterOpened.at(-1)} ms (after OPENED)`,
      );
    }
    decodeLateness = await relayLateness();
    if (cfg.spare) {
      const spare = cfg.spare;
      const all = [...cfg.hops, spare];
      /** nodes killed and not yet back */
      const killed = new Set<string>();
      /** every killed node comes back (same key and address); both gateways forget all bans */
      const heal = async () => {
        for (const h of all) {
          if (!killed.delete(h.peerId)) continue;
          cfg.pids[h.peerId] = await restartNode(h.peerId);
          for (const gw of gws) await gw.host.ping(h.peerId, { addrs: h.addrs }).catch(() => undefined);
        }
        for (const gw of gws) for (const h of all) gw.bans.clear(h.peerId);
      };
      // each gateway sends one short request through the spare first (hop 1 banned meanwhile), so a
      // re-route's open is the session's, not a first dial of the spare's links
      for (const gw of gws) {
        gw.bans.ban(cfg.hops[0]!.peerId);
        await gw
          .run({ promptIds, maxTokens: 2, sampling: { temperature: 0 } })
          .catch((e: Error) => console.log(`  warm-up through the spare failed: ${e.message}`));
        await heal();
      }
      const reference = (await gws[0].run({ promptIds, maxTokens: cfg.tokens, sampling: { temperature: 0 } })).tokens;
      for (let r = 0; r < cfg.recoveries; r++)
        for (const i of r % 2 ? [1, 0] : [0, 1]) {
          const mode = i === 0 ? 'eager' : 'afterOpened';
          try {
            const s = await killHopOne(gws[i], mode, r, promptIds, reference, cfg, killed);
            recoveries.push(s);
            console.log(
              `  recovery ${r + 1}/${cfg.recoveries} ${s.mode}: kill → detected ${s.killToDetectMs} ms, diagnose ${s.diagnoseMs} + open ${s.openMs} + replay ${s.replayMs} ms, kill → next token ${s.killToNextTokenMs} ms${s.sameTokens ? '' : ' (OUTPUT DIFFERS)'}`,
            );
          } catch (e) {
            recoveryErrors.push({ mode, rep: r, error: (e as Error).message });
            console.log(`  recovery ${r + 1}/${cfg.recoveries} ${mode} FAILED: ${(e as Error).message}`);
          }
          await heal();
        }
    }
  } finally {
    for (const gw of gws) await gw.close();
  }
  const over = samples.map((s) => s.stepMs - s.computeMs - (k + 1) * oneWayMs);
  const overCfg = samples.map((s) => s.stepMs - s.computeMs - (k + 1) * p.delayMs);
  const decode = {
    steps: samples.length,
    tokensPerRun,
    stepMs: dist(samples.map((s) => s.stepMs)),
    computeMs: dist(samples.map((s) => s.computeMs)),
    hopComputeMs: dist(samples.map((s) => s.hopComputeMs)),
    hopQueueMs: dist(samples.map((s) => s.hopQueueMs)),
    hopSendMs: dist(samples.map((s) => s.hopSendMs)),
    floorMs: dist(samples.map((s) => s.computeMs + (k + 1) * oneWayMs)),
    overFloorMs: dist(over),
    overFloorConfiguredDelayMs: dist(overCfg),
    transfersPerStep: k + 1,
    perTransferOverheadMs: dist(over.map((x) => x / (k + 1))),
    /** the relay's written − intended ms per chunk: while the RTT was probed (in oneWayMs) and during the decode rounds */
    relayLatenessMs: { idle: idleLateness, decode: decodeLateness },
    /** over-floor less what the relay added per transfer beyond its idle lateness (the emulator's, not odsi's) */
    overFloorLessRelayMs: r3(dist(over).p50 - (k + 1) * Math.max(0, (decodeLateness?.p50 ?? 0) - idleLateness.p50)),
  };
  const target = {
    what: 'median step − (Σ compute + (k+1)·measured one-way delay), ms',
    target: 5,
    value: decode.overFloorMs.p50,
    met: decode.overFloorMs.p50 <= 5,
  };
  console.log(
    `  relay lateness per chunk (written − intended), median / p99: ${idleLateness.p50} / ${idleLateness.p99} ms while probing, ${decodeLateness?.p50} / ${decodeLateness?.p99} ms while decoding; over-floor less the relay's extra: ${decode.overFloorLessRelayMs} ms`,
  );
  console.log(
    `  decode: step ${decode.stepMs.p50} ms (p90 ${decode.stepMs.p90}) = compute ${decode.computeMs.p50} + ${k + 1}×${oneWayMs.toFixed(2)} ms + over-floor ${decode.overFloorMs.p50} ms (p90 ${decode.overFloorMs.p90}, p99 ${decode.overFloorMs.p99}); target ≤ 5 ms: ${target.met ? 'met' : 'MISSED'}`,
  );

  // 3. prefill transfer by wire dtype: extra routes from a second host, same hops, interleaved
  const src = openModel(cfg.modelPath);
  const c = src.config;
  const embed = await createStage(cfg.engine, src, { start: 0, end: 0, embed: true, head: false }, { threads: cfg.threads });
  const host = await createHost({ identity: generateIdentity(), listen: [cfg.listen.replace(`/tcp/${NODE_PORT}`, '/tcp/0')] });
  const routes = await RouteClient.start(host, { streamSpares: cfg.streamSpares });
  const n = cfg.prefillTokens;
  const ids = Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % c.vocabSize);
  const hidden = (await embed.forward({ sessionId: 'prefill', pos: 0, nTokens: n, tokens: ids })).hidden!;
  const bytesPer = { f32: 4, f16: 2, bf16: 2 } as const;
  /** each extra route's open, ms, in order (the first also dials the links) */
  const routeOpenMs: number[] = [];
  /** then cfg.reopens more, each opened and closed before the next */
  const routeReopenMs: number[] = [];
  const prefill: {
    dtype: string;
    /** the gateway's way (StageInput.lastRow): the last hop sends back one row, not n */
    lastRow: boolean;
    /** as the gateway sends a prompt: steps of PROMPT_CHUNK tokens (or --prompt-chunk), CHUNKS_IN_FLIGHT in flight (route/chunked-steps.ts) */
    chunked: boolean;
    rep: number;
    roundTripMs: number;
    computeMs: number;
    transferMs: number;
    bytesPerTransfer: number;
    relL2VsF32: number;
  }[] = [];
  try {
    // one after the other, each timed: the first also dials the gateway's connections (TCP and
    // Noise handshakes over the emulated link); the others reuse them, so theirs is the session
    // open alone (OPEN through the k hops and the result stream back: one stream per link)
    /** a route over the fixed hops, opened and timed into `times` */
    const openTimed = async (sessionId: string, maxTokens: number, times: number[], dtype?: (typeof cfg.dtypes)[number]) => {
      const t0 = performance.now();
      const route = await routes.open({
        modelId: cfg.modelId,
        config: c,
        hops: cfg.hops,
        sessionId,
        maxTokens,
        dtype,
        openTimeoutMs: 60_000,
        stepTimeoutMs: 600_000,
      });
      times.push(r3(performance.now() - t0));
      return route;
    };
    const opened: { dtype: (typeof cfg.dtypes)[number]; route: Awaited<ReturnType<typeof routes.open>> }[] = [];
    for (const dtype of cfg.dtypes)
      opened.push({ dtype, route: await openTimed(`wan-prefill-${dtype}-${process.pid}`, n + 4, routeOpenMs, dtype) });
    console.log(`  route open: ${routeOpenMs.map((ms) => `${ms} ms`).join(', ')} (the first dials the links)`);
    let ref: Float32Array | undefined;
    for (let rep = 0; rep < cfg.prefillReps; rep++) {
      for (const { dtype, route } of opened) {
        // every row back in one step, the last row alone, and the last row with the prompt in
        // pipelined chunks (as the gateway sends it); the order turns each repetition
        const ways = [
          { lastRow: false, chunked: false },
          { lastRow: true, chunked: false },
          { lastRow: true, chunked: true },
        ];
        for (const { lastRow, chunked } of [...ways.slice(rep % 3), ...ways.slice(0, rep % 3)]) {
          const t0 = performance.now();
          const step = { sessionId: route.sessionId, pos: 0, nTokens: n, hidden, lastRow };
          const out = chunked
            ? await forwardInChunks(route, step, { chunk: promptChunk, inFlight: CHUNKS_IN_FLIGHT })
            : await route.forward(step);
          const roundTripMs = performance.now() - t0;
          // Σ over the hops (and chunks) of their compute: with chunks they overlap, so the
          // round trip minus it is no transfer time then
          const computeMs = out.computeMs;
          const y = out.hidden!;
          if (dtype === 'f32' && !lastRow && !ref) ref = Float32Array.from(y);
          const want = ref && (lastRow ? ref.subarray(ref.length - c.dim) : ref);
          let num = 0;
          let den = 0;
          if (want)
            for (let i = 0; i < y.length; i++) {
              num += (y[i]! - want[i]!) ** 2;
              den += want[i]! ** 2;
            }
          prefill.push({
            dtype,
            lastRow,
            chunked,
            rep,
            roundTripMs: r3(roundTripMs),
            computeMs: r3(computeMs),
            transferMs: r3(roundTripMs - computeMs),
            bytesPerTransfer: n * c.dim * bytesPer[dtype],
            relL2VsF32: want ? Math.sqrt(num / den) : NaN,
          });
        }
      }
    }
    for (const { route } of opened) await route.dispose();
    for (let i = 0; i < cfg.reopens; i++) {
      const route = await openTimed(`wan-reopen-${i}-${process.pid}`, 8, routeReopenMs);
      await route.dispose();
    }
    console.log(
      `  route open, again ×${cfg.reopens} (stream spares ${cfg.streamSpares}): ${routeReopenMs.map((ms) => `${ms}`).join(', ')} ms (median ${dist(routeReopenMs).p50}); first token, median: ${dist(firstTokenMs.eager).p50} ms with the step behind the OPEN, ${dist(firstTokenMs.afterOpened).p50} ms after OPENED`,
    );
  } finally {
    await routes.stop();
    await host.stop();
    await embed.dispose();
    src.close();
  }
  const byDtype = cfg.dtypes.flatMap((d) =>
    [
      [false, false],
      [true, false],
      [true, true],
    ].map(([lastRow, chunked]) => {
      const xs = prefill.filter((x) => x.dtype === d && x.lastRow === lastRow && x.chunked === chunked);
      const t = dist(xs.map((x) => x.transferMs));
      const bytes = xs[0]?.bytesPerTransfer ?? 0;
      const ms = (b: number) => ((b * 8) / (rate.median * 1e6)) * 1000;
      return {
        dtype: d,
        lastRow,
        chunked,
        bytesPerTransfer: bytes,
        roundTripMs: dist(xs.map((x) => x.roundTripMs)),
        computeMs: dist(xs.map((x) => x.computeMs)),
        transferMs: t,
        // what the link alone needs: the transfers of the bytes at the measured rate (the last
        // one a single row with lastRow), plus (k+1) one-way delays
        linkFloorMs: r3(k * ms(bytes) + ms(lastRow ? bytes / n : bytes) + (k + 1) * oneWayMs),
        relL2VsF32: dist(
          xs.map((x) => x.relL2VsF32),
          8,
        ).p50,
      };
    }),
  );
  for (const b of byDtype)
    console.log(
      b.chunked
        ? `  prefill ${n} tokens, wire ${b.dtype}, in chunks of ${promptChunk} (${CHUNKS_IN_FLIGHT} in flight), last row back: round trip ${b.roundTripMs.p50} ms (Σ compute ${b.computeMs.p50} ms, overlapping)`
        : `  prefill ${n} tokens, wire ${b.dtype}, ${b.lastRow ? 'last row back' : 'every row back'}: round trip ${b.roundTripMs.p50} ms = Σ compute ${b.computeMs.p50} + ${(b.bytesPerTransfer / 1e3).toFixed(0)} kB × ${b.lastRow ? `${k} transfers + one row` : `${k + 1} transfers`} in ${b.transferMs.p50} ms (link floor ${b.linkFloorMs} ms); output rel. L2 vs f32 ${b.relL2VsF32.toExponential(2)}`,
    );

  writeResult(cfg.out, {
    profile: p,
    link: {
      rtt64B: { ...rtt64, samples: undefined },
      rtt8KB: { ...rtt8k, samples: undefined },
      rateMbit: rate,
      bulkBytes: bulk,
      oneWayMs: r3(oneWayMs),
    },
    decode,
    routeOpenMs,
    routeReopenMs: dist(routeReopenMs),
    routeReopenSamples: routeReopenMs,
    firstTokenMs: { eager: dist(firstTokenMs.eager), afterOpened: dist(firstTokenMs.afterOpened), samples: firstTokenMs },
    recovery: cfg.spare ? { ...summarizeRecoveries(recoveries), errors: recoveryErrors } : undefined,
    prefill: { tokens: n, byDtype, samples: prefill },
    targets: [target],
  });
}

/** One recovery: hop 1 SIGKILLed mid-generation, the route re-routed (replay) to the spare. */
interface RecoverySample {
  mode: 'eager' | 'afterOpened';
  rep: number;
  victim: string;
  /** the kill came after this many tokens */
  killedAfter: number;
  /** kill → the gateway saw the failure (its failure event's detectedAt) */
  killToDetectMs: number;
  /** the reroute event's: diagnose, open (to OPENED), replay (from OPENED to the last chunk's result), their sum */
  diagnoseMs: number;
  openMs: number;
  replayMs: number;
  recoveryMs: number;
  replayedTokens: number;
  routeSessionId: string;
  /** kill → the first token released after the re-route */
  killToNextTokenMs: number;
  /** the output equals an uninterrupted run's */
  sameTokens: boolean;
}

/** Run one generation on `gw` and SIGKILL the node serving its hop 1 after a third of the tokens. */
async function killHopOne(
  gw: import('../src/gateway/gateway.js').Gateway,
  mode: RecoverySample['mode'],
  rep: number,
  promptIds: number[],
  reference: number[],
  cfg: InnerConfig,
  /** the victim is added here */
  killed: Set<string>,
): Promise<RecoverySample> {
  // the gateway's steps run up to PIPELINE_DEPTH ahead of its released tokens: kill with steps left
  const killAfter = Math.max(2, Math.floor(cfg.tokens / 3));
  const tokenAt: number[] = [];
  let killAt = 0;
  let victim = '';
  const res = await gw.run({
    promptIds,
    maxTokens: cfg.tokens,
    sampling: { temperature: 0 },
    onToken: (t) => {
      tokenAt.push(Date.now());
      if (tokenAt.length !== killAfter) return;
      victim = t.route[0]!.peerId;
      process.kill(cfg.pids[victim]!, 'SIGKILL');
      killAt = Date.now();
      killed.add(victim);
    },
  });
  const fail = res.events.find((e) => e.type === 'failure');
  const re = res.events.find((e) => e.type === 'reroute');
  if (!fail || fail.type !== 'failure' || !re || re.type !== 'reroute')
    throw new Error(`no re-route recorded: ${JSON.stringify(res.events)}`);
  const next = tokenAt.find((at) => at >= re.at);
  return {
    mode,
    rep,
    victim,
    killedAfter: killAfter,
    killToDetectMs: fail.detectedAt - killAt,
    diagnoseMs: re.diagnoseMs,
    openMs: re.openMs,
    replayMs: re.replayMs,
    recoveryMs: re.recoveryMs,
    replayedTokens: re.replayedTokens,
    routeSessionId: re.routeSessionId,
    killToNextTokenMs: next === undefined ? NaN : next - killAt,
    sameTokens: res.tokens.join() === reference.join(),
  };
}

/** One request to the outer process over IPC; resolves with the first reply `pick` takes. */
function askOuter<T>(request: object, pick: (m: Record<string, unknown>) => T | undefined, what: string, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} within ${timeoutMs / 1000} s`)), timeoutMs);
    const onMessage = (m: Record<string, unknown>) => {
      const got = pick(m);
      if (got === undefined) return;
      clearTimeout(timer);
      process.off('message', onMessage);
      resolve(got);
    };
    process.on('message', onMessage);
    process.send!(request);
  });
}

/** The relay's lateness (written − intended ms per chunk, bench/lib/wan-relay.ts) since the last ask, which starts a new log. */
function relayLateness(): Promise<Dist> {
  return askOuter({ lateness: true }, (m) => m.relayLateness as Dist | undefined, 'no lateness from the relay', 10_000);
}

/** Ask the outer process to start the killed node again; resolves with its new pid. */
async function restartNode(peerId: string): Promise<number> {
  const m = await askOuter({ restart: peerId }, (x) => (x.restarted === peerId ? x : undefined), `node ${peerId} not restarted`, 300_000);
  if (m.error || typeof m.pid !== 'number') throw new Error(`restart of ${peerId} failed: ${String(m.error)}`);
  return m.pid;
}

function summarizeRecoveries(xs: RecoverySample[]) {
  const by = (mode: RecoverySample['mode']) => {
    const m = xs.filter((x) => x.mode === mode);
    return {
      n: m.length,
      killToDetectMs: dist(m.map((x) => x.killToDetectMs)),
      diagnoseMs: dist(m.map((x) => x.diagnoseMs)),
      openMs: dist(m.map((x) => x.openMs)),
      replayMs: dist(m.map((x) => x.replayMs)),
      openPlusReplayMs: dist(m.map((x) => x.openMs + x.replayMs)),
      recoveryMs: dist(m.map((x) => x.recoveryMs)),
      killToNextTokenMs: dist(m.map((x) => x.killToNextTokenMs)),
      allSameTokens: m.every((x) => x.sameTokens),
    };
  };
  // paired per repetition: after OPENED − eager
  const reps = [...new Set(xs.map((x) => x.rep))];
  const pair = (f: (x: RecoverySample) => number) =>
    dist(
      reps.flatMap((r) => {
        const e = xs.find((x) => x.rep === r && x.mode === 'eager');
        const a = xs.find((x) => x.rep === r && x.mode === 'afterOpened');
        return e && a ? [f(a) - f(e)] : [];
      }),
    );
  return {
    what: 'hop 1 SIGKILLed after a third of the tokens; re-route with replay to a spare serving its layers; re-routes opened eagerly vs after OPENED, interleaved, order flipped per repetition',
    eager: by('eager'),
    afterOpened: by('afterOpened'),
    savedOpenPlusReplayMs: pair((x) => x.openMs + x.replayMs),
    savedKillToNextTokenMs: pair((x) => x.killToNextTokenMs),
    samples: xs,
  };
}

const main = args.inner ? () => inner(args.inner!) : outer;
const onSignal = (sig: NodeJS.Signals) => {
  current?.destroySync();
  process.exit(sig === 'SIGINT' ? 130 : 143);
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);
process.once('exit', () => current?.destroySync());
main().then(
  () => process.exit(0),
  (e) => {
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    current?.destroySync();
    process.exit(1);
  },
);
