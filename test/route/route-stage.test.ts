// Route over real libp2p hosts in one process (loopback): hidden states through a 1-hop and a
// 2-hop chain equal a local stage's output bit for bit; timelines, deadlines, wrong model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { RouteError } from '../../src/route/route-stage.js';
import { RouteClient } from '../../src/route/route-client.js';
import { forwardInChunks } from '../../src/route/chunked-steps.js';
import { mergeTimelines } from '../../src/route/merge-timelines.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { modelIdentity } from '../../src/model/identity.js';
import { Channel } from '../../src/p2p/channel.js';
import { ACT_PROTOCOL, MsgType, RESULT_PROTOCOL } from '../../src/protocol/messages.js';
import { peerIdFromString } from '@libp2p/peer-id';
import { NodeServer } from '../../src/node/server.js';
import { PerfMeter } from '../../src/node/perf.js';
import { DEFAULT_PEER_LIMITS, PeerLimits } from '../../src/node/peer-limits.js';
import { NodeStamper } from '../../src/accountability/node/stamper.js';
import { CryptoPool } from '../../src/accountability/records/crypto-pool.js';
import { deploymentDomain } from '../../src/accountability/records/wire.js';
import { createStage } from '../../src/engine/create.js';
import { openModel } from '../../src/model/load.js';
import type { Stage } from '../../src/engine/types.js';
import type { WeightSource } from '../../src/model/types.js';
import type { StepVerifier } from '../../src/route/step-verifier.js';
import type { SignedReceipt } from '../../src/accountability/records/receipts.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { findLibDir } from '../../src/engine/llama/ffi.js';

let src: WeightSource;
let gw: OdsiHost;
let routes: RouteClient;
const nodes: { host: OdsiHost; server: NodeServer; stage: Stage; stamper: NodeStamper }[] = [];
const MODEL = 'test-model';
const crypto = new CryptoPool({ worker: true });
/** accountable, as `odsi node` is by default */
const stamperOf = (host: OdsiHost) => new NodeStamper({ host, domain: deploymentDomain(process.env), crypto });

async function startNode(
  start: number,
  end: number,
  opts: { msPerToken?: number; computeDelayMs?: number; wrap?: (s: Stage) => Stage; modelId?: string } = {},
) {
  const host = await createHost({ identity: generateIdentity() });
  const stage = await createStage('reference', src, { start, end, embed: false, head: false });
  const stamper = stamperOf(host);
  const server = new NodeServer({
    host,
    stage: opts.wrap ? opts.wrap(stage) : opts.computeDelayMs ? slowed(stage, opts.computeDelayMs) : stage,
    modelId: opts.modelId ?? MODEL,
    stamper,
    perf: new PerfMeter({ msPerToken: opts.msPerToken ?? 0.1, prefillMsPerToken: 0.1 }),
    kvBudgetTokens: 4096,
  });
  await server.start();
  nodes.push({ host, server, stage, stamper });
  return { host, server, stage, stamper };
}

/** `stage`, each forward taking at least `ms` (a node whose compute outlasts the upstream's receipts) */
function slowed(stage: Stage, ms: number): Stage {
  const s = Object.create(stage) as Stage;
  s.forward = async (input) => {
    await new Promise((r) => setTimeout(r, ms));
    return stage.forward(input);
  };
  s.forwardBatch = undefined;
  return s;
}
const hopOf = (n: { host: OdsiHost; stage: Stage }) => ({
  peerId: n.host.peerId,
  addrs: n.host.addrs(),
  start: n.stage.range.start,
  end: n.stage.range.end,
});

function input(nTokens: number, dim: number, seed = 1): Float32Array {
  const x = new Float32Array(nTokens * dim);
  let s = seed;
  for (let i = 0; i < x.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = (s / 2 ** 32 - 0.5) * 0.5;
  }
  return x;
}

before(async () => {
  src = openModel(STORIES_GGUF);
  gw = await createHost({ identity: generateIdentity() });
  routes = await RouteClient.start(gw);
});
after(async () => {
  for (const n of nodes) {
    await n.server.stop();
    await n.host.stop();
    await n.stage.dispose();
  }
  await gw?.stop();
  src?.close();
});

