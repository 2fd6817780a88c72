// What an emulated link actually delivers, measured against the echo / sink server of
// bench/lib/wan-relay.ts: round-trip time of small messages on one TCP connection, and the
// one-way rate of a bulk transfer (time to the server's acknowledgement minus one RTT).

import { connect, type Socket } from 'node:net';
import { stats, type Stats } from './stats.js';

function open(host: string, port: number, first: string): Promise<Socket> {
  return new Promise((res, rej) => {
    const s = connect({ host, port, noDelay: true }, () => {
      s.write(first);
      res(s);
    });
    s.once('error', rej);
    s.setTimeout(30_000, () => s.destroy(new Error('link probe timed out')));
  });
}

/** RTT of `n` sequential echoes of `bytes` bytes (ms) */
export async function echoRtt(host: string, port: number, n = 40, bytes = 64): Promise<Stats & { samples: number[] }> {
  const s = await open(host, port, 'E');
  const samples: number[] = [];
  let got = 0;
  let waiting: { res: () => void; rej: (e: Error) => void } | undefined;
  s.on('data', (b: Buffer) => {
    got += b.length;
    if (got >= bytes && waiting) {
      got -= bytes;
      waiting.res();
      waiting = undefined;
    }
  });
  s.on('error', (e) => waiting?.rej(e));
  s.on('close', () => waiting?.rej(new Error('echo connection closed')));
  try {
    const msg = Buffer.alloc(bytes, 7);
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await new Promise<void>((res, rej) => {
        waiting = { res, rej };
        s.write(msg);
      });
      samples.push(performance.now() - t0);
    }
  } finally {
    s.destroy();
  }
  return { ...stats(samples), samples: samples.map((x) => Math.round(x * 1000) / 1000) };
}

/** one-way rate in Mbit/s of sending `bytes` (after slow start: the transfer is repeated `reps` times on one connection) */
export async function sinkRate(host: string, port: number, bytes: number, rttMs: number, reps = 3): Promise<Stats> {
  const s = await open(host, port, 'S');
  const out: number[] = [];
  try {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(bytes);
    const body = Buffer.alloc(bytes, 1);
    for (let i = 0; i < reps; i++) {
      if (i > 0) s.write('S');
      const t0 = performance.now();
      await new Promise<void>((res, rej) => {
        s.once('data', () => res());
        s.once('error', rej);
        s.write(head);
        s.write(body);
      });
      const ms = performance.now() - t0 - rttMs;
      out.push((bytes * 8) / 1e6 / (ms / 1000));
    }
  } finally {
    s.destroy();
  }
  return stats(out);
}
