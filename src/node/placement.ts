// `--layers auto`: which contiguous window of layers a joining node should serve.
// Coverage of a layer = Σ over adverts that hold it of their decode throughput (tokens/s =
// 1000 / msPerToken). The node takes as many layers as fit its memory and places that window
// where the swarm is weakest: the window whose minimum coverage is lowest, ties broken by the
// lowest total coverage, then by the lowest start (deterministic).

import type { NodeAdvert } from '../p2p/advert-record.js';

export function layerCoverage(nLayers: number, adverts: Pick<NodeAdvert, 'start' | 'end' | 'msPerToken'>[]): number[] {
  const cov = new Array<number>(nLayers).fill(0);
  for (const a of adverts) {
    const tput = 1000 / Math.max(a.msPerToken, 1e-3);
    for (let l = Math.max(0, a.start); l < Math.min(nLayers, a.end); l++) cov[l]! += tput;
  }
  return cov;
}

export function chooseLayers(nLayers: number, maxLayers: number, adverts: Pick<NodeAdvert, 'start' | 'end' | 'msPerToken'>[]): [number, number] {
  const n = Math.max(1, Math.min(nLayers, Math.floor(maxLayers)));
  const cov = layerCoverage(nLayers, adverts);
  let best: [number, number] = [0, n];
  let bestMin = Infinity;
  let bestSum = Infinity;
  for (let s = 0; s + n <= nLayers; s++) {
    const w = cov.slice(s, s + n);
    const mn = Math.min(...w);
    const sum = w.reduce((a, b) => a + b, 0);
    if (mn < bestMin || (mn === bestMin && sum < bestSum)) {
      best = [s, s + n];
      bestMin = mn;
      bestSum = sum;
    }
  }
  return best;
}

/** Parse "a:b" (or "auto") against a model's layer count. */
export function parseLayers(spec: string, nLayers: number): [number, number] | 'auto' {
  if (spec === 'auto') return 'auto';
  const m = /^(\d+):(\d+)$/.exec(spec.trim());
  if (!m) throw new Error(`--layers must be "a:b" (decoder layers a..b-1) or "auto", got "${spec}"`);
  const a = Number(m[1]);
  const b = Number(m[2]);
  if (!(a < b) || b > nLayers) throw new Error(`--layers ${spec} is not a non-empty range within the model's ${nLayers} layers`);
  return [a, b];
}
