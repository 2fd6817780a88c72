// Timing statistics: best-of-N and median, the figures a noisy shared machine can support.
export interface Stats {
  n: number;
  min: number;
  median: number;
  mean: number;
  max: number;
}

export function stats(xs: number[]): Stats {
  if (!xs.length) return { n: 0, min: NaN, median: NaN, mean: NaN, max: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { n: s.length, min: s[0]!, median, mean: s.reduce((a, b) => a + b, 0) / s.length, max: s.at(-1)! };
}

export async function timeit(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** "min (median)" with a fixed number of decimals */
export function fmt(s: Stats | undefined, digits = 1): string {
  if (!s || !s.n) return '—';
  return `${s.min.toFixed(digits)} (${s.median.toFixed(digits)})`;
}
