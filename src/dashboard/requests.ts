// The gateway's recent requests as the dashboard shows them: a bounded in-memory store fed on
// the token path by the gateway's per-token timelines (as a RequestObserver) and by its fault
// log's re-routes. Recording is O(1) per token and never throws; the oldest requests and each
// request's oldest steps are dropped to stay bounded. Timings and routes only: no prompt or
// generated text is kept, so a dashboard viewer never reads other clients' conversations.

import type { BackendRequest, BackendResult, BackendToken, TokenTimeline } from '../api/backend.js';
import type { RequestObserver } from '../gateway/pipeline-backend.js';
import type { FailureEvent, FaultEvent } from '../route/events.js';
import type { HopRef, RequestDetail, RequestSummary, RouteEventView, StepView } from './types.js';

export interface RecentRequestsOptions {
  /** requests kept (default 100) */
  maxRequests?: number;
  /** steps kept per request, the most recent (default 256) */
  maxSteps?: number;
  /** route events kept per request (default 32) */
  maxEvents?: number;
}

interface Entry {
  summary: RequestSummary;
  steps: StepView[];
  dropped: number;
  events: RouteEventView[];
  decodeMs: number;
  /** bumped on every change: the SSE stream sends changed summaries only */
  version: number;
}

export class RecentRequests implements RequestObserver {
  private readonly entries = new Map<string, Entry>();
  private readonly maxRequests: number;
  private readonly maxSteps: number;
  private readonly maxEvents: number;
  private version = 0;

  constructor(o: RecentRequestsOptions = {}) {
    this.maxRequests = o.maxRequests ?? 100;
    this.maxSteps = o.maxSteps ?? 256;
    this.maxEvents = o.maxEvents ?? 32;
  }

  started(id: string, req: BackendRequest): void {
    this.entries.set(id, {
      summary: {
        id,
        startedAt: Date.now(),
        status: 'running',
        promptTokens: req.promptIds.length,
        maxTokens: req.maxTokens,
        tokens: 0,
        route: [],
        reroutes: 0,
        failures: 0,
      },
      steps: [],
      dropped: 0,
      events: [],
      decodeMs: 0,
      version: ++this.version,
    });
    // drop the oldest finished requests first; running ones only when all are running
    while (this.entries.size > this.maxRequests) {
      let victim: string | undefined;
      for (const [k, e] of this.entries)
        if (e.summary.status !== 'running') {
          victim = k;
          break;
        }
      this.entries.delete(victim ?? this.entries.keys().next().value!);
    }
  }

  token(id: string, t: BackendToken): void {
    const e = this.entries.get(id);
    if (!e) return;
    const s = e.summary;
    const step = stepView(t.timeline);
    s.tokens++;
    s.route = step.hops.map((h) => ({ peerId: h.peerId, start: h.start, end: h.end }));
    if (s.tokens === 1) s.firstTokenMs = Date.now() - s.startedAt;
    else {
      e.decodeMs += t.stepMs;
      s.msPerToken = round(e.decodeMs / (s.tokens - 1));
    }
    e.steps.push(step);
    if (e.steps.length > this.maxSteps) {
      e.steps.shift();
      e.dropped++;
    }
    e.version = ++this.version;
  }

  finished(id: string, end: { finishReason?: BackendResult['finishReason']; error?: string }): void {
    const e = this.entries.get(id);
    if (!e) return;
    e.summary.endedAt = Date.now();
    e.summary.status = end.error === undefined ? 'done' : 'failed';
    e.summary.finishReason = end.finishReason;
    if (end.error !== undefined) e.summary.error = end.error.slice(0, 500);
    e.version = ++this.version;
  }