test('1-hop and 2-hop routes return the same hidden states as a local stage', async () => {
  const dim = src.config.dim;
  const local = await createStage('reference', src, { start: 0, end: 5, embed: false, head: false });
  const a = await startNode(0, 5);
  const b = await startNode(0, 3);
  const c = await startNode(3, 5);
  const x = input(4, dim);
  const y = input(1, dim, 7);
  const want1 = (await local.forward({ sessionId: 'L', pos: 0, nTokens: 4, hidden: x })).hidden!;
  const want2 = (await local.forward({ sessionId: 'L', pos: 4, nTokens: 1, hidden: y })).hidden!;
  for (const hops of [[hopOf(a)], [hopOf(b), hopOf(c)]]) {
    const r = await routes.open({ modelId: MODEL, config: src.config, hops, sessionId: `s-${hops.length}` });
    assert.deepEqual(r.range, { start: 0, end: 5, embed: false, head: false });
    const o1 = await r.forward({ sessionId: r.sessionId, pos: 0, nTokens: 4, hidden: x });
    assert.deepEqual(o1.hidden, want1);
    const o2 = await r.forward({ sessionId: r.sessionId, pos: 4, nTokens: 1, hidden: y });
    assert.deepEqual(o2.hidden, want2);
    assert.equal(r.lastTimeline.length, hops.length);
    assert.deepEqual(
      r.lastTimeline.map((t) => t.peerId),
      hops.map((h) => h.peerId),
    );
    assert.ok(r.lastTimeline.every((t) => t.computeMs >= 0 && t.budgetInMs === -1));
    assert.equal(r.sessionLength(), 5);
    await r.dispose();
  }
  await local.dispose();
  // sessions are freed on every hop after CLOSE
  await new Promise((res) => setTimeout(res, 200));
  for (const n of [a, b, c]) assert.equal(n.server.load, 0);
});

test('lastRow: the last hop returns only the last row and signs "+last"; every row still filled the caches', async () => {
  const dim = src.config.dim;
  const local = await createStage('reference', src, { start: 0, end: 5, embed: false, head: false });
  const hs = [await startNode(0, 2), await startNode(2, 5)];
  const x = input(6, dim, 3);
  const y = input(1, dim, 9);
  const want1 = (await local.forward({ sessionId: 'L', pos: 0, nTokens: 6, hidden: x })).hidden!;
  const want2 = (await local.forward({ sessionId: 'L', pos: 6, nTokens: 1, hidden: y })).hidden!;
  await local.dispose();
  // the production verifier interface, here only keeping each step's chain
  const chains: { profile: string; nTokens: number }[][] = [];
  const verifier: StepVerifier = {
    afterStep: async (v) => {
      chains.push((v.header.receipts as SignedReceipt[]).map((r) => r.record));
      return undefined;
    },
  };
  const r = await routes.open({ modelId: MODEL, config: src.config, hops: hs.map(hopOf), sessionId: 'last-row', verifier });
  const o1 = await r.forward({ sessionId: r.sessionId, pos: 0, nTokens: 6, hidden: x, lastRow: true });
  await o1.settled;
  assert.deepEqual(o1.hidden, want1.subarray(5 * dim), 'one row: the last of the local stage');
  const o2 = await r.forward({ sessionId: r.sessionId, pos: 6, nTokens: 1, hidden: y, lastRow: true });
  await o2.settled;
  assert.deepEqual(o2.hidden, want2, 'the decode step after it reads every cached row');
  assert.deepEqual(
    chains.map((c) => c.map((rec) => rec.profile)),
    [
      ['reference', 'reference+last'],
      ['reference', 'reference'],
    ],
    'only the last hop of a lastRow step with more than one token signs +last',
  );
  assert.deepEqual(
    chains[0]!.map((rec) => rec.nTokens),
    [6, 6],
  );
  await r.dispose();
});

/**
 * A last hop that ignores lastRow, played on a raw libp2p host (as a hop before it that cleared
 * the unsigned flag would make an honest one do): OPENED, then for each STEP a RESULT echoing its
 * rows, `rows` of them (default: all).
 */
