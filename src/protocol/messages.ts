// odsi activation-protocol messages: types, header schemas, chunking, tensor payload codecs.
// See docs/protocol.md for the normative description and test vectors.

import { z } from 'zod';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../model/half.js';
import {
  ACT_FRAME_LIMITS,
  FLAG_MORE,
  FrameDecoder,
  FrameError,
  MAX_MESSAGE_PAYLOAD,
  encodeFrame,
  type Frame,
  type FrameLimits,
} from './frame.js';
import { MessageError, type ErrorCode } from './message-error.js';
import { decodeReceiptsHeader, decodeStepHeader, stepHeaderView, type Dtype, type ReceiptsHeader, type StepHeader } from './step-header.js';

export { MessageError, type ErrorCode } from './message-error.js';
export type { Dtype, ReceiptsHeader, StepHeader, StepTiming } from './step-header.js';

/** stream protocol: gateway→hop 1 and hop i→hop i+1 (OPEN first) */
// 1.2.0: routes ≤ MAX_ROUTE_HOPS, record ids always keccak256 of the session id (docs/protocol.md §10)
// 1.3.0: receipts leave the STEP header: a hop forwards its STEP first, then a binary RECEIPTS message (§4.3)
// 1.4.0: STEPs may follow the OPEN before OPENED (§2)
// 2.0.0: STEP and RECEIPTS headers are binary, not JSON (§4 "Binary headers"): a peer of 1.x
//        could not read a single step, so the major number changes (§10)
// 2.1.0: the STEP flag lastRow: the last hop's RESULT carries only the last position's row (§4)
// 2.2.0: ERRORs about a session are signed by their issuer; a hop relays only verified ones (§5 "Signed ERRORs")
export const ACT_PROTOCOL = '/odsi/act/2.2.0';
/**
 * stream protocol: last hop→gateway (OPENED first), carries RESULTs (1.1.0: each followed by its
 * RECEIPTS; 2.0.0: RESULT and RECEIPTS headers are binary, §4 "Binary headers"; 2.1.0: a RESULT
 * answering a lastRow STEP carries one row)
 */
export const RESULT_PROTOCOL = '/odsi/result/2.1.0';
// kv-transfer: stream protocol: a draining node → its replacement (KV messages, one KV_ACK back)
export const KV_PROTOCOL = '/odsi/kv/1.1.0';

/** per-connection stream limit for both protocols: one stream per session per hop */
export const MAX_SESSION_STREAMS = 1024;

/**
 * Longest route an OPEN may name (docs/protocol.md §3.1, "Header size"): a STEP/RESULT header
 * carries one timeline entry (≤ 0.8 KB, ~0.1 KB with a real peer id) per hop and a RECEIPTS
 * payload one receipt (≤ 1.2 KB) per hop, so 32 honest hops stay well inside the 64 KiB header
 * limit; 256 would not. (step-header.ts's MAX_TIMELINE is the same number.)
 */
export const MAX_ROUTE_HOPS = 32;

export enum MsgType {
  OPEN = 0x01,
  OPENED = 0x02,
  STEP = 0x03,
  RESULT = 0x04,
  ERROR = 0x05,
  CLOSE = 0x06,
  TRUNCATE = 0x07,
  KV = 0x08, // kv-transfer: one layer of a session's KV cache (payload: K then V, f32)
  KV_ACK = 0x09, // kv-transfer: the replacement imported the session (or an ERROR instead)
  AUDIT = 0x0a, // audit protocols only: one request or reply (audit-messages.ts)
  RECEIPTS = 0x0b, // accountability: the signed receipts of one step so far, after its STEP/RESULT (receipt-codec.ts)
}

export const DTYPE_BYTES: Record<Dtype, number> = { f32: 4, f16: 2, bf16: 2 };

// JSON header objects are loose: members this version does not know are kept and forwarded
// unchanged (the binary STEP/RESULT/RECEIPTS headers carry them in their extension).
const id = z.string().min(1).max(256);
const uint = z.number().int().nonnegative();

