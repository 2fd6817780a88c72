// CPU per per-step header: the binary STEP/RESULT/RECEIPTS headers (src/protocol/step-header.ts,
// act 2.0.0) vs the JSON + zod headers they replaced (act ≤ 1.4.0), encode + parse together.
//
//   node dist/bench/step-header.js [--rounds 15] [--iters 20000] [--out FILE]
//
// Headers: a STEP as hop 0 gets it (no timeline, a budget), a STEP after three hops (three
// timeline entries with real peer ids: what the last hop sends as RESULT on a 3-hop route) and
// a RECEIPTS header. Per header and codec one block = `iters` × (encode the header object to
// bytes, then decode + validate those bytes back to an object), the work every hop does per
// step and message. The binary side is the production code (encodeHeader / parseHeader of
// src/protocol/messages.ts); the JSON side is kept only here: JSON.stringify + TextEncoder,
// then TextDecoder + JSON.parse + the former zod schemas (copied below unchanged). Every round
// runs all blocks in a new random order; results are medians over rounds of µs per header, and
// the ratio JSON / binary per round, median and range. Also bytes per header. The "in a frame"
// columns do the same inside a frame (empty payload) as on the wire: JSON bytes copied into
// the frame vs encodeMessage, which writes the binary header into a reused buffer and copies
// it into the frame (no header buffer of its own), then the header parsed from the frame.

import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { z } from 'zod';
import { PREAMBLE_BYTES, encodeFrame } from '../src/protocol/frame.js';
import { MsgType, encodeHeader, encodeMessage, parseHeader, type Message, type ReceiptsHeader, type StepHeader } from '../src/protocol/messages.js';
import { describeMachine, machineLine } from './lib/machine.js';
import { writeResult, table } from './lib/results.js';

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '15' },
    iters: { type: 'string', default: '20000' },
    out: { type: 'string' },
  },
});
const ROUNDS = Number(args.rounds);
const ITERS = Number(args.iters);
const OUT = args.out ?? join(ROOT, 'bench/results/step-header.json');

// ---- the JSON baseline: act 1.4.0's schemas (src/protocol/messages.ts before act 2.0.0)
const id = z.string().min(1).max(256);
const uint = z.number().int().nonnegative();
const ms = z.number().finite().nonnegative();
const timingSchema = z.object({
  peerId: id,
  start: uint,
  end: uint,
  queueMs: ms,
  computeMs: ms,
  sendMs: ms,
  budgetInMs: z.number().finite(),
  slackMs: z.number().finite(),
});
const stepSchema = z.looseObject({
  sessionId: id,
  requestId: uint,
  step: uint,
  pos: uint,
  nTokens: z.number().int().positive(),
  dtype: z.enum(['f32', 'f16', 'bf16']),
  shape: z.array(uint).length(2),
  budgetMs: z.number().finite().optional(),
  timeline: z.array(timingSchema).max(32),
  replay: z.boolean().optional(),
});
const receiptsSchema = z.looseObject({ sessionId: id, requestId: uint, step: uint });
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });
const jsonEncode = (h: object) => enc.encode(JSON.stringify(h));
const jsonParse = (b: Uint8Array, schema: z.ZodType) => {
  const r = schema.safeParse(JSON.parse(dec.decode(b)));
  if (!r.success) throw new Error('invalid');
  return r.data as { requestId: number };
};

// ---- the headers
const peers = ['16Uiu2HAkzdQ5Y9SYT91K1ue5SxXwgmajXntfScGnLYeip5hHyWmT', '16Uiu2HAm12A2heuphsgWqFjE3jcHVXNBfte9HU1fuQYRSKh6JSpN', '16Uiu2HAmHNqoSvjy1LSi5cMFrgZy87n43okaH9MD9Q4wP1oEzf6S'];
const hop0: StepHeader = { sessionId: 'chatcmpl-7f3a9c2e41b8.r1', requestId: 1042, step: 57, pos: 131, nTokens: 1, dtype: 'f32', shape: [1, 576], budgetMs: 250, timeline: [] };
const threeHops: StepHeader = {
  ...hop0,
  timeline: peers.map((peerId, i) => ({
    peerId,
    start: i * 10,
    end: i * 10 + 10,
    queueMs: 0.041,
    computeMs: 2.137,
    sendMs: 0.006,
    budgetInMs: 250 - 2.5 * i,
    slackMs: 247.312 - 2.5 * i,
  })),
};
const receipts: ReceiptsHeader = { sessionId: hop0.sessionId, requestId: 1042, step: 57 };
const HEADERS: { name: string; type: MsgType.STEP | MsgType.RECEIPTS; header: StepHeader | ReceiptsHeader; schema: z.ZodType }[] = [
  { name: 'STEP at hop 0 (no timeline)', type: MsgType.STEP, header: hop0, schema: stepSchema },
  { name: 'STEP after 3 hops (3 timeline entries)', type: MsgType.STEP, header: threeHops, schema: stepSchema },
  { name: 'RECEIPTS', type: MsgType.RECEIPTS, header: receipts, schema: receiptsSchema },
];

