// User-space link emulator for bench/wan: TCP relays that delay every chunk, and a small echo /
// sink server to measure what the emulated link delivers. Runs as its own process inside a
// network namespace (bench/lib/netns.ts): `node wan-relay.js '<json config>'`; prints one JSON
// line {"event":"ready"} once listening, exits on SIGTERM.
//
// Delay and jitter: each chunk read from one side is written to the other after
// delayMs ± jitterMs (uniform), never before an earlier chunk of the same direction (TCP keeps
// order, so a late chunk holds back those behind it, as head-of-line blocking does). Both
// directions of a connection are delayed, so a relay on the only path gives RTT ≈ 2·delayMs.
//
// Loss (an approximation: TCP never loses data, it retransmits): each chunk of n bytes counts
// as ceil(n / 1448) packets, and with probability 1 − (1 − loss)^packets it is held back an extra
// retransmission timeout, modelled as max(200 ms, 2·RTT): Linux's minimum RTO (a tail loss probe
// with one segment in flight waits about as long, ~1.5·SRTT + a 200 ms delayed-ACK allowance).
// Not modelled: fast retransmit after three duplicate ACKs (which would recover bulk transfers
// in about one RTT instead) and the congestion window halving a real loss causes.
//
// Lateness: the relay is a process on the same cores as the swarm, so a chunk can leave later
// than its intended time (timer granularity, waiting for a core). Every chunk written is logged
// as (written − intended) ms; on SIGUSR2 the relay prints {"event":"lateness", n, min, p50, p90,
// p99, max} for the chunks since the last SIGUSR2 and starts a new log, so the benchmark can tell
// the emulator's own delay from odsi's.

import { createServer, connect, type Socket } from 'node:net';
import { dist, type Dist } from './timeline.js';

export interface RelayRule {
  listenHost: string;
  listenPort: number;
  targetHost: string;
  targetPort: number;
}

export interface RelayConfig {
  mode: 'relay';
  delayMs: number;
  jitterMs: number;
  /** packet loss probability, 0..1 */
  loss: number;
  rules: RelayRule[];
  seed?: number;
}

export interface EchoConfig {
  mode: 'echo';
  host: string;
  port: number;
}

const MSS = 1448;
/** bytes held back per direction before the reader is paused */
const MAX_QUEUED = 8 * 1024 * 1024;

/** written − intended ms of the chunks written since the last take(), bounded */
class LatenessLog {
  private readonly ms = new Float64Array(200_000);
  private n = 0;
  add(x: number): void {
    if (this.n < this.ms.length) this.ms[this.n++] = x;
  }
  take(): Dist {
    const d = dist(Array.from(this.ms.subarray(0, this.n)));
    this.n = 0;
    return d;
  }
}

/** small deterministic PRNG (mulberry32): runs with the same seed see the same jitter draws */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** one direction of a relayed connection: chunks in, the same chunks out later, in order */
function pipeDelayed(from: Socket, to: Socket, c: RelayConfig, rand: () => number, late: LatenessLog): void {
  const queue: { at: number; buf: Buffer }[] = [];
  let queued = 0;
  let last = 0;
  let timer: NodeJS.Timeout | undefined;
  let ended = false;
  const rtoMs = Math.max(200, 4 * c.delayMs);
  const flush = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length && queue[0]!.at <= now + 0.25) {
      const { at, buf } = queue.shift()!;
      late.add(now - at);
      queued -= buf.length;
      if (!to.destroyed) to.write(buf);
    }
    if (queued < MAX_QUEUED / 4 && from.isPaused()) from.resume();
    if (queue.length) timer = setTimeout(flush, Math.max(0, queue[0]!.at - performance.now()));
    else if (ended) to.end();
  };
  from.on('data', (buf: Buffer) => {
    let d = c.delayMs + (c.jitterMs ? (2 * rand() - 1) * c.jitterMs : 0);
    if (c.loss > 0) {
      const packets = Math.ceil(buf.length / MSS);
      if (rand() < 1 - (1 - c.loss) ** packets) d += rtoMs;
    }
    const at = Math.max(performance.now() + d, last);
    last = at;
    queue.push({ at, buf });
    queued += buf.length;
    if (queued > MAX_QUEUED) from.pause();
    if (!timer) timer = setTimeout(flush, Math.max(0, queue[0]!.at - performance.now()));
  });
  from.on('end', () => {
    ended = true;
    if (!queue.length && !timer) to.end();
  });
}

function startRelay(c: RelayConfig, late: LatenessLog): Promise<void>[] {
  const rand = rng(c.seed ?? 1);
  return c.rules.map(
    (r) =>
      new Promise<void>((ready, fail) => {
        const srv = createServer({ noDelay: true }, (client) => {
          const upstream = connect({ host: r.targetHost, port: r.targetPort, noDelay: true });
          const kill = () => {
            client.destroy();
            upstream.destroy();
          };
          client.on('error', kill);
          upstream.on('error', kill);
          client.on('close', () => upstream.end());
          upstream.on('close', () => client.end());
          pipeDelayed(client, upstream, c, rand, late);
          pipeDelayed(upstream, client, c, rand, late);
        });
        srv.once('error', fail);
        srv.listen(r.listenPort, r.listenHost, () => ready());
      }),
  );
}

/**
 * Echo / sink server. A connection's first byte picks the mode: 'E' echoes every byte back;
 * 'S' reads a 4-byte big-endian length L, then L bytes, then answers one byte 'K'.
 */
function startEcho(c: EchoConfig): Promise<void> {
  return new Promise((ready, fail) => {
    const srv = createServer({ noDelay: true }, (s) => {
      let mode: 'E' | 'S' | undefined;
      let need = -1;
      let head = Buffer.alloc(0);
      s.on('error', () => s.destroy());
      s.on('data', (b: Buffer) => {
        if (!mode) {
          mode = b[0] === 0x53 ? 'S' : 'E';
          b = b.subarray(1);
        }
        if (mode === 'E') return void s.write(b);
        if (need < 0) {
          head = Buffer.concat([head, b]);
          if (head.length < 4) return;
          need = head.readUInt32BE(0);
          b = head.subarray(4);
        }
        need -= b.length;
        if (need <= 0) {
          s.write('K');
          need = -1;
          head = Buffer.alloc(0);
          mode = undefined;
        }
      });
    });
    srv.once('error', fail);
    srv.listen(c.port, c.host, () => ready());
  });
}

async function main(): Promise<void> {
  const c = JSON.parse(process.argv[2] ?? '{}') as RelayConfig | EchoConfig;
  if (c.mode === 'relay') {
    const late = new LatenessLog();
    await Promise.all(startRelay(c, late));
    process.on('SIGUSR2', () => console.log(JSON.stringify({ event: 'lateness', ...late.take() })));
  } else if (c.mode === 'echo') await startEcho(c);
  else throw new Error('config.mode must be relay or echo');
  process.on('SIGTERM', () => process.exit(0));
  console.log(JSON.stringify({ event: 'ready', pid: process.pid }));
}

main().catch((e) => {
  console.error((e as Error).message);
  process.exit(1);
});
