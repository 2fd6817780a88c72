// CPU per step message of the libp2p transport (issue 13: per-hop overhead at concurrency).
//
//   node --import ./dist/src/util/polyfill.js dist/bench/transport.js [--rounds 5] [--scale 1] [--out FILE]
//
// Two real hosts made by the product's createHost (TCP + Noise + Yamux on 127.0.0.1) in this
// one process, one long-lived stream between them wrapped in the product's Channel on both
// ends. Per message size (2.3 KB = one SmolLM2-135M f32 hidden state, 10 KB = a 2560-wide one,
// 128 KB = a short prefill chunk):
//   - ping-pong: the client sends a STEP, the server's Channel answers it with a RESULT of the
//     same size, the client waits for it before the next; wall round-trip median / p99;
//   - one-way: the client sends a run of RESULT messages back to back (with backpressure), the
//     server counts them; done when the last arrived.
//   - burst: 16 more streams on the same connection (one per session, as a node holds them);
//     one step sent on each in the same tick (a batched node's output), each answered.
// CPU is process.cpuUsage (user + system) over each block divided by the messages carried, so it
// is both ends of a message together (sender and receiver live in this process), plus this
// bench's own message building, which every variant shares.
//
// Variants, interleaved (every round runs each of them in a new random order, on its own pair
// of hosts made at the start):
//   before — yamux window update after every data frame (windowUpdates: 'every-frame') and
//            one socket.write per buffer (corkWrites: false): libp2p's own behaviour;
//   window — half-window updates (src/p2p/yamux-window.ts);
//   after  — and each tick's socket writes gathered into one (src/p2p/socket-writes.ts): what
//            createHost does now.
// (A Channel.send that wrote at once instead of through its promise chain was measured too and
// changed nothing beyond the noise: not kept.)

import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../src/identity/identity.js';
import { createHost, type HostOptions, type OdsiHost } from '../src/p2p/host.js';
import { Channel } from '../src/p2p/channel.js';
import { MsgType, type Message } from '../src/protocol/messages.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult, table } from './lib/results.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    scale: { type: 'string', default: '1' },
    out: { type: 'string' },
  },
});
const ROUNDS = Number(args.rounds);
const SCALE = Number(args.scale);
const OUT = args.out ?? join(ROOT, 'bench/results/transport.json');
const PROTO = '/odsi/bench-transport/1.0.0';

type VariantName = 'before' | 'window' | 'after';
const VARIANTS: { name: VariantName; windowUpdates: HostOptions['windowUpdates']; corkWrites: boolean }[] = [
  { name: 'before', windowUpdates: 'every-frame', corkWrites: false },
  { name: 'window', windowUpdates: 'half-window', corkWrites: false },
  { name: 'after', windowUpdates: 'half-window', corkWrites: true },
];
/** payload bytes, round trips and one-way messages per block */
const SIZES = [
  { label: '2.3KB', bytes: 2304, pingpong: 1500, oneway: 3000 },
  { label: '10KB', bytes: 10240, pingpong: 1000, oneway: 2000 },
  { label: '128KB', bytes: 131072, pingpong: 150, oneway: 300 },
].map((s) => ({ ...s, pingpong: Math.max(10, Math.round(s.pingpong * SCALE)), oneway: Math.max(10, Math.round(s.oneway * SCALE)) }));

interface Pair {
  hosts: OdsiHost[];
  send: (m: Message) => Promise<void>;
  /** resolves on the next message the client receives */
  nextReply: () => Promise<void>;
  /** one-way messages the server received so far */
  received: () => number;
  waitReceived: (n: number) => Promise<void>;
  /** BURST more streams on the same connection: send on each, resolve when every one got its reply */
  burst: (mk: (i: number) => Message) => Promise<void>;
}

const BURST = 16;

