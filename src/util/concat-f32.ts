// Rows of several tensors, one after the other, as one new Float32Array.

/** `parts` concatenated in order (a copy, also of a single part) */
export function concatF32(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