export const hopSchema = z.object({ peerId: id, addrs: z.array(z.string().max(512)).max(32), start: uint, end: uint });
const dtypeSchema = z.enum(['f32', 'f16', 'bf16']);

export const openSchema = z.looseObject({
  sessionId: id,
  modelId: id,
  /** the full chain; route[hop] is the receiver, route[hop+1] its successor */
  route: z.array(hopSchema).min(1).max(MAX_ROUTE_HOPS),
  hop: uint,
  /** where the last hop sends OPENED/RESULT frames */
  reply: z.object({ peerId: id, addrs: z.array(z.string().max(512)).max(32) }),
  dtype: dtypeSchema.default('f32'),
  hidden: uint.optional(),
  /** KV tokens to reserve for this session on every hop */
  maxTokens: uint.optional(),
  idleTimeoutMs: uint.optional(),
  // session ownership (open-signature.ts): the gateway (reply.peerId) signs the route description
  /** unix ms, gateway's clock */
  issuedAt: uint.optional(),
  /** unix ms; hops refuse the OPEN after this (at most OPEN_TTL_MS after issuedAt) */
  expiresAt: uint.optional(),
  /** hex 64-byte compact ECDSA by the gateway's key over open-signature.ts's signed bytes */
  signature: z.string().max(256).optional(),
});
export const openedSchema = z.looseObject({ sessionId: id, peers: z.array(id) });
// STEP, RESULT and RECEIPTS headers are binary (step-header.ts, docs/protocol.md §4 "Binary headers")
/** the longest `reason` an ERROR may carry (docs/protocol.md §3) */
export const MAX_ERROR_REASON = 4096;
export const errorSchema = z.looseObject({
  sessionId: id.optional(),
  requestId: uint.optional(),
  code: z.string().min(1).max(64),
  reason: z.string().max(MAX_ERROR_REASON),
  /** the failing hop */
  peerId: z.string().max(256),
  hop: uint.optional(),
  /** the hop that issued it (an ERROR about a session is signed: error-signature.ts) */
  from: z.string().max(256).optional(),
  /** a relay's account of an ERROR its next hop sent about their stream, not a session (node/error-relay.ts) */
  stream: z.literal(true).optional(),
  /** the issuer's signature, 64 bytes hex */
  signature: z.string().max(128).optional(),
});
export const closeSchema = z.looseObject({ sessionId: id, reason: z.string().max(1024).optional() });
export const truncateSchema = z.looseObject({ sessionId: id, pos: uint });

// kv-transfer: KV hand-over. Every layer of [start,end) is one KV message; the receiver checks
// model id, range and sizes, imports once all layers arrived, and answers KV_ACK.
export const kvSchema = z.looseObject({
  sessionId: id,
  modelId: id,
  start: uint,
  end: uint,
  /** cached positions */
  length: uint,
  /** absolute layer index in [start, end) */
  layer: uint,
  /** nKvHeads * headDim */
  kvDim: uint,
  /** the owner's invitation (first KV message of a stream): the session's OPEN as signed by its gateway, spares naming the receiver */
  open: openSchema.optional(),
});
export const kvAckSchema = z.looseObject({ sessionId: id, length: uint });
// audit protocols: any JSON object; the audit modules check the members of their requests/replies
export const auditSchema = z.looseObject({});
export type KvHeader = z.infer<typeof kvSchema>;

export type OpenHeader = z.infer<typeof openSchema>;
export type OpenedHeader = z.infer<typeof openedSchema>;
export type ErrorHeader = z.infer<typeof errorSchema> & { code: ErrorCode | string };
export type CloseHeader = z.infer<typeof closeSchema>;
export type TruncateHeader = z.infer<typeof truncateSchema>;