  /** a failure or re-route from the gateway's fault log (its sessionId is the request's id) */
  routeEvent(f: FaultEvent): void {
    const e = this.entries.get(f.sessionId);
    if (!e) return;
    // a position counts the prompt: step s of the generation runs at position prompt + s - 1
    const step = (pos: number) => Math.max(0, pos - e.summary.promptTokens + 1);
    const view: RouteEventView =
      f.type === 'failure'
        ? {
            at: f.at,
            type: 'failure',
            step: step(f.pos),
            text: failureText(f),
            peers: f.culprits.length ? f.culprits : (f.disputed ?? (unexplained(f) ? f.route.map((h) => h.peerId) : [])),
          }
        : f.type === 'reroute'
          ? {
              at: f.at,
              type: 'reroute',
              step: step(f.replayedTokens),
              method: f.method,
              text: `re-routed by ${f.method} (${f.replayedTokens} tokens, ${Math.round(f.recoveryMs)} ms): ${hopsText(f.from)} → ${hopsText(f.to)}`,
              peers: f.to.map((h) => h.peerId),
            }
          : { at: f.at, type: 'gave_up', step: step(f.pos), text: f.message.slice(0, 300), peers: [] };
    if (f.type === 'failure') e.summary.failures++;
    if (f.type === 'reroute') e.summary.reroutes++;
    e.events.push(view);
    if (e.events.length > this.maxEvents) e.events.shift();
    e.version = ++this.version;
  }

  /** summaries, newest first; with `since`, only those changed after that version */
  summaries(since = 0): RequestSummary[] {
    const out: RequestSummary[] = [];
    for (const e of this.entries.values()) if (e.version > since) out.push({ ...e.summary, route: [...e.summary.route] });
    return out.reverse();
  }

  /** the version of the latest change (pass to summaries() to get what changed after now) */
  get currentVersion(): number {
    return this.version;
  }

  running(): { requestId: string; hops: HopRef[] }[] {
    const out: { requestId: string; hops: HopRef[] }[] = [];
    for (const e of this.entries.values())
      if (e.summary.status === 'running' && e.summary.route.length) out.push({ requestId: e.summary.id, hops: e.summary.route });
    return out;
  }

  detail(id: string): RequestDetail | undefined {
    const e = this.entries.get(id);
    if (!e) return undefined;
    return { ...e.summary, steps: [...e.steps], droppedSteps: e.dropped, events: [...e.events] };
  }
}

/** one token's timeline as the waterfall shows it (the same split `odsi demo` prints; never the token's text) */
export function stepView(t: TokenTimeline): StepView {
  const hops = t.hops
    .filter((h) => h.role === 'layers')
    .map((h) => ({
      peerId: h.node,
      start: h.start,
      end: h.end,
      queueMs: h.queueMs ?? 0,
      computeMs: h.computeMs,
      sendMs: h.sendMs ?? 0,
      ...(h.budgetInMs !== undefined && h.budgetInMs >= 0 && h.slackMs !== undefined ? { slackMs: h.slackMs } : {}),
    }));
  const gatewayMs = t.hops.filter((h) => h.role !== 'layers').reduce((a, h) => a + h.computeMs, 0);
  const inHops = hops.reduce((a, h) => a + h.queueMs + h.computeMs + h.sendMs, 0);
  // step 0 is the prefill's tail: its wall time holds the whole prompt, not one token's wire.
  // With the route's round trip the split is the step's own; without it, the token's interval
  // (which, with receipts pipelined, can be shorter or longer than its step took) is split
  const route = t.step > 0 ? t.routeMs : undefined;
  const wireMs = t.step === 0 ? 0 : Math.max(0, (route ?? t.stepMs - gatewayMs) - inHops);
  const heldMs = route === undefined ? 0 : Math.max(0, t.stepMs - route - gatewayMs);
  return { step: t.step, stepMs: t.stepMs, hops, gatewayMs: round(gatewayMs), wireMs: round(wireMs), heldMs: round(heldMs) };
}

const hopsText = (hs: HopRef[]) => hs.map((h) => `…${h.peerId.slice(-6)}[${h.start}:${h.end}]`).join(' ');
const round = (x: number) => Math.round(x * 1000) / 1000;

/** What a failure event says in the request view: how it failed, and what the gateway made of it. */
function failureText(f: FailureEvent): string {
  const how = f.disputed
    ? `dispute (${f.disputed[0]} accuses ${f.disputed[1]}, both avoided): `
    : unexplained(f)
      ? 'nobody named (every hop still answers; all doubted): '
      : '';
  return `${f.open ? 'open failed: ' : ''}${how}${f.code}: ${f.message}`.slice(0, 300);
}

/** a step lost with every hop still answering: the gateway doubts the whole route (routing/unexplained.ts) */
const unexplained = (f: FailureEvent) => f.diagnosis === 'unknown' && !f.open;
