// odsi activation protocol: the binary headers of the per-step messages STEP, RESULT and
// RECEIPTS (docs/protocol.md §4 "Binary headers", §4.3). Every other message keeps its JSON
// header. Fixed field order, little-endian integers of stated widths, f64 for milliseconds,
// u16-length-prefixed UTF-8 strings, a presence-flags byte for the optional members, and a
// trailing u16-length-prefixed JSON object (empty on the hot path) that carries members this
// version does not know. The decoder checks every bound the former JSON schemas checked and
// answers any violation with MessageError('bad_message') echoing the ids it could read.

import { MessageError } from './message-error.js';

export type Dtype = 'f32' | 'f16' | 'bf16';

/** One hop's record of a step (docs/protocol.md §4 "HopTiming"). */
export interface StepTiming {
  peerId: string;
  start: number;
  end: number;
  /** receive → compute start (waiting behind other steps) */
  queueMs: number;
  computeMs: number;
  /** serialising and handing the output to the stream */
  sendMs: number;
  /** budget the hop received */
  budgetInMs: number;
  /** budget it passed on: budgetIn − its own time − half the RTT to the next hop */
  slackMs: number;
}

/** The header of STEP and RESULT; members beyond the fixed ones travel in the extension. */
export interface StepHeader {
  sessionId: string;
  requestId: number;
  step: number;
  pos: number;
  nTokens: number;
  dtype: Dtype;
  /** [nTokens, dim] */
  shape: number[];
  /** remaining deadline budget in ms, relative (clocks are not synchronised); absent = none */
  budgetMs?: number | undefined;
  timeline: StepTiming[];
  /** re-sent history after a failover: process as usual, marks the RESULT as replay */
  replay?: boolean | undefined;
  /**
   * (since act 2.1.0) the gateway needs the last position's output only (a prefill it samples
   * from): every hop computes all nTokens rows (they fill its KV cache) and passes all of them
   * on, but the last hop's RESULT carries only the last row (shape [1, dim]). Sent as true or
   * not at all.
   */
  lastRow?: true | undefined;
  [member: string]: unknown;
}

/** The header of RECEIPTS: the STEP/RESULT it follows (the receipts are its payload). */
export interface ReceiptsHeader {
  sessionId: string;
  requestId: number;
  step: number;
  [member: string]: unknown;
}

/** Most timeline entries a STEP/RESULT header may carry (= the longest route, MAX_ROUTE_HOPS). */
export const MAX_TIMELINE = 32;
/** ids (sessionId, peerId): 1–256 UTF-16 code units, so at most 768 UTF-8 bytes */
const MAX_ID_CHARS = 256;
const MAX_ID_BYTES = 3 * MAX_ID_CHARS;
const MAX_U32 = 0xffff_ffff;
const MAX_U53 = Number.MAX_SAFE_INTEGER;
const MAX_EXTENSION = 0xffff;

/** presence flags (byte 0 of a STEP/RESULT header); bits 4–7 are reserved: 0, refused otherwise */
export const FLAG_BUDGET = 0x01;
export const FLAG_REPLAY = 0x02;
export const FLAG_REPLAY_TRUE = 0x04;
export const FLAG_LAST_ROW = 0x08;
const STEP_FLAGS = FLAG_BUDGET | FLAG_REPLAY | FLAG_REPLAY_TRUE | FLAG_LAST_ROW;

/** dtype bytes */
export const DTYPE_CODES: Record<Dtype, number> = { f32: 0, f16: 1, bf16: 2 };
const DTYPES: readonly Dtype[] = ['f32', 'f16', 'bf16'];

const STEP_MEMBERS = new Set([
  'sessionId',
  'requestId',
  'step',
  'pos',
  'nTokens',
  'dtype',
  'shape',
  'budgetMs',
  'timeline',
  'replay',
  'lastRow',
]);
const RECEIPTS_MEMBERS = new Set(['sessionId', 'requestId', 'step']);

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

