// GGUF v3 writer. The header (metadata + tensor infos) is built in memory; tensor data is
// produced and written one tensor (or one chunk) at a time, so a multi-GB model never sits in
// memory. Output goes to a temp file renamed into place, so a crash never leaves a half file
// under the final name.

import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { VT, type GgufHeader, type GgufValue } from './gguf.js';
import { byteSize, typeName } from './quant.js';
import { GgmlType, ModelFormatError } from './types.js';

export { VT as GgufValueType } from './gguf.js';

/** One metadata key/value with its stored type (elemType for arrays). */
export interface GgufKV {
  key: string;
  type: VT;
  value: GgufValue;
  elemType?: VT;
}

/** Helpers to build typed metadata entries. */
export const kv = {
  u8: (key: string, value: number): GgufKV => ({ key, type: VT.U8, value }),
  i8: (key: string, value: number): GgufKV => ({ key, type: VT.I8, value }),
  u16: (key: string, value: number): GgufKV => ({ key, type: VT.U16, value }),
  i16: (key: string, value: number): GgufKV => ({ key, type: VT.I16, value }),
  u32: (key: string, value: number): GgufKV => ({ key, type: VT.U32, value }),
  i32: (key: string, value: number): GgufKV => ({ key, type: VT.I32, value }),
  u64: (key: string, value: number | bigint): GgufKV => ({ key, type: VT.U64, value }),
  i64: (key: string, value: number | bigint): GgufKV => ({ key, type: VT.I64, value }),
  f32: (key: string, value: number): GgufKV => ({ key, type: VT.F32, value }),
  f64: (key: string, value: number): GgufKV => ({ key, type: VT.F64, value }),
  bool: (key: string, value: boolean): GgufKV => ({ key, type: VT.BOOL, value }),
  str: (key: string, value: string): GgufKV => ({ key, type: VT.STRING, value }),
  arr: (key: string, elemType: VT, value: GgufValue[] | Float32Array | Int32Array): GgufKV => ({ key, type: VT.ARRAY, elemType, value }),
};

/** The metadata of a parsed file, with its original value types, ready to write back. */
export function metadataFromHeader(h: GgufHeader, skip: (key: string) => boolean = () => false): GgufKV[] {
  const out: GgufKV[] = [];
  for (const [key, value] of h.metadata) {
    if (skip(key)) continue;
    const t = h.metadataTypes.get(key);
    if (!t) throw new ModelFormatError(`no stored type for metadata ${key}`);
    out.push({ key, type: t.type, elemType: t.elemType, value });
  }
  return out;
}

/** Tensor bytes: produced on demand, whole or in chunks, in the tensor's stored type. */
export type TensorData = Uint8Array | Iterable<Uint8Array>;

export interface GgufTensorSpec {
  name: string;
  /** row-major shape ([out, in] for a linear layer) */
  shape: number[];
  type: GgmlType;
  data: () => TensorData | Promise<TensorData>;
}

export interface GgufWriteOptions {
  alignment?: number;
  /** called after each chunk with bytes of tensor data written so far and the total */
  onProgress?: (done: number, total: number) => void;
}

