// What it costs this machine to wake a process that has been idle, apart from any odsi code: a
// 2.3 KB message (one SmolLM2 hidden state) echoed by another process over plain TCP on
// 127.0.0.1, its round trip timed with the two processes kept busy (no gap) and with a gap before
// each message in which the echoing process sleeps, either while this one sleeps too ('idle') or
// while this one streams memory as a stage's compute would ('compute': a 64 MiB buffer read over
// and over, so the caches hold none of the JavaScript around the send). A hop of a swarm sees the
// second case: its process waits a ring's time between steps while other processes compute.
//
//   node dist/bench/wake-up.js [--gaps 1,5,10] [--rounds 12] [--pings 20] [--out FILE]
//
// The modes run interleaved, their order rotated every round. Reported: round trip median and p99
// per mode, and each gap's extra over the busy median.

import { spawn } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult } from './lib/results.js';
import { dist, type Dist } from './lib/timeline.js';

/** one SmolLM2-135M hidden state in f32 */
const MESSAGE_BYTES = 576 * 4;

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
  server.listen(0, '127.0.0.1', () => {
    const a = server.address();
    process.stdout.write(`${JSON.stringify({ port: typeof a === 'object' && a ? a.port : 0 })}\n`);
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
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--echo'], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  try {
    const port = await new Promise<number>((res, rej) => {
      child.stdout!.once('data', (b: Buffer) => res((JSON.parse(b.toString()) as { port: number }).port));
      child.once('exit', (c) => rej(new Error(`echo process exited (${c})`)));
    });
    const sock = connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    await new Promise<void>((r) => sock.once('connect', () => r()));
    let answered: (() => void) | undefined;
    messages(sock, () => answered?.());
    const msg = Buffer.alloc(MESSAGE_BYTES, 1);
    const roundTrip = async (): Promise<number> => {
      const t0 = performance.now();
      await new Promise<void>((r) => {
        answered = r;
        sock.write(msg);
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
    const modes = ['busy', ...gaps.flatMap((g) => [`idle ${g} ms`, `compute ${g} ms`])];
    const samples: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m, []]));
    for (let i = 0; i < 50; i++) await roundTrip(); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (let j = 0; j < modes.length; j++) {
        const mode = modes[(j + r) % modes.length]!;
        const [kind, ms] = [mode.split(' ')[0], Number(mode.split(' ')[1] ?? 0)];
        for (let p = 0; p < pings; p++) {
          if (kind === 'idle') await sleep(ms);
          if (kind === 'compute') stream(ms);
          samples[mode]!.push(await roundTrip());
        }
      }
    }
    sock.destroy();
    const result: Record<string, Dist> = Object.fromEntries(modes.map((m) => [m, dist(samples[m]!)]));
    const busy = result.busy!.p50;
    console.log(
      `round trip of ${MESSAGE_BYTES} B over TCP on 127.0.0.1, ${rounds} rounds × ${pings} per mode (median / p99, extra over busy):`,
    );
    for (const m of modes) {
      const d = result[m]!;
      console.log(
        `  ${m.padEnd(16)} ${d.p50.toFixed(3)} / ${d.p99.toFixed(3)} ms${m === 'busy' ? '' : `  (+${(d.p50 - busy).toFixed(3)})`}`,
      );
    }
    if (sink === -1) console.log(sink); // keep the reads
    const out = args.out ?? resolve(fileURLToPath(import.meta.url), '../../../bench/results/wake-up.json');
    writeResult(out, {
      what: `round trip of a ${MESSAGE_BYTES}-byte message echoed by another process over TCP on 127.0.0.1: kept busy, after an idle gap (both processes sleeping), after a compute gap (this process streaming a 64 MiB buffer, the echoing one sleeping); interleaved, order rotated per round`,
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
