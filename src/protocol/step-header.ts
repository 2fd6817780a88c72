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
  queueMs: number;
  computeMs: number;
  sendMs: number;
  budgetInMs: number;
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

/** presence flags (byte 0 of a STEP/RESULT header); bits 3–7 are reserved: 0, refused otherwise */
export const FLAG_BUDGET = 0x01;
export const FLAG_REPLAY = 0x02;
export const FLAG_REPLAY_TRUE = 0x04;
const STEP_FLAGS = FLAG_BUDGET | FLAG_REPLAY | FLAG_REPLAY_TRUE;

/** dtype bytes */
export const DTYPE_CODES: Record<Dtype, number> = { f32: 0, f16: 1, bf16: 2 };
const DTYPES: readonly Dtype[] = ['f32', 'f16', 'bf16'];

/** bytes of one timeline entry besides its peer id: u16 length, 2 × u32, 5 × f64 */
const TIMING_FIXED = 2 + 4 + 4 + 5 * 8;

const STEP_MEMBERS = new Set(['sessionId', 'requestId', 'step', 'pos', 'nTokens', 'dtype', 'shape', 'budgetMs', 'timeline', 'replay']);
const RECEIPTS_MEMBERS = new Set(['sessionId', 'requestId', 'step']);

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });
// f64 conversion through one 8-byte scratch (no DataView per header)
const F64 = new Float64Array(1);
const F64B = new Uint8Array(F64.buffer);
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const NAMES: Record<number, string> = { 0x03: 'STEP', 0x04: 'RESULT', 0x0b: 'RECEIPTS' };

// ---------------------------------------------------------------- encoding

/** The binary header of a STEP or RESULT (`type` names it in errors): one exact-size buffer. */
export function encodeStepHeader(h: StepHeader, type = 0x03): Uint8Array {
  const name = NAMES[type] ?? 'STEP';
  const bad = (field: string, what: string) => new MessageError(`cannot encode ${name} header: ${field}: ${what}`, 'bad_message', undefined, undefined, type);
  const sidBytes = idBytes(h.sessionId, 'sessionId', bad);
  uint(h.requestId, MAX_U53, 'requestId', bad);
  uint(h.step, MAX_U53, 'step', bad);
  uint(h.pos, MAX_U32, 'pos', bad);
  uint(h.nTokens, MAX_U32, 'nTokens', bad);
  if (h.nTokens < 1) throw bad('nTokens', 'must be ≥ 1');
  const dtype = DTYPE_CODES[h.dtype];
  if (dtype === undefined || !Object.hasOwn(DTYPE_CODES, h.dtype)) throw bad('dtype', 'must be f32, f16 or bf16');
  if (!Array.isArray(h.shape) || h.shape.length !== 2) throw bad('shape', 'must be [nTokens, dim]');
  uint(h.shape[0], MAX_U32, 'shape.0', bad);
  uint(h.shape[1], MAX_U32, 'shape.1', bad);
  let flags = 0;
  if (h.budgetMs !== undefined) {
    if (!Number.isFinite(h.budgetMs)) throw bad('budgetMs', 'must be a finite number');
    flags |= FLAG_BUDGET;
  }
  if (h.replay !== undefined) {
    if (typeof h.replay !== 'boolean') throw bad('replay', 'must be a boolean');
    flags |= h.replay ? FLAG_REPLAY | FLAG_REPLAY_TRUE : FLAG_REPLAY;
  }
  const tl = h.timeline;
  if (!Array.isArray(tl) || tl.length > MAX_TIMELINE) throw bad('timeline', `must be an array of ≤ ${MAX_TIMELINE} entries`);
  let size = 1 + 2 + sidBytes + 8 + 8 + 4 + 4 + 1 + 4 + 4 + (flags & FLAG_BUDGET ? 8 : 0) + 1 + 2;
  for (let i = 0; i < tl.length; i++) {
    const t = tl[i]!;
    const at = `timeline.${i}`;
    size += TIMING_FIXED + idBytes(t.peerId, `${at}.peerId`, bad);
    uint(t.start, MAX_U32, `${at}.start`, bad);
    uint(t.end, MAX_U32, `${at}.end`, bad);
    nonNegative(t.queueMs, `${at}.queueMs`, bad);
    nonNegative(t.computeMs, `${at}.computeMs`, bad);
    nonNegative(t.sendMs, `${at}.sendMs`, bad);
    finite(t.budgetInMs, `${at}.budgetInMs`, bad);
    finite(t.slackMs, `${at}.slackMs`, bad);
  }
  const ext = extensionOf(h, STEP_MEMBERS, bad);
  size += ext.length;

  const b = new Uint8Array(size);
  let o = 0;
  b[o++] = flags;
  o = putString(b, o, h.sessionId, sidBytes);
  o = putU53(b, o, h.requestId);
  o = putU53(b, o, h.step);
  o = putU32(b, o, h.pos);
  o = putU32(b, o, h.nTokens);
  b[o++] = dtype;
  o = putU32(b, o, h.shape[0]!);
  o = putU32(b, o, h.shape[1]!);
  if (flags & FLAG_BUDGET) o = putF64(b, o, h.budgetMs!);
  b[o++] = tl.length;
  for (let i = 0; i < tl.length; i++) {
    const t = tl[i]!;
    o = putString(b, o, t.peerId, utf8Length(t.peerId));
    o = putU32(b, o, t.start);
    o = putU32(b, o, t.end);
    o = putF64(b, o, t.queueMs);
    o = putF64(b, o, t.computeMs);
    o = putF64(b, o, t.sendMs);
    o = putF64(b, o, t.budgetInMs);
    o = putF64(b, o, t.slackMs);
  }
  o = putU16(b, o, ext.length);
  b.set(ext, o);
  return b;
}

