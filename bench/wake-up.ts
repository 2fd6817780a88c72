// What it costs this machine to wake a process that has been idle: a 2.3 KB message (one
// SmolLM2 hidden state) echoed by another process on 127.0.0.1, over plain TCP (no odsi code) and
// over odsi's libp2p transport (createHost: TCP + Noise + yamux, a production Channel answering a
// STEP with a RESULT), its round trip timed with the two processes kept busy (no gap) and with a gap before
// each message in which the echoing process sleeps, either while this one sleeps too ('idle') or
// while this one streams memory as a stage's compute would ('compute': a 64 MiB buffer read over
// and over, so the caches hold none of the JavaScript around the send). A hop of a swarm sees the
// second case: its process waits a ring's time between steps while other processes compute.
//
//   node --import ./dist/src/util/polyfill.js dist/bench/wake-up.js [--gaps 1,5,10] [--rounds 12] [--pings 20] [--out FILE]
//
// The modes run interleaved, their order rotated every round. Reported: round trip median and p99
// per mode, and each gap's extra over the busy median of its transport.

import { spawn } from 'node:child_process';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../src/identity/identity.js';
import { createHost } from '../src/p2p/host.js';
import { Channel } from '../src/p2p/channel.js';
import { MsgType, type Message } from '../src/protocol/messages.js';
import { createServer, connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult } from './lib/results.js';
import { dist, type Dist } from './lib/timeline.js';

/** one SmolLM2-135M hidden state in f32 */
const MESSAGE_BYTES = 576 * 4;
const PROTO = '/odsi/bench-wake-up/1.0.0';

const { values: args } = parseArgs({
  options: {
    echo: { type: 'boolean', default: false },
    gaps: { type: 'string', default: '1,5,10' },
    rounds: { type: 'string', default: '12' },
    pings: { type: 'string', default: '20' },
    out: { type: 'string' },
  },
});

/** reads whole messages of MESSAGE_BYTES from a socket, calling `on` for each */
function messages(sock: Socket, on: () => void): void {
  let have = 0;
  sock.on('data', (b: Buffer) => {
    have += b.length;
    while (have >= MESSAGE_BYTES) {
      have -= MESSAGE_BYTES;
      on();
    }
  });
}

