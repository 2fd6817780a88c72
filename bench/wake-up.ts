// What it costs this machine to wake a process that has been idle: a 2.3 KB message (one
// SmolLM2 hidden state) echoed by another process on 127.0.0.1, over plain TCP (no odsi code) and
// over odsi's libp2p transport (createHost: TCP + Noise + yamux, a production Channel answering a
// STEP with a RESULT), its round trip timed with the two processes kept busy (no gap) and with a gap
// before each message of one of three kinds:
//   'idle'     both processes sleep;
//   'compute'  the echoing process sleeps while this one streams memory as a stage's compute
//              would (a 64 MiB buffer read over and over, so the caches hold none of the
//              JavaScript around the send). A hop of a swarm sees this case: its process waits a
//              ring's time between steps while other processes compute;
//   'spin'     neither sleeps: both keep their event loops turning (setImmediate), touching
//              almost no memory. What this still costs over 'busy' is not a wake-up and not the
//              process's own cache traffic but time itself: on a VM, the host's other work
//              taking the shared caches.
// A third transport, 'sealed', is what a leaner activation path would cost: the same STEP and
// RESULT messages in odsi's frames (encodeMessage, MessageDecoder), each message's frames sealed
// as one ChaCha20-Poly1305 record (node:crypto, a counter nonce per direction) on a plain TCP
// socket: what Noise does for a message, without its framing layers and without yamux.
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
import { MessageDecoder, MsgType, encodeMessage, type Message } from '../src/protocol/messages.js';
import { createServer, connect, type Socket } from 'node:net';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
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

const TAG_BYTES = 16;

/** one direction of a sealed socket: records of [u32 length][ciphertext][16-byte tag], nonce = direction byte + counter */
class Sealer {
  private counter = 0n;
  constructor(
    private readonly key: Buffer,
    private readonly direction: number,
  ) {}
  private nonce(): Buffer {
    const n = Buffer.alloc(12);
    n[0] = this.direction;
    n.writeBigUInt64BE(this.counter++, 4);
    return n;
  }
  /** the record carrying one message's frames */
  seal(frames: Uint8Array[]): Buffer {
    const c = createCipheriv('chacha20-poly1305', this.key, this.nonce(), { authTagLength: TAG_BYTES });
    const body = Buffer.concat([...frames.map((f) => c.update(f)), c.final(), c.getAuthTag()]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    return Buffer.concat([len, body]);
  }
  /** the plaintext of one record's body (throws if it was not sealed with this key and counter) */
  open(body: Buffer): Buffer {
    const d = createDecipheriv('chacha20-poly1305', this.key, this.nonce(), { authTagLength: TAG_BYTES });
    d.setAuthTag(body.subarray(body.length - TAG_BYTES));
    return Buffer.concat([d.update(body.subarray(0, body.length - TAG_BYTES)), d.final()]);
  }
}

/** a sealed socket: `send` seals a message's frames as one record; each record read is opened and decoded */
function sealedSocket(sock: Socket, key: Buffer, dialer: boolean, on: (m: Message) => void): (m: Message) => void {
  const out = new Sealer(key, dialer ? 0 : 1);
  const inb = new Sealer(key, dialer ? 1 : 0);
  const decoder = new MessageDecoder();
  let buf: Buffer = Buffer.alloc(0);
  sock.on('data', (b: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, b]) : b;
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
      const end = 4 + buf.readUInt32BE(0);
      for (const m of decoder.push(inb.open(buf.subarray(4, end)))) on(m);
      buf = buf.subarray(end);
    }
  });
  return (m) => sock.write(out.seal(encodeMessage(m)));
}