// header: the header object → a new buffer of its bytes → a validated object again;
// frame: as on the wire, the header written into a frame (empty payload) and read from it
// (binary: encodeMessage, which writes the header straight into the frame, and parseHeader)
type Codec = 'json' | 'binary' | 'json-frame' | 'binary-frame';
const CODECS: Codec[] = ['json', 'binary', 'json-frame', 'binary-frame'];
const EMPTY = new Uint8Array(0);
let sink = 0;
function block(codec: Codec, h: (typeof HEADERS)[number]): number {
  const m = { type: h.type, header: h.header, payload: EMPTY } as Message;
  const t = process.hrtime.bigint();
  if (codec === 'json')
    for (let i = 0; i < ITERS; i++) sink += jsonParse(jsonEncode(h.header), h.schema).requestId;
  else if (codec === 'binary')
    for (let i = 0; i < ITERS; i++) sink += (parseHeader(h.type, encodeHeader(m)) as { requestId: number }).requestId;
  else if (codec === 'json-frame')
    for (let i = 0; i < ITERS; i++) {
      const hb = jsonEncode(h.header);
      const f = encodeFrame({ type: h.type, flags: 0, header: hb, payload: EMPTY });
      sink += jsonParse(f.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + hb.length), h.schema).requestId;
    }
  else
    for (let i = 0; i < ITERS; i++) {
      const f = encodeMessage(m)[0]!;
      sink += (parseHeader(h.type, f.subarray(PREAMBLE_BYTES)) as { requestId: number }).requestId;
    }
  return Number(process.hrtime.bigint() - t) / 1e3 / ITERS; // µs per header
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}
const shuffle = <T>(xs: T[]): T[] => {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
};

function main(): void {
  const machine = describeMachine();
  console.log(machineLine(machine));
  // the two codecs agree on every header
  for (const h of HEADERS) {
    const back = parseHeader(h.type, encodeHeader({ type: h.type, header: h.header } as Message));
    if (!isDeepStrictEqual(back, jsonParse(jsonEncode(h.header), h.schema))) throw new Error(`${h.name}: codecs disagree`);
  }
  const blocks = HEADERS.flatMap((h) => CODECS.map((codec) => ({ h, codec })));
  for (const b of blocks) block(b.codec, b.h); // warm-up: both codecs optimised before the first round
  const us: Record<string, number[]> = {};
  for (let r = 0; r < ROUNDS; r++)
    for (const b of shuffle(blocks)) (us[`${b.h.name}|${b.codec}`] ??= []).push(block(b.codec, b.h));
  const rows = HEADERS.map((h) => {
    const j = us[`${h.name}|json`]!;
    const b = us[`${h.name}|binary`]!;
    const jf = us[`${h.name}|json-frame`]!;
    const bf = us[`${h.name}|binary-frame`]!;
    const ratios = j.map((x, i) => x / b[i]!);
    const frameRatios = jf.map((x, i) => x / bf[i]!);
    return {
      header: h.name,
      jsonBytes: jsonEncode(h.header).length,
      binaryBytes: encodeHeader({ type: h.type, header: h.header } as Message).length,
      jsonUs: median(j),
      binaryUs: median(b),
      ratioMedian: median(ratios),
      ratioMin: Math.min(...ratios),
      ratioMax: Math.max(...ratios),
      jsonFrameUs: median(jf),
      binaryFrameUs: median(bf),
      frameRatioMedian: median(frameRatios),
      frameRatioMin: Math.min(...frameRatios),
      frameRatioMax: Math.max(...frameRatios),
    };
  });
  console.log(
    table(
      ['header', 'bytes JSON', 'bytes binary', 'µs JSON+zod', 'µs binary', 'ratio (range)', 'in a frame: µs JSON', 'µs binary', 'ratio (range)'],
      rows.map((r) => [
        r.header,
        String(r.jsonBytes),
        String(r.binaryBytes),
        r.jsonUs.toFixed(2),
        r.binaryUs.toFixed(2),
        `${r.ratioMedian.toFixed(1)}× (${r.ratioMin.toFixed(1)}–${r.ratioMax.toFixed(1)})`,
        r.jsonFrameUs.toFixed(2),
        r.binaryFrameUs.toFixed(2),
        `${r.frameRatioMedian.toFixed(1)}× (${r.frameRatioMin.toFixed(1)}–${r.frameRatioMax.toFixed(1)})`,
      ]),
    ),
  );
  writeResult(OUT, {
    bench: 'step-header',
    what: 'µs per encode + decode/validate of one header, JSON + zod (act 1.4.0) vs binary (act 2.0.0), interleaved blocks, medians over rounds',
    rounds: ROUNDS,
    itersPerBlock: ITERS,
    machine,
    loadAvgEnd: describeMachine().loadAvg,
    rows,
    sink,
  });
}

main();
