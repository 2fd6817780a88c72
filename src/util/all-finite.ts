/** Whether every value of `x` is finite (no NaN, no ±∞): activations and KV caches from a peer must be. */
export function allFinite(x: Float32Array): boolean {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i]!)) return false;
  return true;
}