const NAMES: Record<number, string> = { 0x03: 'STEP', 0x04: 'RESULT', 0x0b: 'RECEIPTS' };

// ---------------------------------------------------------------- encoding

/**
 * Where headers are written, one at a time (encoding is synchronous): large enough for the
 * largest header the checks below let through (32 entries of 768-byte ids and a 64 KiB
 * extension, ≈ 92 KB), so writing needs no size pass and no allocation.
 */
const scratch = new Uint8Array(128 * 1024);
// native writers over it: one call per field, fast before V8 optimises this code too (a node
// encodes a few hundred headers a second, so much of it runs unoptimised)
const scratchView = new DataView(scratch.buffer);
const scratchText = Buffer.from(scratch.buffer);

/** The binary header of a STEP or RESULT (`type` names it in errors), as a new buffer. */
export function encodeStepHeader(h: StepHeader, type = 0x03): Uint8Array {
  return scratch.slice(0, writeStepHeader(h, type));
}

/** The binary header of a RECEIPTS message, as a new buffer. */
export function encodeReceiptsHeader(h: ReceiptsHeader): Uint8Array {
  return scratch.slice(0, writeReceiptsHeader(h));
}

/**
 * The header of a STEP, RESULT or RECEIPTS as a view of the shared scratch buffer, valid only
 * until the next call: for a caller that copies it at once (encodeMessage → encodeFrame).
 */
export function stepHeaderView(h: StepHeader | ReceiptsHeader, type: number): Uint8Array {
  return scratch.subarray(0, type === 0x0b ? writeReceiptsHeader(h as ReceiptsHeader) : writeStepHeader(h as StepHeader, type));
}

function writeStepHeader(h: StepHeader, type: number): number {
  // error texts are built only on failure: nothing is allocated per call on the way
  const bad = (field: string, what: string) =>
    new MessageError(`cannot encode ${NAMES[type] ?? 'STEP'} header: ${field}: ${what}`, 'bad_message', undefined, undefined, type);
  const b = scratch;
  let flags = 0;
  if (h.budgetMs !== undefined) {
    if (!isFinite(h.budgetMs)) throw bad('budgetMs', 'must be a finite number');
    flags |= FLAG_BUDGET;
  }
  if (h.replay !== undefined) {
    if (typeof h.replay !== 'boolean') throw bad('replay', 'must be a boolean');
    flags |= h.replay ? FLAG_REPLAY | FLAG_REPLAY_TRUE : FLAG_REPLAY;
  }
  if (h.lastRow !== undefined) {
    if (h.lastRow !== true) throw bad('lastRow', 'must be true or absent');
    flags |= FLAG_LAST_ROW;
  }
  b[0] = flags;
  let o = putIds(h, bad);
  if (!isUint(h.pos, MAX_U32)) throw bad('pos', uintRule(MAX_U32));
  o = putU32(o, h.pos);
  if (!isUint(h.nTokens, MAX_U32) || h.nTokens < 1) throw bad('nTokens', `must be an integer in 1…${MAX_U32}`);
  o = putU32(o, h.nTokens);
  const dtype = Object.hasOwn(DTYPE_CODES, h.dtype) ? DTYPE_CODES[h.dtype] : undefined;
  if (dtype === undefined) throw bad('dtype', 'must be f32, f16 or bf16');
  b[o++] = dtype;
  if (!Array.isArray(h.shape) || h.shape.length !== 2) throw bad('shape', 'must be [nTokens, dim]');
  if (!isUint(h.shape[0], MAX_U32)) throw bad('shape.0', uintRule(MAX_U32));
  if (!isUint(h.shape[1], MAX_U32)) throw bad('shape.1', uintRule(MAX_U32));
  o = putU32(o, h.shape[0]);
  o = putU32(o, h.shape[1]);
  if (flags & FLAG_BUDGET) o = putF64(o, h.budgetMs!);
  const tl = h.timeline;
  if (!Array.isArray(tl) || tl.length > MAX_TIMELINE) throw bad('timeline', `must be an array of ≤ ${MAX_TIMELINE} entries`);
  b[o++] = tl.length;
  for (let i = 0; i < tl.length; i++) {
    const t = tl[i]!;
    if (!isId(t.peerId)) throw bad(`timeline.${i}.peerId`, ID_RULE);
    if (!isUint(t.start, MAX_U32)) throw bad(`timeline.${i}.start`, uintRule(MAX_U32));
    if (!isUint(t.end, MAX_U32)) throw bad(`timeline.${i}.end`, uintRule(MAX_U32));
    if (!(isFinite(t.queueMs) && t.queueMs >= 0)) throw bad(`timeline.${i}.queueMs`, 'must be a finite number ≥ 0');
    if (!(isFinite(t.computeMs) && t.computeMs >= 0)) throw bad(`timeline.${i}.computeMs`, 'must be a finite number ≥ 0');
    if (!(isFinite(t.sendMs) && t.sendMs >= 0)) throw bad(`timeline.${i}.sendMs`, 'must be a finite number ≥ 0');
    if (!isFinite(t.budgetInMs)) throw bad(`timeline.${i}.budgetInMs`, 'must be a finite number');
    if (!isFinite(t.slackMs)) throw bad(`timeline.${i}.slackMs`, 'must be a finite number');
    o = putString(o, t.peerId);
    o = putU32(o, t.start);
    o = putU32(o, t.end);
    o = putF64(o, t.queueMs);
    o = putF64(o, t.computeMs);
    o = putF64(o, t.sendMs);
    o = putF64(o, t.budgetInMs);
    o = putF64(o, t.slackMs);
  }
  return putExtension(o, h, STEP_MEMBERS, bad);
}