export type Message =
  | { type: MsgType.OPEN; header: OpenHeader; payload?: Uint8Array }
  | { type: MsgType.OPENED; header: OpenedHeader; payload?: Uint8Array }
  | { type: MsgType.STEP; header: StepHeader; payload: Uint8Array }
  | { type: MsgType.RESULT; header: StepHeader; payload: Uint8Array }
  | { type: MsgType.ERROR; header: ErrorHeader; payload?: Uint8Array }
  | { type: MsgType.CLOSE; header: CloseHeader; payload?: Uint8Array }
  | { type: MsgType.TRUNCATE; header: TruncateHeader; payload?: Uint8Array }
  | { type: MsgType.KV; header: KvHeader; payload: Uint8Array } // kv-transfer
  | { type: MsgType.KV_ACK; header: z.infer<typeof kvAckSchema>; payload?: Uint8Array } // kv-transfer
  | { type: MsgType.AUDIT; header: z.infer<typeof auditSchema>; payload?: Uint8Array }
  | { type: MsgType.RECEIPTS; header: ReceiptsHeader; payload: Uint8Array };

/** the JSON headers' schemas (STEP, RESULT and RECEIPTS headers are binary) */
const SCHEMAS: Partial<Record<MsgType, z.ZodType>> = {
  [MsgType.OPEN]: openSchema,
  [MsgType.OPENED]: openedSchema,
  [MsgType.ERROR]: errorSchema,
  [MsgType.CLOSE]: closeSchema,
  [MsgType.TRUNCATE]: truncateSchema,
  [MsgType.KV]: kvSchema, // kv-transfer
  [MsgType.KV_ACK]: kvAckSchema, // kv-transfer
  [MsgType.AUDIT]: auditSchema,
};

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });
const EMPTY = new Uint8Array(0);

/** Size limits of one protocol's messages: its frames' limits and the reassembled payload's. */
export interface MessageLimits extends FrameLimits {
  maxMessagePayload: number;
}
export const ACT_LIMITS: MessageLimits = { ...ACT_FRAME_LIMITS, maxMessagePayload: MAX_MESSAGE_PAYLOAD };

/** Encode a message as one or more frames (payloads over limits.maxPayload are chunked). */
export function encodeMessage(m: Message, limits: MessageLimits = ACT_LIMITS): Uint8Array[] {
  const payload = m.payload ?? EMPTY;
  if (payload.length > limits.maxMessagePayload)
    throw new FrameError(`message payload of ${payload.length} bytes exceeds ${limits.maxMessagePayload}`, 'too_large');
  // a binary header is written into a shared buffer and copied into the first frame at once
  const header = headerView(m);
  const frames: Uint8Array[] = [];
  let off = 0;
  do {
    const n = Math.min(limits.maxPayload, payload.length - off);
    const last = off + n >= payload.length;
    frames.push(
      encodeFrame(
        { type: m.type, flags: last ? 0 : FLAG_MORE, header: off === 0 ? header : EMPTY, payload: payload.subarray(off, off + n) },
        limits,
      ),
    );
    off += n;
  } while (off < payload.length);
  return frames;
}

const BINARY: Partial<Record<MsgType, true>> = { [MsgType.STEP]: true, [MsgType.RESULT]: true, [MsgType.RECEIPTS]: true };

/** A message's header bytes: binary for STEP, RESULT and RECEIPTS (a view of a shared buffer, valid until the next call), UTF-8 JSON for the others. */
function headerView(m: Message): Uint8Array {
  return BINARY[m.type] ? stepHeaderView(m.header as StepHeader | ReceiptsHeader, m.type) : enc.encode(JSON.stringify(m.header));
}

/** A message's header bytes, the caller's own. */
export function encodeHeader(m: Message): Uint8Array {
  return headerView(m).slice();
}