async function echoHop(rows?: number) {
  const host = await createHost({ identity: generateIdentity() });
  await host.libp2p.handle(ACT_PROTOCOL, (stream, conn) => {
    let back: Promise<Channel> | undefined;
    new Channel(stream, conn.remotePeer.toString(), host.peerId, {
      onMessage: (m) => {
        if (m.type === MsgType.OPEN) {
          const h = m.header;
          back = host.libp2p.dialProtocol(peerIdFromString(h.reply.peerId), RESULT_PROTOCOL).then((st) => {
            const ch = new Channel(st, h.reply.peerId, host.peerId, { onMessage: () => undefined });
            void ch.send({ type: MsgType.OPENED, header: { sessionId: h.sessionId, peers: [host.peerId] } });
            return ch;
          });
        } else if (m.type === MsgType.STEP) {
          const h = m.header;
          const n = rows ?? h.nTokens;
          const header = { ...h, lastRow: undefined, shape: [n, h.shape[1]!] };
          void back?.then((ch) =>
            ch.send({ type: MsgType.RESULT, header, payload: m.payload.subarray(m.payload.length - (m.payload.length / h.nTokens) * n) }),
          );
        }
      },
    });
  });
  return { host, hop: { peerId: host.peerId, addrs: host.addrs(), start: 0, end: 5 } };
}

