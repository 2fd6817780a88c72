// The per-hop timings of one input sent as several steps (a prompt or a replay in pipelined
// chunks, chunked-steps.ts), as one timeline: what each hop spent on all of it, so a first
// token's timeline shows the whole prompt's compute and not only its last chunk's.

import type { HopTiming } from './route-stage.js';

/**
 * Per hop, the sum of the steps' queue, compute and send times; the budget and slack are the last
 * step's (the deadline that matters is the whole input's, which the last step meets or misses).
 * The timelines come from one route, so they name the same hops in the same order; a hop missing
 * from a step's timeline (a shorter timeline) adds nothing.
 */
export function mergeTimelines(timelines: readonly (readonly HopTiming[])[]): HopTiming[] {
  const last = timelines.at(-1);
  if (!last) return [];
  return last.map((t, i) => {
    let queueMs = 0;
    let computeMs = 0;
    let sendMs = 0;
    for (const tl of timelines) {
      const h = tl[i];
      if (!h || h.peerId !== t.peerId) continue;
      queueMs += h.queueMs;
      computeMs += h.computeMs;
      sendMs += h.sendMs;
    }
    return { ...t, queueMs: round(queueMs), computeMs: round(computeMs), sendMs: round(sendMs) };
  });
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