if (args.echo) {
  // 'spin' gaps: told over IPC how long to keep its event loop turning after each reply
  let spinMs = 0;
  let spinUntil = 0;
  const spin = () => {
    if (performance.now() < spinUntil) setImmediate(spin);
  };
  const replied = () => {
    if (!spinMs) return;
    const turning = performance.now() < spinUntil;
    spinUntil = performance.now() + spinMs;
    if (!turning) setImmediate(spin);
  };
  process.on('message', (ms: number) => {
    spinMs = ms;
    process.send!('ok');
  });
  // the echoing process: answer each whole message with one of the same size
  const reply = Buffer.alloc(MESSAGE_BYTES, 7);
  const server = createServer((sock) => {
    sock.setNoDelay(true);
    messages(sock, () => {
      sock.write(reply);
      replied();
    });
  });
  // the same messages on a sealed socket
  const key = randomBytes(32);
  const sealed = createServer((sock) => {
    sock.setNoDelay(true);
    const send = sealedSocket(sock, key, false, (m) => {
      send({ type: MsgType.RESULT, header: m.header, payload: m.payload } as Message);
      replied();
    });
  });
  await new Promise<void>((r) => sealed.listen(0, '127.0.0.1', r));
  // and over libp2p: a STEP answered with a RESULT of the same payload
  const host = await createHost({ identity: generateIdentity() });
  await host.libp2p.handle(PROTO, (stream, conn) => {
    const ch: Channel = new Channel(stream, conn.remotePeer.toString(), host.peerId, {
      onMessage: (m) => {
        void ch.send({ type: MsgType.RESULT, header: m.header, payload: m.payload } as Message);
        replied();
      },
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const a = server.address();
    const port = typeof a === 'object' && a ? a.port : 0;
    const sa = sealed.address();
    const sealedPort = typeof sa === 'object' && sa ? sa.port : 0;
    process.stdout.write(`${JSON.stringify({ port, sealedPort, key: key.toString('hex'), peerId: host.peerId, addrs: host.addrs() })}\n`);
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
    type EchoInfo = { port: number; sealedPort: number; key: string; peerId: string; addrs: string[] };
    const echo = await new Promise<EchoInfo>((res, rej) => {
      child.stdout!.once('data', (b: Buffer) => res(JSON.parse(b.toString()) as EchoInfo));
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
    /** the next STEP, as a swarm's hop sends it */
    const stepMessage = (): Message => {
      const i = step++;
      const header = {
        sessionId: 'wake',
        requestId: i,
        step: i,
        pos: i,
        nTokens: 1,
        dtype: 'f32',
        shape: [1, MESSAGE_BYTES / 4],
        timeline: [],
      };
      return { type: MsgType.STEP, header, payload } as Message;
    };
    const p2pRoundTrip = async (): Promise<number> => {
      const t0 = performance.now();
      await new Promise<void>((r) => {
        replied = r;
        void ch.send(stepMessage());
      });
      return performance.now() - t0;
    };
    const sealedSock = connect(echo.sealedPort, '127.0.0.1');
    sealedSock.setNoDelay(true);
    await new Promise<void>((r) => sealedSock.once('connect', () => r()));
    let opened: (() => void) | undefined;
    const sendSealed = sealedSocket(sealedSock, Buffer.from(echo.key, 'hex'), true, () => opened?.());
    const sealedRoundTrip = async (): Promise<number> => {
      const t0 = performance.now();
      await new Promise<void>((r) => {
        opened = r;
        sendSealed(stepMessage());
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
    /** keeps this event loop turning for `ms` without sleeping */
    const turn = (ms: number) =>
      new Promise<void>((r) => {
        const end = performance.now() + ms;
        const next = () => (performance.now() < end ? setImmediate(next) : r());
        setImmediate(next);
      });
    /** how long the echoing process keeps its loop turning after each reply (0: it sleeps) */
    const echoSpins = (ms: number) =>
      new Promise<void>((r) => {
        child.once('message', () => r());
        child.send(ms);
      });
    const transports = { tcp: tcpRoundTrip, sealed: sealedRoundTrip, libp2p: p2pRoundTrip };
    const modes = Object.keys(transports).flatMap((t) => [
      `${t} busy`,
      ...gaps.flatMap((g) => [`${t} idle ${g} ms`, `${t} compute ${g} ms`, `${t} spin ${g} ms`]),
    ]);
    const samples: Record<string, number[]> = Object.fromEntries(modes.map((m) => [m, []]));
    for (let i = 0; i < 200; i++) for (const rt of Object.values(transports)) await rt(); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (let j = 0; j < modes.length; j++) {
        const mode = modes[(j + r) % modes.length]!;
        const [t, kind, ms] = mode.split(' ') as [keyof typeof transports, string, string | undefined];
        if (kind === 'spin') await echoSpins(Number(ms) + 5);
        for (let p = 0; p < pings; p++) {
          if (kind === 'idle') await sleep(Number(ms));
          if (kind === 'compute') stream(Number(ms));
          if (kind === 'spin') await turn(Number(ms));
          samples[mode]!.push(await transports[t]());
        }
        if (kind === 'spin') {
          await echoSpins(0);
          await sleep(Number(ms) + 5); // its loop has stopped turning before the next mode
        }
      }
    }
    sock.destroy();
    sealedSock.destroy();
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
      what: `round trip of a ${MESSAGE_BYTES}-byte message echoed by another process on 127.0.0.1, over plain TCP, as odsi's frames sealed with ChaCha20-Poly1305 on plain TCP ('sealed'), and over odsi's libp2p transport (a STEP answered with a RESULT on a production Channel): kept busy, after an idle gap (both processes sleeping), after a compute gap (this process streaming a 64 MiB buffer, the echoing one sleeping), after a spin gap (both event loops turning, neither sleeping); interleaved, order rotated per round`,
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