async function makePair(v: (typeof VARIANTS)[number]): Promise<Pair> {
  const server = await createHost({ identity: generateIdentity(), windowUpdates: v.windowUpdates, corkWrites: v.corkWrites });
  const client = await createHost({ identity: generateIdentity(), windowUpdates: v.windowUpdates, corkWrites: v.corkWrites });
  let received = 0;
  let waiting: { n: number; resolve: () => void } | undefined;
  await server.libp2p.handle(PROTO, (stream, conn) => {
    const ch: Channel = new Channel(stream, conn.remotePeer.toString(), server.peerId, {
      onMessage: (m) => {
        if (m.type === MsgType.STEP) void ch.send({ type: MsgType.RESULT, header: m.header, payload: m.payload });
        else if (++received === waiting?.n) waiting.resolve();
      },
    });
  });
  await client.dial(server.peerId, server.addrs());
  const stream = await client.libp2p.dialProtocol(peerIdFromString(server.peerId), PROTO);
  let onReply: (() => void) | undefined;
  const ch = new Channel(stream, server.peerId, client.peerId, {
    onMessage: () => {
      const r = onReply;
      onReply = undefined;
      r?.();
    },
  });
  // BURST more sessions' streams on the same connection (as a node holds one per session)
  let pending = 0;
  let burstDone: (() => void) | undefined;
  const burstSends: ((m: Message) => Promise<void>)[] = [];
  for (let i = 0; i < BURST; i++) {
    const st = await client.libp2p.dialProtocol(peerIdFromString(server.peerId), PROTO);
    const c = new Channel(st, server.peerId, client.peerId, {
      onMessage: () => {
        if (--pending === 0) burstDone?.();
      },
    });
    burstSends.push((m) => c.send(m));
  }
  return {
    burst: (mk) =>
      new Promise<void>((r) => {
        pending = BURST;
        burstDone = r;
        for (let i = 0; i < BURST; i++) void burstSends[i]!(mk(i));
      }),
    hosts: [server, client],
    send: (m) => ch.send(m),
    nextReply: () => new Promise<void>((r) => (onReply = r)),
    received: () => received,
    waitReceived: (n) => (received >= n ? Promise.resolve() : new Promise<void>((r) => (waiting = { n, resolve: r }))),
  };
}

const header = (bytes: number, i: number) => ({
  sessionId: 'bench',
  requestId: i,
  step: i,
  pos: i,
  nTokens: 1,
  dtype: 'f32' as const,
  shape: [1, bytes / 4],
  timeline: [],
});

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function pingpong(p: Pair, bytes: number, n: number): Promise<{ cpuUsPerMsg: number; rttMs: number[] }> {
  const payload = new Uint8Array(bytes);
  const rtt: number[] = [];
  const c0 = cpuUs();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const got = p.nextReply();
    await p.send({ type: MsgType.STEP, header: header(bytes, i), payload } as Message);
    await got;
    rtt.push(performance.now() - t0);
  }
  return { cpuUsPerMsg: (cpuUs() - c0) / (2 * n), rttMs: rtt };
}

async function oneway(p: Pair, bytes: number, n: number): Promise<{ cpuUsPerMsg: number; msgsPerS: number }> {
  const payload = new Uint8Array(bytes);
  const base = p.received();
  const c0 = cpuUs();
  const t0 = performance.now();
  const done = p.waitReceived(base + n);
  for (let i = 0; i < n; i++) await p.send({ type: MsgType.RESULT, header: header(bytes, i), payload } as Message);
  await done;
  const s = (performance.now() - t0) / 1000;
  return { cpuUsPerMsg: (cpuUs() - c0) / n, msgsPerS: n / s };
}

/** BURST sessions' steps sent in one tick, each answered: the shape of a batched node's output */
async function burst(p: Pair, bytes: number, n: number): Promise<{ cpuUsPerMsg: number; msMedian: number[] }> {
  const payload = new Uint8Array(bytes);
  const ms: number[] = [];
  const c0 = cpuUs();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await p.burst((k) => ({ type: MsgType.STEP, header: header(bytes, k), payload }) as Message);
    ms.push(performance.now() - t0);
  }
  return { cpuUsPerMsg: (cpuUs() - c0) / (2 * BURST * n), msMedian: ms };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
};
const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
};

