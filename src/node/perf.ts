// Measured compute speed of a node's stage: a short benchmark at start, then an EWMA over
// real steps while serving. Adverts carry these numbers; the deadline check uses them.

import type { Stage } from '../engine/types.js';

export class PerfMeter {
  /** decode ms per token (steps with one token) */
  msPerToken: number;
  /** prefill ms per token (steps with several tokens) */
  prefillMsPerToken: number;

  constructor(
    initial: { msPerToken: number; prefillMsPerToken: number },
    private readonly alpha = 0.2,
  ) {
    this.msPerToken = initial.msPerToken;
    this.prefillMsPerToken = initial.prefillMsPerToken;
  }

  record(nTokens: number, ms: number): void {
    if (!(ms >= 0) || nTokens < 1) return;
    if (nTokens === 1) this.msPerToken = this.alpha * ms + (1 - this.alpha) * this.msPerToken;
    else this.prefillMsPerToken = this.alpha * (ms / nTokens) + (1 - this.alpha) * this.prefillMsPerToken;
  }

  /** expected compute time of a step */
  expectedMs(nTokens: number): number {
    return nTokens === 1 ? this.msPerToken : this.prefillMsPerToken * nTokens;
  }
}

/** Time a short prefill and a few decode steps on a throwaway session. */
export async function benchmarkStage(stage: Stage, opts: { prefill?: number; decode?: number } = {}): Promise<{ msPerToken: number; prefillMsPerToken: number }> {
  const dim = stage.config.dim;
  const prefill = Math.max(2, Math.min(opts.prefill ?? 16, stage.config.contextLength - 8));
  const decode = opts.decode ?? 4;
  const sid = `bench-${process.pid}-${Date.now()}`;
  const rnd = (n: number) => {
    const x = new Float32Array(n);
    let s = 12345;
    for (let i = 0; i < n; i++) {
      s = (s * 1103515245 + 12345) >>> 0;
      x[i] = (s / 2 ** 32 - 0.5) * 0.2;
    }
    return x;
  };
  try {
    let t = performance.now();
    await stage.forward({ sessionId: sid, pos: 0, nTokens: prefill, hidden: rnd(prefill * dim) });
    const prefillMs = performance.now() - t;
    let best = Infinity;
    for (let i = 0; i < decode; i++) {
      t = performance.now();
      await stage.forward({ sessionId: sid, pos: prefill + i, nTokens: 1, hidden: rnd(dim) });
      best = Math.min(best, performance.now() - t);
    }
    return { msPerToken: best, prefillMsPerToken: prefillMs / prefill };
  } finally {
    stage.closeSession(sid);
  }
}
