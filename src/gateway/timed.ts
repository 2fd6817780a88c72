// Per-request stage wrapper that remembers what the last forward cost, so each generated
// token can carry a timeline (which node ran which layers, compute and transfer ms, slack).
// Shared stages (the gateway's embed/head) serve many sessions at once, so the record lives
// in a per-request wrapper, never on the shared stage.

import type { Stage, StageInput, StageOutput } from '../engine/types.js';
import type { TimelineHop } from '../api/backend.js';
import type { HopTiming } from '../route/route-stage.js';

export class TimedStage implements Stage {
  lastComputeMs = 0;
  lastWallMs = 0;

  constructor(
    readonly inner: Stage,
    /** name shown in timelines for in-process stages, e.g. 'gateway' or 'local' */
    readonly label: string,
  ) {}

  get range() {
    return this.inner.range;
  }
  get config() {
    return this.inner.config;
  }
  get profile() {
    return this.inner.profile;
  }

  async forward(input: StageInput): Promise<StageOutput> {
    const t0 = performance.now();
    const out = await this.inner.forward(input);
    this.lastWallMs = performance.now() - t0;
    this.lastComputeMs = out.computeMs;
    return out;
  }

  sessionLength(sessionId: string): number {
    return this.inner.sessionLength(sessionId);
  }
  closeSession(sessionId: string): void {
    this.inner.closeSession(sessionId);
  }
  async dispose(): Promise<void> {
    // the inner stage may be shared: its owner disposes it
  }

  /** this stage's share of the last step */
  hops(): TimelineHop[] {
    const remote = (this.inner as { lastTimeline?: HopTiming[] }).lastTimeline;
    if (Array.isArray(remote) && remote.length) {
      return remote.map((h) => ({
        node: h.peerId,
        start: h.start,
        end: h.end,
        role: 'layers',
        computeMs: round(h.computeMs),
        queueMs: round(h.queueMs),
        sendMs: round(h.sendMs),
        // no deadline on this route: the hop reports -1, which is no budget, not a miss
        ...(h.budgetInMs >= 0 ? { budgetInMs: round(h.budgetInMs), slackMs: round(h.slackMs) } : {}),
      }));
    }
    const r = this.inner.range;
    const role = r.start === r.end ? (r.embed ? 'embed' : 'head') : 'layers';
    return [{ node: this.label, start: r.start, end: r.end, role, computeMs: round(this.lastComputeMs) }];
  }
}

const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