/** sessionId, requestId, step after the flags byte (both layouts start so); the offset after them */
function putIds(h: ReceiptsHeader, bad: (field: string, what: string) => MessageError): number {
  if (!isId(h.sessionId)) throw bad('sessionId', ID_RULE);
  const o = putString(1, h.sessionId);
  if (!isUint(h.requestId, MAX_U53)) throw bad('requestId', uintRule(MAX_U53));
  if (!isUint(h.step, MAX_U53)) throw bad('step', uintRule(MAX_U53));
  return putU53(putU53(o, h.requestId), h.step);
}

function writeReceiptsHeader(h: ReceiptsHeader): number {
  const bad = (field: string, what: string) =>
    new MessageError(`cannot encode RECEIPTS header: ${field}: ${what}`, 'bad_message', undefined, undefined, 0x0b);
  const b = scratch;
  b[0] = 0; // flags: none defined
  return putExtension(putIds(h, bad), h, RECEIPTS_MEMBERS, bad);
}

type Bad = (field: string, what: string) => MessageError;

const ID_RULE = `must be a string of 1–${MAX_ID_CHARS} characters`;
const uintRule = (max: number) => `must be an integer in 0…${max}`;
function isId(s: unknown): s is string {
  return typeof s === 'string' && s.length >= 1 && s.length <= MAX_ID_CHARS;
}
function isUint(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}
function isFinite(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/** the members `h` has besides the fixed ones, as u16 length + UTF-8 JSON (length 0 when none) */
function putExtension(o: number, h: object, fixed: Set<string>, bad: Bad): number {
  let ext: Record<string, unknown> | undefined;
  for (const k in h) {
    if (fixed.has(k)) continue;
    const v = (h as Record<string, unknown>)[k];
    if (v === undefined) continue;
    (ext ??= Object.create(null) as Record<string, unknown>)[k] = v; // no prototype: a member named __proto__ stays a member
  }
  if (!ext) return putU16(o, 0);
  const bytes = enc.encode(JSON.stringify(ext));
  if (bytes.length > MAX_EXTENSION)
    throw bad('(extension)', `members beyond the fixed layout take ${bytes.length} bytes, over ${MAX_EXTENSION}`);
  o = putU16(o, bytes.length);
  scratch.set(bytes, o);
  return o + bytes.length;
}

/** u16 byte length + UTF-8 of a string of ≤ 256 code units (a lone surrogate becomes U+FFFD, as TextEncoder writes it) */
function putString(o: number, s: string): number {
  const len = scratchText.write(s, o + 2, 3 * s.length, 'utf8');
  putU16(o, len);
  return o + 2 + len;
}
function putU16(o: number, v: number): number {
  scratchView.setUint16(o, v, true);
  return o + 2;
}
function putU32(o: number, v: number): number {
  scratchView.setUint32(o, v, true);
  return o + 4;
}
/** u64, little-endian, of an integer ≤ 2⁵³ − 1 */
function putU53(o: number, v: number): number {
  scratchView.setUint32(o, v % 0x1_0000_0000, true);
  scratchView.setUint32(o + 4, Math.floor(v / 0x1_0000_0000), true);
  return o + 8;
}
function putF64(o: number, v: number): number {
  scratchView.setFloat64(o, v, true);
  return o + 8;
}

// ---------------------------------------------------------------- decoding

/** Reads one header; remembers the ids it has read so an error can echo them. */
class Reader {
  o = 0;
  sessionId: string | undefined;
  requestId: number | undefined;
  private readonly dv: DataView;
  constructor(
    readonly b: Uint8Array,
    readonly type: number,
  ) {
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  bad(field: string, what: string): MessageError {
    return new MessageError(
      `${NAMES[this.type] ?? 'header'} header invalid: ${field}: ${what}`,
      'bad_message',
      this.sessionId,
      this.requestId,
      this.type,
    );
  }
  need(n: number, field: string): void {
    if (this.o + n > this.b.length) throw this.bad(field, 'truncated');
  }
  u8(field: string): number {
    this.need(1, field);
    return this.b[this.o++]!;
  }
  u16(field: string): number {
    this.need(2, field);
    this.o += 2;
    return this.dv.getUint16(this.o - 2, true);
  }
  u32(field: string): number {
    this.need(4, field);
    this.o += 4;
    return this.dv.getUint32(this.o - 4, true);
  }
  u53(field: string): number {
    const lo = this.u32(field);
    const hi = this.u32(field);
    if (hi > 0x1f_ffff) throw this.bad(field, `must be an integer in 0…${MAX_U53}`);
    return hi * 0x1_0000_0000 + lo;
  }
  f64(field: string): number {
    this.need(8, field);
    this.o += 8;
    const v = this.dv.getFloat64(this.o - 8, true);
    if (!Number.isFinite(v)) throw this.bad(field, 'must be a finite number');
    return v;
  }
  id(field: string): string {
    const n = this.u16(field);
    if (n < 1 || n > MAX_ID_BYTES) throw this.bad(field, `must be a string of 1–${MAX_ID_CHARS} characters`);
    this.need(n, field);
    let s: string;
    try {
      s = dec.decode(this.b.subarray(this.o, this.o + n));
    } catch {
      throw this.bad(field, 'not UTF-8');
    }
    this.o += n;
    if (s.length > MAX_ID_CHARS) throw this.bad(field, `must be a string of 1–${MAX_ID_CHARS} characters`);
    return s;
  }
  /** the extension: the trailing JSON object's members, added to `h` (none may name a fixed member) */
  extension(h: Record<string, unknown>, fixed: Set<string>): void {
    const n = this.u16('(extension)');
    this.need(n, '(extension)');
    if (n > 0) {
      let ext: unknown;
      try {
        ext = JSON.parse(dec.decode(this.b.subarray(this.o, this.o + n)));
      } catch {
        throw this.bad('(extension)', 'not UTF-8 JSON');
      }
      if (typeof ext !== 'object' || ext === null || Array.isArray(ext)) throw this.bad('(extension)', 'not a JSON object');
      for (const k of Object.keys(ext)) {
        if (fixed.has(k)) throw this.bad('(extension)', `names ${k}, a member of the fixed layout`);
        Object.defineProperty(h, k, { value: (ext as Record<string, unknown>)[k], enumerable: true, writable: true, configurable: true });
      }
      this.o += n;
    }
    if (this.o !== this.b.length) throw this.bad('(end)', `${this.b.length - this.o} bytes after the header`);
  }
}

/** Decode and validate a STEP/RESULT header (`type` 0x03 or 0x04 names it in errors). */
export function decodeStepHeader(bytes: Uint8Array, type = 0x03): StepHeader {
  const r = new Reader(bytes, type);
  const flags = r.u8('(flags)');
  const sessionId = r.id('sessionId');
  r.sessionId = sessionId;
  const requestId = r.u53('requestId');
  r.requestId = requestId;
  if (flags & ~STEP_FLAGS) throw r.bad('(flags)', `reserved bits set: 0x${flags.toString(16).padStart(2, '0')}`);
  if (!(flags & FLAG_REPLAY) && flags & FLAG_REPLAY_TRUE) throw r.bad('(flags)', 'replay value without replay');
  const step = r.u53('step');
  const pos = r.u32('pos');
  const nTokens = r.u32('nTokens');
  if (nTokens < 1) throw r.bad('nTokens', 'must be ≥ 1');
  const dcode = r.u8('dtype');
  const dtype = DTYPES[dcode];
  if (dtype === undefined) throw r.bad('dtype', `unknown dtype byte ${dcode}`);
  const shape = [r.u32('shape.0'), r.u32('shape.1')];
  const budgetMs = flags & FLAG_BUDGET ? r.f64('budgetMs') : undefined;
  const n = r.u8('timeline');
  if (n > MAX_TIMELINE) throw r.bad('timeline', `${n} entries, at most ${MAX_TIMELINE}`);
  const timeline: StepTiming[] = [];
  for (let i = 0; i < n; i++) {
    const peerId = r.id('timeline.peerId');
    const start = r.u32('timeline.start');
    const end = r.u32('timeline.end');
    const queueMs = r.f64('timeline.queueMs');
    const computeMs = r.f64('timeline.computeMs');
    const sendMs = r.f64('timeline.sendMs');
    if (queueMs < 0 || computeMs < 0 || sendMs < 0) throw r.bad(`timeline.${i}`, 'queueMs, computeMs and sendMs must be ≥ 0');
    timeline.push({
      peerId,
      start,
      end,
      queueMs,
      computeMs,
      sendMs,
      budgetInMs: r.f64('timeline.budgetInMs'),
      slackMs: r.f64('timeline.slackMs'),
    });
  }
  // members in the order of the layout (and of the former JSON headers)
  const h: StepHeader =
    budgetMs !== undefined
      ? { sessionId, requestId, step, pos, nTokens, dtype, shape, budgetMs, timeline }
      : { sessionId, requestId, step, pos, nTokens, dtype, shape, timeline };
  if (flags & FLAG_REPLAY) h.replay = (flags & FLAG_REPLAY_TRUE) !== 0;
  if (flags & FLAG_LAST_ROW) h.lastRow = true;
  r.extension(h, STEP_MEMBERS);
  return h;
}

/** Decode and validate a RECEIPTS header. */
export function decodeReceiptsHeader(bytes: Uint8Array): ReceiptsHeader {
  const r = new Reader(bytes, 0x0b);
  const flags = r.u8('(flags)');
  const sessionId = r.id('sessionId');
  r.sessionId = sessionId;
  const requestId = r.u53('requestId');
  r.requestId = requestId;
  if (flags !== 0) throw r.bad('(flags)', `reserved bits set: 0x${flags.toString(16).padStart(2, '0')}`);
  const h: ReceiptsHeader = { sessionId, requestId, step: r.u53('step') };
  r.extension(h, RECEIPTS_MEMBERS);
  return h;
}