test('lastRow asked: a RESULT of every row is taken (its last row), any other shape is bad_reply naming the last hop', async () => {
  const dim = src.config.dim;
  const x = input(5, dim, 4);
  for (const [rows, ok] of [
    [undefined, true],
    [1, true],
    [2, false],
  ] as const) {
    const { host, hop } = await echoHop(rows);
    try {
      const r = await routes.open({ modelId: MODEL, config: src.config, hops: [hop], sessionId: `echo-${rows ?? 'all'}` });
      const out = r.forward({ sessionId: r.sessionId, pos: 0, nTokens: 5, hidden: x, lastRow: true });
      if (ok) assert.deepEqual((await out).hidden, x.subarray(4 * dim), `${rows ?? 5} rows back: the last row`);
      else
        await assert.rejects(
          out,
          (e: unknown) =>
            e instanceof RouteError && e.code === 'bad_reply' && e.peerId === hop.peerId && /does not match \[1 or 5,/.test(e.message),
        );
      await r.dispose();
    } finally {
      await host.stop();
    }
  }
});

test('a long input as pipelined chunks: the same rows, and a hop starts the next chunk while the one after it computes', async () => {
  const dim = src.config.dim;
  const local = await createStage('reference', src, { start: 0, end: 5, embed: false, head: false });
  const x = input(10, dim, 12);
  const want = (await local.forward({ sessionId: 'L', pos: 0, nTokens: 10, hidden: x })).hidden!;
  await local.dispose();
  // each hop records when it starts and ends a step (its input's first token position)
  const seen: string[] = [];
  const logged = (name: string, ms: number) => (stage: Stage) => {
    const s = Object.create(stage) as Stage;
    s.forward = async (i) => {
      seen.push(`${name} start ${i.pos}`);
      await new Promise((r) => setTimeout(r, ms));
      const out = await stage.forward(i);
      seen.push(`${name} end ${i.pos}`);
      return { ...out, computeMs: ms }; // a fixed figure for the timelines
    };
    s.forwardBatch = undefined;
    return s;
  };
  const hs = [await startNode(0, 2, { wrap: logged('h0', 20) }), await startNode(2, 5, { wrap: logged('h1', 80) })];
  const r = await routes.open({ modelId: MODEL, config: src.config, hops: hs.map(hopOf), sessionId: 'chunked' });
  const all = await forwardInChunks(r, { sessionId: r.sessionId, pos: 0, nTokens: 10, hidden: x }, { chunk: 4, inFlight: 2 });
  assert.deepEqual(all.hidden, want, 'every row, as one step gives them');
  assert.equal(r.sessionLength(), 10);
  // pipelined: hop 0 took the second chunk (position 4) before hop 1 was done with the first
  assert.ok(seen.indexOf('h0 start 4') < seen.indexOf('h1 end 0'), seen.join(', '));
  // at most 2 in flight: the third chunk (position 8) left the gateway after the first's result
  assert.ok(seen.indexOf('h0 start 8') > seen.indexOf('h1 end 0'), seen.join(', '));
  // each chunk's own timeline, and the hops' timings of the whole input (what its token shows)
  assert.deepEqual(
    all.chunks.map((c) => c.timeline.map((t) => t.computeMs)),
    [
      [20, 80],
      [20, 80],
      [20, 80],
    ],
  );
  const whole = mergeTimelines(all.chunks.map((c) => c.timeline));
  assert.deepEqual(
    whole.map((t) => [t.peerId, t.computeMs]),
    [
      [hs[0]!.host.peerId, 60],
      [hs[1]!.host.peerId, 240],
    ],
  );
  const last = await forwardInChunks(
    r,
    { sessionId: r.sessionId, pos: 0, nTokens: 10, hidden: x, lastRow: true },
    { chunk: 4, inFlight: 4 },
  );
  assert.deepEqual(last.hidden, want.subarray(9 * dim), "lastRow: the last chunk's last row");
  assert.deepEqual(
    hs.map((n) => n.server.stats.steps),
    [6, 6],
  );
  await r.dispose();
});

test("a chunked prompt's first token shows each hop's compute over all its chunks (production Gateway)", { timeout: 60_000 }, async () => {
  // each hop reports a fixed compute per step, so the first token's timeline says how many steps it summed
  const fixed = (ms: number) => (stage: Stage) => {
    const s = Object.create(stage) as Stage;
    s.forward = async (i) => ({ ...(await stage.forward(i)), computeMs: ms });
    s.forwardBatch = undefined;
    return s;
  };
  const { modelId } = modelIdentity(src);
  const hs = [await startNode(0, 2, { wrap: fixed(7), modelId }), await startNode(2, 5, { wrap: fixed(11), modelId })];
  const peers = hs.map((n) => ({ ...hopOf(n), msPerToken: 1, load: 0, freeKvTokens: 1e6 }));
  // 24 tokens: one node iteration as one step (a node computes up to 32 prompt tokens per iteration), three steps in chunks of 8
  const promptIds = Array.from({ length: 24 }, (_, i) => 1 + ((i * 37) % 500));
  const firstHops = async (promptChunk?: number) => {
    const g = await Gateway.start({
      modelPath: STORIES_GGUF,
      engine: 'reference',
      peers,
      accountability: { enabled: true, auditRate: 0 },
      promptChunk,
    });
    try {
      let hops: { node: string; computeMs: number }[] = [];
      await g.run({
        promptIds,
        maxTokens: 2,
        sampling: { temperature: 0 },
        onToken: (t) => {
          if (t.step === 0) hops = t.timeline.hops.filter((h) => h.role === 'layers');
        },
      });
      return hops.map((h) => [h.node, h.computeMs]);
    } finally {
      await g.close();
    }
  };
  const ids = hs.map((n) => n.host.peerId);
  assert.deepEqual(await firstHops(8), [
    [ids[0], 21],
    [ids[1], 33],
  ]);
  // the same prompt as one step
  assert.deepEqual(await firstHops(0), [
    [ids[0], 7],
    [ids[1], 11],
  ]);
});

test('eager open: the first step goes right behind the OPEN and returns what it returns after OPENED; a refused open fails it', async () => {
  const dim = src.config.dim;
  const [, b, c] = nodes; // the 2-hop chain of the first test
  const hops = [hopOf(b!), hopOf(c!)];
  const x = input(4, dim, 3);
  const waited = await routes.open({ modelId: MODEL, config: src.config, hops, sessionId: 'lazy-ref' });
  const want = (await waited.forward({ sessionId: waited.sessionId, pos: 0, nTokens: 4, hidden: x })).hidden!;
  await waited.dispose();
  const r = await routes.open({ modelId: MODEL, config: src.config, hops, sessionId: 'eager', eager: true });
  assert.equal(r.isUp, false, 'open() returned before the chain came up');
  const out = await r.forward({ sessionId: r.sessionId, pos: 0, nTokens: 4, hidden: x });
  assert.equal(r.isUp, true);
  assert.deepEqual(out.hidden, want);
  await r.dispose();
  // refused by the second hop (wrong layers): the step sent behind the OPEN fails with the open's error
  const bad = await routes.open({
    modelId: MODEL,
    config: src.config,
    hops: [hops[0]!, { ...hops[1]!, end: 4 }],
    sessionId: 'eager-bad',
    eager: true,
  });
  await assert.rejects(
    bad.forward({ sessionId: bad.sessionId, pos: 0, nTokens: 4, hidden: x }),
    (e: unknown) => e instanceof RouteError && e.remoteCode === 'wrong_layers' && e.peerId === c!.host.peerId,
  );
  await assert.rejects(bad.ready, (e: unknown) => e instanceof RouteError && e.remoteCode === 'wrong_layers');
  assert.equal(bad.openError?.remoteCode, 'wrong_layers');
  // the next hop is gone: the step behind the OPEN waits at the first hop until its dial failed,
  // and fails with that (naming the unreachable peer, not the first hop)
  const gone = await createHost({ identity: generateIdentity() });
  const goneHop = { peerId: gone.peerId, addrs: gone.addrs(), start: 3, end: 5 };
  await gone.stop();
  const dead = await routes.open({ modelId: MODEL, config: src.config, hops: [hops[0]!, goneHop], sessionId: 'eager-dead', eager: true });
  await assert.rejects(
    dead.forward({ sessionId: dead.sessionId, pos: 0, nTokens: 4, hidden: x }),
    (e: unknown) => e instanceof RouteError && e.code === 'unreachable' && e.peerId === gone.peerId,
  );
  await new Promise((res) => setTimeout(res, 200));
  for (const n of [b!, c!]) assert.equal(n.server.load, 0, 'no session left behind');
});

test('receipts: signed only after the output left (after the I/O of the tick that sent it), even when custody was checked while the stage computed; every chain checks', async () => {
  const dim = src.config.dim;
  // the middle hop computes for 150 ms: the first hop's receipts arrive and are checked meanwhile
  // (a wide window: on a loaded machine the check can take tens of ms), so its receipt could be
  // signed before its output is sent; it must not be (signing would hold the output back)
  const hs = [await startNode(0, 2), await startNode(2, 4, { computeDelayMs: 150 }), await startNode(4, 5)];
  const next = hs[2]!.host.peerId; // only the middle hop sends STEPs to it
  /** the middle hop's outputs sent, by step, and those whose tick's I/O is still to come */
  const sent = new Set<number>();
  const ioPending = new Set<number>();
  const send = Channel.prototype.send;
  Channel.prototype.send = function (this: Channel, m) {
    if (m.type === MsgType.STEP && this.remotePeer === next) {
      const step = m.header.step;
      sent.add(step);
      ioPending.add(step);
      setImmediate(() => ioPending.delete(step));
    }
    return send.call(this, m);
  };
  const signs: { step: number; outputSent: boolean; ioDone: boolean }[] = [];
  const sign = hs[1]!.stamper.sign.bind(hs[1]!.stamper);
  hs[1]!.stamper.sign = (f) => {
    signs.push({ step: f.header.step, outputSent: sent.has(f.header.step), ioDone: !ioPending.has(f.header.step) });
    return sign(f);
  };
  const steps = 6;
  try {
    const r = await routes.open({ modelId: MODEL, config: src.config, hops: hs.map(hopOf), sessionId: 'after-output' });
    for (let p = 0; p < steps; p++) await r.forward({ sessionId: r.sessionId, pos: p, nTokens: 1, hidden: input(1, dim, 40 + p) });
    // (this route has no verifier: it does not wait for the last step's receipts before closing)
    for (let t = 0; t < 100 && hs[2]!.stamper.stats.receiptsSigned < steps; t++) await new Promise((res) => setTimeout(res, 20));
    await r.dispose();
  } finally {
    Channel.prototype.send = send;
  }
  assert.deepEqual(
    signs,
    Array.from({ length: steps }, (_, step) => ({ step, outputSent: true, ioDone: true })),
    'each receipt of the middle hop is signed after its output was sent and the I/O of that tick was done',
  );
  // the hops after them took every chain as valid
  assert.deepEqual(
    hs.slice(1).map((n) => [n.stamper.stats.receiptsChecked, n.stamper.stats.custodyRejected]),
    [
      [steps, 0],
      [steps, 0],
    ],
  );
  assert.deepEqual(
    hs.map((n) => n.stamper.stats.receiptsSigned),
    [steps, steps, steps],
  );
  assert.deepEqual(
    hs.map((n) => n.server.stats.errors),
    [0, 0, 0],
  );
});

test('deadline: slack is reported, and a hop that cannot make it refuses at once', async () => {
  const dim = src.config.dim;
  const slow = await startNode(0, 2, { msPerToken: 10_000 });
  const fast = nodes[1]!; // 0:3 from the previous test
  void fast;
  const a = await startNode(2, 5);
  const r = await routes.open({
    modelId: MODEL,
    config: src.config,
    hops: [hopOf(nodes[1]!), hopOf(nodes[2]!)],
    sessionId: 'dl-ok',
    deadlineMs: 5000,
  });
  await r.forward({ sessionId: 'dl-ok', pos: 0, nTokens: 1, hidden: input(1, dim) });
  assert.equal(r.lastTimeline.length, 2);
  assert.equal(r.lastTimeline[0]!.budgetInMs, 5000);
  assert.ok(r.lastTimeline[0]!.slackMs < 5000 && r.lastTimeline[0]!.slackMs > 0);
  assert.equal(r.lastTimeline[1]!.budgetInMs, r.lastTimeline[0]!.slackMs);
  await r.dispose();
  const r2 = await routes.open({ modelId: MODEL, config: src.config, hops: [hopOf(slow), hopOf(a)], sessionId: 'dl-miss', deadlineMs: 50 });
  const t0 = performance.now();
  await assert.rejects(r2.forward({ sessionId: 'dl-miss', pos: 0, nTokens: 1, hidden: input(1, dim) }), (e: unknown) => {
    assert.ok(e instanceof RouteError);
    assert.equal(e.code, 'deadline');
    assert.equal(e.peerId, slow.host.peerId);
    return true;
  });
  assert.ok(performance.now() - t0 < 2000);
  await r2.dispose();
});

/** a node serving `stage` (all of stories260K), its KV budget far above what the stage holds
 *  unless given; `owned` is the stage to dispose of at the end, when `stage` wraps it */
async function nodeOn(stage: Stage, o: { kvBudgetTokens?: number; owned?: Stage; limits?: PeerLimits } = {}) {
  const host = await createHost({ identity: generateIdentity() });
  const stamper = stamperOf(host);
  const server = new NodeServer({
    host,
    stage,
    modelId: MODEL,
    stamper,
    perf: new PerfMeter({ msPerToken: 0.1, prefillMsPerToken: 0.1 }),
    kvBudgetTokens: o.kvBudgetTokens ?? 100_000,
    limits: o.limits,
  });
  await server.start();
  nodes.push({ host, server, stage: o.owned ?? stage, stamper });
  return { server, hop: hopOf({ host, stage }) };
}

test('steps a hop never answers time out, each after its own wait (one sweep timer per route)', { timeout: 10_000 }, async () => {
  const dim = src.config.dim;
  // a node whose stage takes steps and never finishes them
  const real = await createStage('reference', src, { start: 0, end: 5, embed: false, head: false });
  const never = () => new Promise<never>(() => {});
  const stage = new Proxy(real, { get: (t, k) => (k === 'forward' || k === 'forwardBatch' ? never : Reflect.get(t, k)) }) as Stage;
  const { hop } = await nodeOn(stage, { kvBudgetTokens: 4096, owned: real });
  const r = await routes.open({
    modelId: MODEL,
    config: src.config,
    hops: [hop],
    sessionId: 'hung',
    stepTimeoutMs: 400,
  });
  const t0 = performance.now();
  const timedOut = (step: number) => (e: unknown) => {
    assert.ok(e instanceof RouteError, String(e));
    assert.equal(e.code, 'timeout');
    assert.match(e.message, new RegExp(`no result for step ${step} within 400 ms`));
    return true;
  };
  const first = assert
    .rejects(r.forward({ sessionId: 'hung', pos: 0, nTokens: 1, hidden: input(1, dim) }), timedOut(0))
    .then(() => performance.now() - t0);
  await new Promise((res) => setTimeout(res, 250));
  const second = assert
    .rejects(r.forward({ sessionId: 'hung', pos: 1, nTokens: 1, hidden: input(1, dim) }), timedOut(1))
    .then(() => performance.now() - t0);
  const [a, b] = await Promise.all([first, second]);
  // each by its own deadline, not both at the first one's, nor later than needed
  assert.ok(a >= 350 && a < 2000, `step 0 failed after ${a.toFixed(0)} ms`);
  assert.ok(b >= 600 && b < 2500, `step 1 failed after ${b.toFixed(0)} ms`);
  assert.ok(b - a >= 150, `step 1 waited its own 400 ms (${(b - a).toFixed(0)} ms after step 0)`);
  await r.dispose();
});

test('wrong model id and wrong layers are refused with the failing peer named', async () => {
  const n = nodes[0]!;
  await assert.rejects(routes.open({ modelId: 'other-model', config: src.config, hops: [hopOf(n)], sessionId: 'wm' }), (e: unknown) => {
    assert.ok(e instanceof RouteError);
    assert.equal(e.remoteCode, 'wrong_model');
    assert.equal(e.peerId, n.host.peerId);
    return true;
  });
  await assert.rejects(
    routes.open({ modelId: MODEL, config: src.config, hops: [{ ...hopOf(n), end: 4 }], sessionId: 'wl' }),
    (e: unknown) => e instanceof RouteError && e.remoteCode === 'wrong_layers',
  );
});

test('bad input on a raw stream: clear errors, stream usable after message errors', async () => {
  const n = nodes[0]!;
  const { peerIdFromString } = await import('@libp2p/peer-id');
  const { Channel } = await import('../../src/p2p/channel.js');
  const { ACT_PROTOCOL, MsgType } = await import('../../src/protocol/messages.js');
  const stream = await gw.libp2p.dialProtocol(peerIdFromString(n.host.peerId), ACT_PROTOCOL);
  const got: { type: number; header: { code?: string; reason?: string } }[] = [];
  const ch = new Channel(stream, n.host.peerId, gw.peerId, { onMessage: (m) => got.push(m as never) });
  const wait = async (k: number) => {
    for (let i = 0; i < 100 && got.length < k; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(got.length >= k, `expected ${k} replies, got ${got.length}`);
  };
  await ch.send({ type: MsgType.CLOSE, header: { sessionId: 'nope' } });
  await wait(1);
  assert.equal(got[0]!.header.code, 'unknown_session');
  await ch.send({ type: MsgType.CLOSE, header: { sessionId: '' } });
  await wait(2);
  assert.equal(got[1]!.header.code, 'bad_message');
  assert.match(got[1]!.header.reason!, /sessionId/);
  await ch.close();
});

const refusedBusy = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof RouteError);
  assert.equal(e.remoteCode, 'busy');
  assert.match(e.message, re);
  return true;
};

