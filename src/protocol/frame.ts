// Framing of odsi messages on a byte stream (the activation protocols and, with larger
// limits, the audit protocols).
//
// Every frame starts with a 16-byte preamble, all integers little-endian:
//   0  4  magic "ODSI" (4f 44 53 49)
//   4  1  version (1)
//   5  1  message type
//   6  2  flags; bit 0 = MORE (another frame of the same message follows)
//   8  4  header length H (≤ MAX_HEADER_BYTES)
//  12  4  payload length P (≤ MAX_FRAME_PAYLOAD)
//  16  H  header: UTF-8 JSON object (only in a message's first frame; 0 in continuations)
//  16+H P payload bytes
// A message larger than MAX_FRAME_PAYLOAD is split into frames that all carry its type; the
// receiver concatenates payloads until a frame without MORE, up to MAX_MESSAGE_PAYLOAD or the
// smaller cap its stream sets (src/p2p/channel.ts: a node derives it from its hidden size).

export const FRAME_MAGIC = new Uint8Array([0x4f, 0x44, 0x53, 0x49]);
export const FRAME_VERSION = 1;
export const PREAMBLE_BYTES = 16;
export const MAX_HEADER_BYTES = 64 * 1024;
export const MAX_FRAME_PAYLOAD = 1024 * 1024;
export const MAX_MESSAGE_PAYLOAD = 64 * 1024 * 1024;
export const FLAG_MORE = 1;

export interface Frame {
  type: number;
  flags: number;
  header: Uint8Array;
  payload: Uint8Array;
}

/** A framing violation: the byte stream cannot be trusted any further and must be reset. */
export class FrameError extends Error {
  constructor(
    message: string,
    readonly code: 'bad_frame' | 'too_large',
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Largest header and payload of one frame; a protocol on this framing may set its own. */
export interface FrameLimits {
  maxHeader: number;
  maxPayload: number;
}
export const ACT_FRAME_LIMITS: FrameLimits = { maxHeader: MAX_HEADER_BYTES, maxPayload: MAX_FRAME_PAYLOAD };

export function encodeFrame(f: Frame, limits: FrameLimits = ACT_FRAME_LIMITS): Uint8Array {
  if (f.header.length > limits.maxHeader) throw new FrameError(`frame header of ${f.header.length} bytes exceeds ${limits.maxHeader}`, 'too_large');
  if (f.payload.length > limits.maxPayload) throw new FrameError(`frame payload of ${f.payload.length} bytes exceeds ${limits.maxPayload}`, 'too_large');
  const out = new Uint8Array(PREAMBLE_BYTES + f.header.length + f.payload.length);
  const dv = new DataView(out.buffer);
  out.set(FRAME_MAGIC, 0);
  out[4] = FRAME_VERSION;
  out[5] = f.type;
  dv.setUint16(6, f.flags, true);
  dv.setUint32(8, f.header.length, true);
  dv.setUint32(12, f.payload.length, true);
  out.set(f.header, PREAMBLE_BYTES);
  out.set(f.payload, PREAMBLE_BYTES + f.header.length);
  return out;
}

/**
 * Incremental frame parser: push() bytes as they arrive, get whole frames back. Checks the
 * preamble before buffering a frame's body, so an oversized length is refused at once.
 */
export class FrameDecoder {
  private chunks: Uint8Array[] = [];
  private buffered = 0;

  constructor(private readonly limits: FrameLimits = ACT_FRAME_LIMITS) {}

  push(data: Uint8Array): Frame[] {
    if (data.length) {
      this.chunks.push(data);
      this.buffered += data.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < PREAMBLE_BYTES) break;
      const pre = this.peek(PREAMBLE_BYTES);
      for (let i = 0; i < 4; i++) {
        if (pre[i] !== FRAME_MAGIC[i]) throw new FrameError('bad frame magic (expected "ODSI")', 'bad_frame');
      }
      if (pre[4] !== FRAME_VERSION) throw new FrameError(`unsupported frame version ${pre[4]} (this node speaks ${FRAME_VERSION})`, 'bad_frame');
      const dv = new DataView(pre.buffer, pre.byteOffset, PREAMBLE_BYTES);
      const h = dv.getUint32(8, true);
      const p = dv.getUint32(12, true);
      if (h > this.limits.maxHeader) throw new FrameError(`frame header of ${h} bytes exceeds ${this.limits.maxHeader}`, 'too_large');
      if (p > this.limits.maxPayload) throw new FrameError(`frame payload of ${p} bytes exceeds ${this.limits.maxPayload}`, 'too_large');
      const total = PREAMBLE_BYTES + h + p;
      if (this.buffered < total) break;
      const all = this.take(total);
      frames.push({
        type: all[5]!,
        flags: dv.getUint16(6, true),
        header: all.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + h),
        payload: all.subarray(PREAMBLE_BYTES + h, total),
      });
    }
    return frames;
  }

  /** bytes held waiting for the rest of a frame */
  get pending(): number {
    return this.buffered;
  }

  private peek(n: number): Uint8Array {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    const out = new Uint8Array(n);
    let o = 0;
    for (const c of this.chunks) {
      const k = Math.min(c.length, n - o);
      out.set(c.subarray(0, k), o);
      o += k;
      if (o === n) break;
    }
    return out;
  }

  private take(n: number): Uint8Array {
    let out: Uint8Array;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = new Uint8Array(n);
      let o = 0;
      while (o < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - o);
        out.set(c.subarray(0, k), o);
        o += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    return out;
  }
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}
export function fromHex(h: string): Uint8Array {
  return new Uint8Array(Buffer.from(h.replace(/\s+/g, ''), 'hex'));
}
