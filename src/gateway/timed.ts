// Per-request stage wrapper that remembers what the last forward cost, so each generated
// token can carry a timeline (which node ran which layers, compute and transfer ms, slack).
// Shared stages (the gateway's embed/head) serve many sessions at once, so the record lives
// in a per-request wrapper, never on the shared stage.

import type { Stage, StageInput, StageOutput } from '../engine/types.js';
import { PIPELINE_DEPTH } from '../engine/generate.js';
import type { TimelineHop } from '../api/backend.js';
import type { HopTiming } from '../route/route-stage.js';

/** what one forward of a stage cost */
interface StepRecord {
  pos: number;
  computeMs: number;
  /** the forward's wall time here: for a remote route, STEP sent → RESULT in (a re-route on the way included) */
  wallMs: number;
  /** a remote route's per-hop timings of that step */
  remote?: readonly HopTiming[];
}

/** forwards remembered: a pipelined generation releases a token while later steps run (generate.ts PIPELINE_DEPTH) */
const KEEP = PIPELINE_DEPTH + 4;

export class TimedStage implements Stage {
  private readonly records: StepRecord[] = [];

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
    const wallMs = performance.now() - t0;
    const remote = (this.inner as { lastTimeline?: HopTiming[] }).lastTimeline;
    if (this.records.length >= KEEP) this.records.shift();
    this.records.push({ pos: input.pos, computeMs: out.computeMs, wallMs, ...(Array.isArray(remote) && remote.length ? { remote } : {}) });
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

  /** the forward at input position `pos` (default, or none remembered at `pos`: the last one) */
  private record(pos?: number): StepRecord | undefined {
    const last = this.records[this.records.length - 1];
    return pos === undefined ? last : (this.records.findLast((r) => r.pos === pos) ?? last);
  }

  /** this stage's share of the forward at input position `pos` (default: the last one) */
  hops(pos?: number): TimelineHop[] {
    const rec = this.record(pos);
    if (rec?.remote) {
      return rec.remote.map((h) => ({
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
    return [{ node: this.label, start: r.start, end: r.end, role, computeMs: round(rec?.computeMs ?? 0) }];
  }

  /**
   * The wall time of the forward at `pos` (default: the last one) when it went over a remote
   * route: that step's own round trip, whatever the caller did with its result afterwards
   * (a pipelined generation holds a token until its receipts verified). Undefined for an
   * in-process stage. Unrounded: the caller rounds what it shows.
   */
  routeMs(pos?: number): number | undefined {
    const rec = this.record(pos);
    return rec?.remote ? rec.wallMs : undefined;
  }
}

const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 1000) / 1000 : x);