test("the engine's own capacity bounds admission: what its KV budget holds (ORT: four fifths), reservations counted as the engine allocates them", async () => {
  const range = { start: 0, end: 5, embed: false, head: false };
  const stage = await createStage('ort', src, range, { threads: 1, kvBudgetBytes: 400_000 });
  const perToken = 2 * 5 * src.config.nKvHeads * src.config.headDim * 4;
  const holds = Math.floor((400_000 * 0.8) / perToken);
  assert.deepEqual(stage.capacity, { kvTokens: holds, chunkTokens: 64, kvBytesPerToken: perToken });
  const { server, hop } = await nodeOn(stage);
  assert.equal(server.kvBudgetTokens, holds);
  const r1 = await routes.open({ modelId: MODEL, config: src.config, hops: [hop], sessionId: 'cap-1', maxTokens: 190 });
  await r1.forward({ sessionId: 'cap-1', pos: 0, nTokens: 3, hidden: input(3, src.config.dim) });
  // 190 tokens take 192 as the engine allocates (chunks of 64); 20 more would take another 64
  assert.equal(server.freeKvTokens, holds - 192);
  await assert.rejects(
    routes.open({ modelId: MODEL, config: src.config, hops: [hop], sessionId: 'cap-2', maxTokens: 20 }),
    refusedBusy(new RegExp(`KV memory full: ${holds - 192} of ${holds} tokens free, session asks for 20 \\(64 as the engine allocates\\)`)),
  );
  await r1.dispose();
  for (let i = 0; i < 50 && server.load > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.freeKvTokens, holds);
});

