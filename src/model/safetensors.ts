// safetensors files: u64 header length N, N bytes of JSON {name: {dtype, shape, data_offsets:
// [begin, end)}, "__metadata__": {str: str}}, then the data (offsets relative to its start).
// Reading parses the header only; data is read lazily by the caller with positioned reads.
// Writing streams tensor by tensor (the header is computed from shapes up front).

import { closeSync, fstatSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { GgmlType, ModelFormatError } from './types.js';
import type { TensorData } from './gguf-writer.js';

export type StDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';
const ELEM_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

/** ggml type for a safetensors dtype we can compute with, else undefined */
export function ggmlTypeOf(dtype: string): GgmlType | undefined {
  return dtype === 'F32' ? GgmlType.F32 : dtype === 'F16' ? GgmlType.F16 : dtype === 'BF16' ? GgmlType.BF16 : undefined;
}
export function stDtypeOf(t: GgmlType): 'F32' | 'F16' | 'BF16' {
  if (t === GgmlType.F32) return 'F32';
  if (t === GgmlType.F16) return 'F16';
  if (t === GgmlType.BF16) return 'BF16';
  throw new ModelFormatError(`safetensors cannot store ggml type ${GgmlType[t] ?? t} (use F32, F16 or BF16)`);
}

export interface StEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** absolute offset in the file */
  offset: number;
  byteLength: number;
}

export interface StHeader {
  entries: Map<string, StEntry>;
  metadata: Record<string, string>;
  fileSize: number;
}

const MAX_HEADER = 100 << 20;

export function readSafetensorsHeader(fd: number, path: string): StHeader {
  const size = fstatSync(fd).size;
  if (size < 8) throw new ModelFormatError('file too small to be safetensors', path);
  const lenBuf = Buffer.alloc(8);
  readSync(fd, lenBuf, 0, 8, 0);
  const n = lenBuf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER) || Number(n) + 8 > size)
    throw new ModelFormatError(`bad safetensors header length ${n} (file has ${size} bytes; truncated or not safetensors?)`, path);
  const hb = Buffer.alloc(Number(n));
  if (readSync(fd, hb, 0, hb.length, 8) !== hb.length) throw new ModelFormatError('short read in safetensors header', path);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(hb.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new ModelFormatError('safetensors header is not valid JSON (corrupt file?)', path);
  }
  const dataStart = 8 + hb.length;
  const entries = new Map<string, StEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = (v ?? {}) as Record<string, string>;
      continue;
    }
    const e = v as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
    if (typeof e?.dtype !== 'string' || !Array.isArray(e.shape) || !Array.isArray(e.data_offsets))
      throw new ModelFormatError(`bad header entry for ${name}`, path);
    const [b, end] = e.data_offsets;
    const elem = ELEM_BYTES[e.dtype];
    const count = e.shape.reduce((a, x) => a * x, 1);
    if (elem !== undefined && end - b !== count * elem)
      throw new ModelFormatError(`tensor ${name}: ${end - b} bytes for ${e.dtype}[${e.shape.join(', ')}]`, path);
    if (dataStart + end > size) throw new ModelFormatError(`tensor ${name} extends past end of file (truncated file?)`, path);
    entries.set(name, { name, dtype: e.dtype, shape: e.shape, offset: dataStart + b, byteLength: end - b });
  }
  return { entries, metadata, fileSize: size };
}

/** Read `len` bytes at `pos`, failing clearly on a short file. */
export function preadExact(fd: number, pos: number, len: number, path: string, what: string): Uint8Array {
  const out = new Uint8Array(len);
  for (let got = 0; got < len;) {
    const r = readSync(fd, out, got, Math.min(len - got, 1 << 30), pos + got);
    if (r <= 0) throw new ModelFormatError(`${what}: short read (truncated file?)`, path);
    got += r;
  }
  return out;
}

export interface StTensorSpec {
  name: string;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  data: () => TensorData | Promise<TensorData>;
}

/** Write a safetensors file, streaming each tensor's data. */
export async function writeSafetensors(
  out: string,
  tensors: StTensorSpec[],
  metadata: Record<string, string> = {},
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1) * ELEM_BYTES[t.dtype]!;
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + size] };
    sizes.push(size);
    off += size;
  }
  let hjson = JSON.stringify(header);
  hjson += ' '.repeat((8 - ((hjson.length + 8) % 8)) % 8); // data starts 8-aligned
  const hb = Buffer.from(hjson, 'utf8');
  const tmp = `${out}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let ok = false;
  try {
    const writeAll = (b: Uint8Array) => {
      for (let o = 0; o < b.length;) o += writeSync(fd, b, o, b.length - o);
    };
    const lb = Buffer.alloc(8);
    lb.writeBigUInt64LE(BigInt(hb.length));
    writeAll(lb);
    writeAll(hb);
    let done = 0;
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      const d = await t.data();
      let got = 0;
      for (const ch of d instanceof Uint8Array ? [d] : d) {
        got += ch.byteLength;
        if (got > sizes[i]!) break;
        writeAll(ch);
        done += ch.byteLength;
        onProgress?.(done, off);
      }
      if (got !== sizes[i]) throw new ModelFormatError(`tensor ${t.name}: data is ${got} bytes, expected ${sizes[i]}`);
    }
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) rmSync(tmp, { force: true });
  }
  renameSync(tmp, out);
}
