// Per-token timelines from the gateway (GatewayToken.timeline): the step's wall time at the
// gateway (and its own round trip over the route) against the compute every stage reported,
// and the quantiles the token-path targets are stated in.
import type { TokenTimeline } from '../../src/api/backend.js';

export interface StepSample {
  step: number;
  /** wall time of the step at the gateway (embed → route → head → sample), ms */
  stepMs: number;
  /** Σ compute of every stage (gateway embed and head, each remote hop), ms */
  computeMs: number;
  /** Σ compute of the remote hops only, ms */
  hopComputeMs: number;
  /** Σ queue time the hops reported (receive → compute start), ms */
  hopQueueMs: number;
  /** Σ send time the hops reported (serialise + hand to the stream), ms */
  hopSendMs: number;
  /** remote hops in the step */
  hops: number;
  /** the step's own round trip over its route (STEP sent → RESULT in), ms; undefined without a route */
  routeMs?: number;
}

export function stepSample(t: TokenTimeline): StepSample {
  const layers = t.hops.filter((h) => h.role === 'layers');
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return {
    step: t.step,
    stepMs: t.stepMs,
    computeMs: sum(t.hops.map((h) => h.computeMs)),
    hopComputeMs: sum(layers.map((h) => h.computeMs)),
    hopQueueMs: sum(layers.map((h) => h.queueMs ?? 0)),
    hopSendMs: sum(layers.map((h) => h.sendMs ?? 0)),
    hops: layers.length,
    ...(t.routeMs !== undefined ? { routeMs: t.routeMs } : {}),
  };
}

/** the q-quantile (0..1) of xs by linear interpolation; NaN for none */
export function quantile(xs: number[], q: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = (s.length - 1) * q;
  const lo = Math.floor(i);
  const hi = Math.ceil(i);
  return s[lo]! + (s[hi]! - s[lo]!) * (i - lo);
}

export interface Dist {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export function dist(xs: number[], digits = 3): Dist {
  const r = (x: number) => Math.round(x * 10 ** digits) / 10 ** digits;
  return {
    n: xs.length,
    min: r(quantile(xs, 0)),
    p50: r(quantile(xs, 0.5)),
    p90: r(quantile(xs, 0.9)),
    p99: r(quantile(xs, 0.99)),
    max: r(quantile(xs, 1)),
  };
}