if (args.echo) {
  // the echoing process: answer each whole message with one of the same size
  const reply = Buffer.alloc(MESSAGE_BYTES, 7);
  const server = createServer((sock) => {
    sock.setNoDelay(true);
    messages(sock, () => sock.write(reply));
  });
  // and the same over libp2p: a STEP answered with a RESULT of the same payload
  const host = await createHost({ identity: generateIdentity() });
  await host.libp2p.handle(PROTO, (stream, conn) => {
    const ch: Channel = new Channel(stream, conn.remotePeer.toString(), host.peerId, {
      onMessage: (m) => void ch.send({ type: MsgType.RESULT, header: m.header, payload: m.payload } as Message),
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const a = server.address();
    const port = typeof a === 'object' && a ? a.port : 0;
    process.stdout.write(`${JSON.stringify({ port, peerId: host.peerId, addrs: host.addrs() })}\n`);
  });
  process.on('disconnect', () => process.exit(0));
} else {
  await main();
}

async function main(): Promise<void> {
  const gaps = args.gaps!.split(',').map(Number);
  if (gaps.some((g) => !Number.isInteger(g) || g < 1)) throw new Error(`--gaps: positive integers (ms), got ${args.gaps}`);
  const rounds = Number(args.rounds);
  const pings = Number(args.pings);
  const machine = describeMachine();
  console.log(machineLine(machine));
  const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--echo'], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  try {
    const echo = await new Promise<{ port: number; peerId: string; addrs: string[] }>((res, rej) => {
      child.stdout!.once('data', (b: Buffer) => res(JSON.parse(b.toString()) as { port: number; peerId: string; addrs: string[] }));
      child.once('exit', (c) => rej(new Error(`echo process exited (${c})`)));
    });
    const port = echo.port;
    const sock = connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    await new Promise<void>((r) => sock.once('connect', () => r()));
    let answered: (() => void) | undefined;
    messages(sock, () => answered?.());
    const msg = Buffer.alloc(MESSAGE_BYTES, 1);
    const tcpRoundTrip = async (): Promise<number> => {
      const t0 = performance.now();
      await new Promise<void>((r) => {
        answered = r;
        sock.write(msg);
      });
      return performance.now() - t0;
    };
    const host = await createHost({ identity: generateIdentity() });
    await host.dial(echo.peerId, echo.addrs);
    const p2pStream = await host.libp2p.dialProtocol(peerIdFromString(echo.peerId), PROTO);
    let replied: (() => void) | undefined;
    const ch = new Channel(p2pStream, echo.peerId, host.peerId, { onMessage: () => replied?.() });
    const payload = new Uint8Array(MESSAGE_BYTES);
    let step = 0;
    const p2pRoundTrip = async (): Promise<number> => {
      const t0 = performance.now();
      const i = step++;
      const header = {
        sessionId: 'wake',
        requestId: i,
        step: i,
        pos: i,
        nTokens: 1,
        dtype: 'f32' as const,
        shape: [1, MESSAGE_BYTES / 4],
        timeline: [],
      };
      await new Promise<void>((r) => {
        replied = r;
        void ch.send({ type: MsgType.STEP, header, payload } as Message);
      });
      return performance.now() - t0;
    };
    const memory = new Float32Array(16 * 2 ** 20); // 64 MiB
    memory.fill(1);
    let sink = 0;
    /** reads memory for `ms`, as a stage's compute streams its weights */
    const stream = (ms: number) => {
      const end = performance.now() + ms;
      while (performance.now() < end) for (let i = 0; i < memory.length; i += 16) sink += memory[i]!;
    };
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const transports = { tcp: tcpRoundTrip, libp2p: p2pRoundTrip };
    const modes = Object.keys(transports).flatMap((t) => [
      `${t} busy`,
      ...gaps.flatMap((g) => [`${t} idle ${g} ms`, `${t} compute ${g} ms`]),
    ]);
    const samples: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m, []]));
    for (let i = 0; i < 200; i++) for (const rt of Object.values(transports)) await rt(); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (let j = 0; j < modes.length; j++) {
        const mode = modes[(j + r) % modes.length]!;
        const [t, kind, ms] = mode.split(' ') as [keyof typeof transports, string, string | undefined];
        for (let p = 0; p < pings; p++) {
          if (kind === 'idle') await sleep(Number(ms));
          if (kind === 'compute') stream(Number(ms));
          samples[mode]!.push(await transports[t]());
        }
      }
    }
    sock.destroy();
    await host.stop();
    const result: Record<string, Dist> = Object.fromEntries(modes.map((m) => [m, dist(samples[m]!)]));
    console.log(`round trip of ${MESSAGE_BYTES} B on 127.0.0.1, ${rounds} rounds × ${pings} per mode (median / p99, extra over busy):`);
    for (const m of modes) {
      const d = result[m]!;
      const busy = result[`${m.split(' ')[0]} busy`]!.p50;
      console.log(
        `  ${m.padEnd(22)} ${d.p50.toFixed(3)} / ${d.p99.toFixed(3)} ms${m.endsWith('busy') ? '' : `  (+${(d.p50 - busy).toFixed(3)})`}`,
      );
    }
    if (sink === -1) console.log(sink); // keep the reads
    const out = args.out ?? resolve(fileURLToPath(import.meta.url), '../../../bench/results/wake-up.json');
    writeResult(out, {
      what: `round trip of a ${MESSAGE_BYTES}-byte message echoed by another process on 127.0.0.1, over plain TCP and over odsi's libp2p transport (a STEP answered with a RESULT on a production Channel): kept busy, after an idle gap (both processes sleeping), after a compute gap (this process streaming a 64 MiB buffer, the echoing one sleeping); interleaved, order rotated per round`,
      machine,
      loadAvgAtEnd: describeMachine().loadAvg,
      options: { gapsMs: gaps, rounds, pings },
      roundTripMs: result,
    });
    console.log(`wrote ${out}`);
  } finally {
    child.kill();
  }
}