test("a peer's KV share counts its reservations as the engine allocates them (tiny sessions cannot pass it)", async () => {
  const stage = await createStage('ort', src, { start: 0, end: 5, embed: false, head: false }, { threads: 1, kvBudgetBytes: 400_000 });
  const holds = stage.capacity!.kvTokens!;
  const { server, hop } = await nodeOn(stage, { limits: new PeerLimits({ ...DEFAULT_PEER_LIMITS, maxKvShare: 0.25 }) });
  const share = Math.floor(holds * 0.25);
  const open = (id: string) => routes.open({ modelId: MODEL, config: src.config, hops: [hop], sessionId: id, maxTokens: 10 });
  // a peer's first session is always admitted; a second of 10 tokens takes another 64 of its share
  const a = await open('tiny-1');
  await assert.rejects(
    open('tiny-2'),
    refusedBusy(new RegExp(`per-peer limit: .* holds 64 KV tokens, session asks for 64, at most ${share} per peer`)),
  );
  await a.dispose();
  for (let i = 0; i < 50 && server.load > 0; i++) await new Promise((r) => setTimeout(r, 20));
  // released as counted: the peer may open one again
  const b = await open('tiny-3');
  await b.dispose();
});

test(
  "the engine's own capacity bounds admission: llama.cpp's sequences and KV cells",
  { skip: findLibDir() ? false : 'llama.cpp platform package is not installed' },
  async () => {
    const range = { start: 0, end: 5, embed: false, head: false };
    // f32 KV: 1,280 bytes a cell over 5 layers, so 400 kB hold 312 cells (llama.cpp allocates them at load)
    const stage = await createStage('llama', src, range, { threads: 1, maxSessions: 2, kvBudgetBytes: 400_000 });
    assert.deepEqual(stage.capacity, { kvTokens: 312, sessions: 2, kvBytesPerToken: 1280 });
    const { server, hop } = await nodeOn(stage);
    assert.equal(server.kvBudgetTokens, 312);
    const open = (id: string, maxTokens: number) =>
      routes.open({ modelId: MODEL, config: src.config, hops: [hop], sessionId: id, maxTokens });
    const a = await open('ll-1', 100);
    const b = await open('ll-2', 100);
    // a third session would fail in llama.cpp at its first step (no free sequence): refused at OPEN instead
    await assert.rejects(open('ll-3', 10), refusedBusy(/the stage holds at most 2 sessions at once/));
    for (const [id, r] of [
      ['ll-1', a],
      ['ll-2', b],
    ] as const)
      await r.forward({ sessionId: id, pos: 0, nTokens: 2, hidden: input(2, src.config.dim) });
    await a.dispose();
    for (let i = 0; i < 50 && server.load > 1; i++) await new Promise((r) => setTimeout(r, 20));
    await assert.rejects(open('ll-4', 300), refusedBusy(/KV memory full: 212 of 312 tokens free/));
    const c = await open('ll-5', 200);
    await c.forward({ sessionId: 'll-5', pos: 0, nTokens: 4, hidden: input(4, src.config.dim) });
    await c.dispose();
    await b.dispose();
  },
);