/** The binary header of a RECEIPTS message. */
export function encodeReceiptsHeader(h: ReceiptsHeader): Uint8Array {
  const bad = (field: string, what: string) => new MessageError(`cannot encode RECEIPTS header: ${field}: ${what}`, 'bad_message', undefined, undefined, 0x0b);
  const sidBytes = idBytes(h.sessionId, 'sessionId', bad);
  uint(h.requestId, MAX_U53, 'requestId', bad);
  uint(h.step, MAX_U53, 'step', bad);
  const ext = extensionOf(h, RECEIPTS_MEMBERS, bad);
  const b = new Uint8Array(1 + 2 + sidBytes + 8 + 8 + 2 + ext.length);
  let o = 1; // flags: none defined, 0
  o = putString(b, o, h.sessionId, sidBytes);
  o = putU53(b, o, h.requestId);
  o = putU53(b, o, h.step);
  o = putU16(b, o, ext.length);
  b.set(ext, o);
  return b;
}

type Bad = (field: string, what: string) => MessageError;

function idBytes(s: unknown, field: string, bad: Bad): number {
  if (typeof s !== 'string' || s.length < 1 || s.length > MAX_ID_CHARS) throw bad(field, `must be a string of 1–${MAX_ID_CHARS} characters`);
  return utf8Length(s);
}
function uint(v: unknown, max: number, field: string, bad: Bad): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw bad(field, `must be an integer in 0…${max}`);
}
function finite(v: unknown, field: string, bad: Bad): void {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(field, 'must be a finite number');
}
function nonNegative(v: unknown, field: string, bad: Bad): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw bad(field, 'must be a finite number ≥ 0');
}

const EMPTY = new Uint8Array(0);

/** the members `h` has besides the fixed ones, as UTF-8 JSON (empty when none: no allocation) */
function extensionOf(h: object, fixed: Set<string>, bad: Bad): Uint8Array {
  let ext: Record<string, unknown> | undefined;
  for (const k in h) {
    if (fixed.has(k)) continue;
    const v = (h as Record<string, unknown>)[k];
    if (v === undefined) continue;
    (ext ??= {})[k] = v;
  }
  if (!ext) return EMPTY;
  const bytes = enc.encode(JSON.stringify(ext));
  if (bytes.length > MAX_EXTENSION) throw bad('(extension)', `members beyond the fixed layout take ${bytes.length} bytes, over ${MAX_EXTENSION}`);
  return bytes;
}

/** UTF-8 length of a string as TextEncoder writes it (a lone surrogate becomes U+FFFD, 3 bytes) */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

function putString(b: Uint8Array, o: number, s: string, n: number): number {
  o = putU16(b, o, n);
  if (n === s.length) for (let i = 0; i < n; i++) b[o + i] = s.charCodeAt(i); // ASCII
  else enc.encodeInto(s, b.subarray(o, o + n));
  return o + n;
}
function putU16(b: Uint8Array, o: number, v: number): number {
  b[o] = v & 0xff;
  b[o + 1] = v >>> 8;
  return o + 2;
}
function putU32(b: Uint8Array, o: number, v: number): number {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = v >>> 24;
  return o + 4;
}
/** u64, little-endian, of an integer ≤ 2⁵³ − 1 */
function putU53(b: Uint8Array, o: number, v: number): number {
  putU32(b, o, v % 0x1_0000_0000);
  return putU32(b, o + 4, Math.floor(v / 0x1_0000_0000));
}
function putF64(b: Uint8Array, o: number, v: number): number {
  F64[0] = v;
  if (LE) for (let i = 0; i < 8; i++) b[o + i] = F64B[i]!;
  else for (let i = 0; i < 8; i++) b[o + i] = F64B[7 - i]!;
  return o + 8;
}

// ---------------------------------------------------------------- decoding

/** Reads one header; remembers the ids it has read so an error can echo them. */
class Reader {
  o = 0;
  sessionId: string | undefined;
  requestId: number | undefined;
  constructor(
    readonly b: Uint8Array,
    readonly type: number,
  ) {}

  bad(field: string, what: string): MessageError {
    return new MessageError(`${NAMES[this.type] ?? 'header'} header invalid: ${field}: ${what}`, 'bad_message', this.sessionId, this.requestId, this.type);
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
    const b = this.b;
    const o = this.o;
    this.o += 2;
    return b[o]! | (b[o + 1]! << 8);
  }
  u32(field: string): number {
    this.need(4, field);
    const b = this.b;
    const o = this.o;
    this.o += 4;
    return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
  }
  u53(field: string): number {
    const lo = this.u32(field);
    const hi = this.u32(field);
    if (hi > 0x1f_ffff) throw this.bad(field, `must be an integer in 0…${MAX_U53}`);
    return hi * 0x1_0000_0000 + lo;
  }
  f64(field: string): number {
    this.need(8, field);
    const b = this.b;
    const o = this.o;
    this.o += 8;
    if (LE) for (let i = 0; i < 8; i++) F64B[i] = b[o + i]!;
    else for (let i = 0; i < 8; i++) F64B[7 - i] = b[o + i]!;
    const v = F64[0]!;
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
    timeline.push({ peerId, start, end, queueMs, computeMs, sendMs, budgetInMs: r.f64('timeline.budgetInMs'), slackMs: r.f64('timeline.slackMs') });
  }
  const h: StepHeader = { sessionId, requestId, step, pos, nTokens, dtype, shape, timeline };
  if (budgetMs !== undefined) h.budgetMs = budgetMs;
  if (flags & FLAG_REPLAY) h.replay = (flags & FLAG_REPLAY_TRUE) !== 0;
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