async function main() {
  const machine = describeMachine();
  console.log(machineLine(machine));
  const pairs = new Map<VariantName, Pair>();
  for (const v of VARIANTS) pairs.set(v.name, await makePair(v));
  // per variant and size: CPU µs per message of each round, RTTs of all rounds, one-way rates
  type Acc = { ppCpu: number[]; rtt: number[]; owCpu: number[]; owRate: number[]; bCpu: number[]; bMs: number[] };
  const acc = new Map<string, Acc>();
  const key = (v: string, s: string) => `${v}/${s}`;
  for (const v of VARIANTS) for (const s of SIZES) acc.set(key(v.name, s.label), { ppCpu: [], rtt: [], owCpu: [], owRate: [], bCpu: [], bMs: [] });
  // warm-up: JIT and yamux's window growth
  for (const v of VARIANTS) for (const s of SIZES) await pingpong(pairs.get(v.name)!, s.bytes, Math.ceil(s.pingpong / 5));
  for (let r = 0; r < ROUNDS; r++) {
    const order = [...VARIANTS].sort(() => Math.random() - 0.5);
    for (const v of order) {
      const p = pairs.get(v.name)!;
      for (const s of SIZES) {
        const a = acc.get(key(v.name, s.label))!;
        const pp = await pingpong(p, s.bytes, s.pingpong);
        a.ppCpu.push(pp.cpuUsPerMsg);
        a.rtt.push(...pp.rttMs);
        const ow = await oneway(p, s.bytes, s.oneway);
        a.owCpu.push(ow.cpuUsPerMsg);
        a.owRate.push(ow.msgsPerS);
        const b = await burst(p, s.bytes, Math.max(2, Math.round(s.pingpong / BURST)));
        a.bCpu.push(b.cpuUsPerMsg);
        a.bMs.push(...b.msMedian);
      }
    }
    console.log(`round ${r + 1}/${ROUNDS} done (order ${order.map((v) => v.name).join(', ')})`);
  }
  const rows: Record<string, unknown>[] = [];
  for (const s of SIZES)
    for (const v of VARIANTS) {
      const a = acc.get(key(v.name, s.label))!;
      rows.push({
        size: s.label,
        payloadBytes: s.bytes,
        variant: v.name,
        pingpongCpuUsPerMsg: +median(a.ppCpu).toFixed(1),
        pingpongCpuUsPerMsgMin: +Math.min(...a.ppCpu).toFixed(1),
        rttMsMedian: +median(a.rtt).toFixed(3),
        rttMsP99: +pct(a.rtt, 0.99).toFixed(3),
        onewayCpuUsPerMsg: +median(a.owCpu).toFixed(1),
        onewayCpuUsPerMsgMin: +Math.min(...a.owCpu).toFixed(1),
        onewayMsgsPerS: Math.round(median(a.owRate)),
        burstCpuUsPerMsg: +median(a.bCpu).toFixed(1),
        burstCpuUsPerMsgMin: +Math.min(...a.bCpu).toFixed(1),
        burstMsMedian: +median(a.bMs).toFixed(3),
        perRound: { pingpongCpuUsPerMsg: a.ppCpu.map((x) => +x.toFixed(1)), onewayCpuUsPerMsg: a.owCpu.map((x) => +x.toFixed(1)) },
      });
    }
  console.log(
    table(
      ['size / variant', 'ping-pong µs CPU/msg med (min)', 'RTT ms med', 'RTT ms p99', 'one-way µs CPU/msg med (min)', 'one-way msg/s', `burst ×${BURST} µs CPU/msg med (min)`, 'burst ms med'],
      rows.map((r) => [
        `${r.size} ${r.variant}`,
        `${r.pingpongCpuUsPerMsg} (${r.pingpongCpuUsPerMsgMin})`,
        String(r.rttMsMedian),
        String(r.rttMsP99),
        `${r.onewayCpuUsPerMsg} (${r.onewayCpuUsPerMsgMin})`,
        String(r.onewayMsgsPerS),
        `${r.burstCpuUsPerMsg} (${r.burstCpuUsPerMsgMin})`,
        String(r.burstMsMedian),
      ]),
    ),
  );
  writeResult(OUT, {
    bench: 'transport',
    date: new Date().toISOString(),
    machine,
    loadAvgEnd: describeMachine().loadAvg,
    rounds: ROUNDS,
    note: 'µs CPU per message = process.cpuUsage over a block / messages carried; both ends in this one process (median and min over rounds: on a loaded machine the min is the least disturbed block); RTT over all round trips of all rounds',
    sizes: SIZES,
    results: rows,
  });
  console.log(`wrote ${OUT}`);
  for (const p of pairs.values()) await Promise.all(p.hosts.map((h) => h.stop()));
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