test('KV budget: a full node refuses with busy; idle sessions are freed', async () => {
  const stage = await createStage('reference', src, { start: 0, end: 5, embed: false, head: false });
  // the reference engine's caches are f32, grown in chunks of 64 positions
  assert.deepEqual(stage.capacity, { chunkTokens: 64, kvBytesPerToken: 2 * 5 * src.config.nKvHeads * src.config.headDim * 4 });
  const { server, hop } = await nodeOn(stage, { kvBudgetTokens: 150 });
  const r1 = await routes.open({ modelId: MODEL, config: src.config, hops: [hop], sessionId: 'kv-1', maxTokens: 100 });
  // 100 tokens take 128 as the engine allocates them
  assert.equal(server.freeKvTokens, 22);
  await assert.rejects(
    routes.open({ modelId: MODEL, config: src.config, hops: [hop], sessionId: 'kv-2', maxTokens: 20 }),
    refusedBusy(/KV memory full: 22 of 150 tokens free, session asks for 20 \(64 as the engine allocates\)/),
  );
  // a step beyond the session's reservation is refused too
  await assert.rejects(r1.forward({ sessionId: 'kv-1', pos: 99, nTokens: 2, hidden: input(2, src.config.dim) }), /reserved 100/);
  await r1.dispose();
  for (let i = 0; i < 50 && server.load > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.freeKvTokens, 150);
  // idle timeout requested by the gateway
  // (1 s: long enough that a loaded CI machine gets the first step in before it expires)
  const r3 = await routes.open({ modelId: MODEL, config: src.config, hops: [hop], sessionId: 'kv-3', maxTokens: 100, idleTimeoutMs: 1000 });
  await r3.forward({ sessionId: 'kv-3', pos: 0, nTokens: 1, hidden: input(1, src.config.dim) });
  assert.equal(server.load, 1);
  for (let i = 0; i < 200 && server.load > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.load, 0);
  assert.equal(server.freeKvTokens, 150);
  await assert.rejects(r3.forward({ sessionId: 'kv-3', pos: 1, nTokens: 1, hidden: input(1, src.config.dim) }), RouteError);
  await r3.dispose();
});