/** Little-endian byte sink that grows as needed (header only). */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  len = 0;
  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const nb = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(nb, 0, 0, this.len);
    this.buf = nb;
  }
  u8(v: number) {
    this.room(1);
    this.len = this.buf.writeUInt8(v, this.len);
  }
  i8(v: number) {
    this.room(1);
    this.len = this.buf.writeInt8(v, this.len);
  }
  u16(v: number) {
    this.room(2);
    this.len = this.buf.writeUInt16LE(v, this.len);
  }
  i16(v: number) {
    this.room(2);
    this.len = this.buf.writeInt16LE(v, this.len);
  }
  u32(v: number) {
    this.room(4);
    this.len = this.buf.writeUInt32LE(v, this.len);
  }
  i32(v: number) {
    this.room(4);
    this.len = this.buf.writeInt32LE(v, this.len);
  }
  f32(v: number) {
    this.room(4);
    this.len = this.buf.writeFloatLE(v, this.len);
  }
  f64(v: number) {
    this.room(8);
    this.len = this.buf.writeDoubleLE(v, this.len);
  }
  u64(v: number | bigint) {
    this.room(8);
    this.len = this.buf.writeBigUInt64LE(BigInt(v), this.len);
  }
  i64(v: number | bigint) {
    this.room(8);
    this.len = this.buf.writeBigInt64LE(BigInt(v), this.len);
  }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.room(b.length);
    b.copy(this.buf, this.len);
    this.len += b.length;
  }
  pad(alignment: number) {
    const n = (alignment - (this.len % alignment)) % alignment;
    this.room(n);
    this.buf.fill(0, this.len, this.len + n);
    this.len += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

function inferElemType(items: GgufValue[]): VT {
  const first = items[0];
  if (typeof first === 'string') return VT.STRING;
  if (typeof first === 'boolean') return VT.BOOL;
  if (typeof first === 'bigint') return VT.I64;
  if (Array.isArray(first) || first instanceof Float32Array || first instanceof Int32Array) return VT.ARRAY;
  if (items.every((v) => typeof v === 'number' && Number.isInteger(v))) return VT.I32;
  return VT.F32;
}

function writeValue(s: ByteSink, type: VT, v: GgufValue, key: string, elemType?: VT): void {
  const wantNum = (): number => {
    if (typeof v === 'number') return v;
    if (typeof v === 'bigint') return Number(v);
    throw new ModelFormatError(`metadata ${key}: expected a number, got ${typeof v}`);
  };
  switch (type) {
    case VT.U8:
      return s.u8(wantNum());
    case VT.I8:
      return s.i8(wantNum());
    case VT.U16:
      return s.u16(wantNum());
    case VT.I16:
      return s.i16(wantNum());
    case VT.U32:
      return s.u32(wantNum());
    case VT.I32:
      return s.i32(wantNum());
    case VT.F32:
      return s.f32(wantNum());
    case VT.F64:
      return s.f64(wantNum());
    case VT.U64:
      return s.u64(typeof v === 'bigint' ? v : wantNum());
    case VT.I64:
      return s.i64(typeof v === 'bigint' ? v : wantNum());
    case VT.BOOL:
      return s.u8(v ? 1 : 0);
    case VT.STRING:
      if (typeof v !== 'string') throw new ModelFormatError(`metadata ${key}: expected a string`);
      return s.str(v);
    case VT.ARRAY: {
      if (!(Array.isArray(v) || v instanceof Float32Array || v instanceof Int32Array))
        throw new ModelFormatError(`metadata ${key}: expected an array`);
      const items = v as ArrayLike<GgufValue>;
      const et = elemType ?? (v instanceof Float32Array ? VT.F32 : v instanceof Int32Array ? VT.I32 : inferElemType(v as GgufValue[]));
      s.u32(et);
      s.u64(items.length);
      for (let i = 0; i < items.length; i++) writeValue(s, et, items[i]!, key);
      return;
    }
    default:
      throw new ModelFormatError(`metadata ${key}: unknown value type ${type}`);
  }
}

function* chunksOf(d: TensorData): Iterable<Uint8Array> {
  if (d instanceof Uint8Array) yield d;
  else yield* d;
}

/** Write a GGUF v3 file. Tensors are written in the given order, each aligned. */
export async function writeGguf(out: string, metadata: GgufKV[], tensors: GgufTensorSpec[], opts: GgufWriteOptions = {}): Promise<void> {
  // general.alignment in the metadata is kept (as u32) and decides the alignment unless given
  const given = metadata.find((m) => m.key === 'general.alignment');
  const alignment = opts.alignment ?? (given ? Number(given.value) : 32);
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment & (alignment - 1))
    throw new ModelFormatError(`bad alignment ${alignment}`);
  const md = metadata.map((m) => (m.key === 'general.alignment' ? kv.u32(m.key, alignment) : m));
  if (!given && alignment !== 32) md.push(kv.u32('general.alignment', alignment));
  const seen = new Set<string>();
  for (const m of md) {
    if (seen.has(m.key)) throw new ModelFormatError(`duplicate metadata key ${m.key}`);
    seen.add(m.key);
  }
  const s = new ByteSink();
  s.u32(0x46554747); // 'GGUF'
  s.u32(3);
  s.u64(tensors.length);
  s.u64(md.length);
  for (const m of md) {
    s.str(m.key);
    s.u32(m.type);
    writeValue(s, m.type, m.value, m.key, m.elemType);
  }
  const sizes: number[] = [];
  let rel = 0;
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new ModelFormatError(`duplicate tensor ${t.name}`);
    names.add(t.name);
    const n = t.shape.reduce((a, b) => a * b, 1);
    const size = byteSize(t.type, n);
    sizes.push(size);
    s.str(t.name);
    s.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) s.u64(t.shape[d]!); // GGUF ne order: innermost first
    s.u32(t.type);
    s.u64(rel);
    rel += Math.ceil(size / alignment) * alignment;
  }
  s.pad(alignment);
  const total = rel;

  const tmp = `${out}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let ok = false;
  try {
    const writeAll = (b: Uint8Array) => {
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off, b.length - off);
    };
    writeAll(s.bytes());
    let done = 0;
    const zeros = new Uint8Array(alignment);
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      let got = 0;
      for (const chunk of chunksOf(await t.data())) {
        got += chunk.byteLength;
        if (got > sizes[i]!) break;
        writeAll(chunk);
        done += chunk.byteLength;
        opts.onProgress?.(done, total);
      }
      if (got !== sizes[i])
        throw new ModelFormatError(
          `tensor ${t.name} (${typeName(t.type)} ${t.shape.join('x')}): data is ${got} bytes, expected ${sizes[i]}`,
        );
      const pad = (alignment - (got % alignment)) % alignment;
      if (pad) writeAll(zeros.subarray(0, pad));
      done += pad;
    }
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) rmSync(tmp, { force: true });
  }
  renameSync(tmp, out);
}