/** Decode and validate a header: the binary layouts, or JSON against its type's schema. */
export function parseHeader(type: number, headerBytes: Uint8Array): Message['header'] {
  if (type === MsgType.STEP || type === MsgType.RESULT) return decodeStepHeader(headerBytes, type);
  if (type === MsgType.RECEIPTS) return decodeReceiptsHeader(headerBytes);
  const schema = SCHEMAS[type as MsgType];
  if (!schema) throw new MessageError(`unknown message type 0x${type.toString(16).padStart(2, '0')}`);
  let raw: unknown;
  try {
    raw = JSON.parse(dec.decode(headerBytes));
  } catch {
    throw new MessageError(`${MsgType[type]} header is not UTF-8 JSON`, 'bad_message', undefined, undefined, type);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    // echo ids back only when they are themselves valid, so the error frame is valid
    const sidR = id.safeParse((raw as { sessionId?: unknown })?.sessionId);
    const ridR = uint.safeParse((raw as { requestId?: unknown })?.requestId);
    const issue = r.error.issues[0];
    throw new MessageError(
      `${MsgType[type]} header invalid: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`,
      'bad_message',
      sidR.success ? sidR.data : undefined,
      ridR.success ? ridR.data : undefined,
      type,
    );
  }
  return r.data as Message['header'];
}

/**
 * Turns a byte stream into messages: frames → reassembled payloads → validated headers.
 * push() throws FrameError (fatal: reset the stream) or MessageError (reply, keep going).
 * A MessageError leaves the decoder in a clean state, ready for the next message.
 */
export class MessageDecoder {
  private readonly frames: FrameDecoder;
  private readonly maxMessagePayload: number;
  private partial: { type: number; header: Uint8Array; parts: Uint8Array[]; size: number } | undefined;
  private ready: Message[] = [];

  constructor(limits: MessageLimits = ACT_LIMITS) {
    this.frames = new FrameDecoder(limits);
    this.maxMessagePayload = limits.maxMessagePayload;
  }

  push(data: Uint8Array): Message[] {
    for (const f of this.frames.push(data)) this.onFrame(f);
    const out = this.ready;
    this.ready = [];
    return out;
  }

  private onFrame(f: Frame): void {
    if (this.partial) {
      if (f.type !== this.partial.type || f.header.length !== 0) {
        this.partial = undefined;
        throw new FrameError('continuation frame does not continue the message in progress', 'bad_frame');
      }
    } else {
      if (f.header.length === 0) throw new FrameError('first frame of a message has no header', 'bad_frame');
      this.partial = { type: f.type, header: f.header, parts: [], size: 0 };
    }
    const p = this.partial;
    p.size += f.payload.length;
    if (p.size > this.maxMessagePayload) {
      this.partial = undefined;
      throw new FrameError(`message payload exceeds ${this.maxMessagePayload} bytes`, 'too_large');
    }
    if (f.payload.length) p.parts.push(f.payload);
    if (f.flags & FLAG_MORE) return;
    this.partial = undefined;
    const payload = p.parts.length === 1 ? p.parts[0]! : concat(p.parts, p.size);
    // validate after clearing `partial`, so a bad header costs only this message
    const header = parseHeader(p.type, p.header);
    this.ready.push({ type: p.type, header, payload } as Message);
  }
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---- tensor payloads (little-endian) ----

const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function encodeTensor(x: Float32Array, dtype: Dtype): Uint8Array {
  if (dtype === 'f32') {
    if (LE) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    const out = new Uint8Array(x.length * 4);
    const dv = new DataView(out.buffer);
    for (let i = 0; i < x.length; i++) dv.setFloat32(i * 4, x[i]!, true);
    return out;
  }
  const out = new Uint8Array(x.length * 2);
  const dv = new DataView(out.buffer);
  const conv = dtype === 'f16' ? f32ToF16 : f32ToBf16;
  for (let i = 0; i < x.length; i++) dv.setUint16(i * 2, conv(x[i]!), true);
  return out;
}

export function decodeTensor(b: Uint8Array, dtype: Dtype, n: number): Float32Array {
  if (b.length !== n * DTYPE_BYTES[dtype])
    throw new MessageError(`payload has ${b.length} bytes, expected ${n} × ${dtype} = ${n * DTYPE_BYTES[dtype]}`);
  const out = new Float32Array(n);
  if (dtype === 'f32') {
    if (LE) new Uint8Array(out.buffer).set(b);
    else {
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(i * 4, true);
    }
    return out;
  }
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const conv = dtype === 'f16' ? f16ToF32 : bf16ToF32;
  for (let i = 0; i < n; i++) out[i] = conv(dv.getUint16(i * 2, true));
  return out;
}
