// The dashboard's JSON: what the gateway sends (/dashboard/api/*, the SSE stream) and the
// browser code reads. Types only, shared by src/dashboard (server) and src/dashboard/ui. Nodes
// and coverage are the gateway's swarm status (GET /v1/odsi/status), with each node's state.

import type { LayerCoverage, SwarmNodeStatus, SwarmStatus } from '../gateway/swarm-status.js';

/** One hop of a route: a node and the decoder layers [start, end) it ran. */
export interface HopRef {
  peerId: string;
  start: number;
  end: number;
}

/** What a configured ledger says about one node (the ledger lands separately). */
export interface LedgerEntry {
  /** staked amount, in the ledger's unit (decimal string: may exceed 2^53) */
  stake: string;
  reputation: number;
  /** earned so far, in the ledger's unit (decimal string) */
  earnings: string;
}

/** The ledger panel's data: present in a snapshot only when a ledger is configured. */
export interface LedgerView {
  /** e.g. the chain and contract, shown as the panel's caption */
  name: string;
  /** the unit stake and earnings are counted in, e.g. 'wei' */
  unit: string;
  nodes: Record<string, LedgerEntry>;
}

/** how the dashboard shows a node: usable, or why not */
export type NodeState = 'up' | 'unreachable' | 'banned' | 'convicted' | 'ineligible';

/** a node as the gateway's swarm status reports it (src/gateway/swarm-status.ts), and its state */
export interface NodeView extends SwarmNodeStatus {
  state: NodeState;
}

export type { LayerCoverage };

export type RequestStatus = 'running' | 'done' | 'failed';

export interface RequestSummary {
  id: string;
  startedAt: number;
  endedAt?: number;
  status: RequestStatus;
  promptTokens: number;
  maxTokens: number;
  tokens: number;
  finishReason?: string;
  error?: string;
  /** the route of the latest token */
  route: HopRef[];
  reroutes: number;
  failures: number;
  /** time to the first token, ms */
  firstTokenMs?: number;
  /** mean decode step after the first token, ms */
  msPerToken?: number;
}

/** One hop's share of one token (the gateway's per-token timeline). */
export interface StepHop extends HopRef {
  queueMs: number;
  computeMs: number;
  sendMs: number;
  /** budget left against the deadline when the hop finished (undefined: no deadline) */
  slackMs?: number;
}

export interface StepView {
  step: number;
  stepMs: number;
  hops: StepHop[];
  /** embedding + head at the gateway, ms */
  gatewayMs: number;
  /** what the hops and the gateway do not account for: links, framing, scheduling */
  wireMs: number;
}

export interface RouteEventView {
  at: number;
  type: 'failure' | 'reroute' | 'gave_up';
  /** the request's token (generation step; 0 = the prefill) the event happened at */
  step?: number;
  text: string;
  method?: string;
  peers: string[];
}

export interface RequestDetail extends RequestSummary {
  /** the most recent steps (bounded) */
  steps: StepView[];
  /** steps dropped from the front to stay bounded */
  droppedSteps: number;
  events: RouteEventView[];
}

export type FeedKind = 'audit' | 'evidence' | 'ban';

export interface FeedItem {
  /** unique within the gateway's run, increasing */
  seq: number;
  at: number;
  kind: FeedKind;
  peerId: string;
  /** audits: passed or not */
  pass?: boolean;
  /** one line: what happened */
  text: string;
  /** the evidence or verdict as recorded, JSON (cut to a bounded length) */
  detail?: string;
}

/** the cloud fallback, when the gateway has one: where to, when, and how many requests it served */
export interface FallbackView {
  url: string;
  model?: string;
  when: string[];
  served: number;
}

export interface DashboardSnapshot {
  at: number;
  model: { name: string; id: string; nLayers: number };
  gateway: { peerId: string };
  nodes: NodeView[];
  coverage: LayerCoverage[];
  /** a route covers every layer now; why not */
  ready: boolean;
  reason?: string;
  /** recoveries of failed routes since the gateway started, by method */
  recoveries: SwarmStatus['recoveries'];
  fallback?: FallbackView;
  /** routes of the requests running now */
  routes: { requestId: string; hops: HopRef[] }[];
  /** newest first */
  requests: RequestSummary[];
  /** newest last */
  feed: FeedItem[];
  ledger?: LedgerView;
}

/** What the SSE stream sends after the first snapshot: full swarm parts, changed requests, new feed items. */
export interface DashboardDelta {
  at: number;
  nodes: NodeView[];
  coverage: LayerCoverage[];
  ready: boolean;
  reason?: string;
  recoveries: SwarmStatus['recoveries'];
  fallback?: FallbackView;
  routes: { requestId: string; hops: HopRef[] }[];
  requests: RequestSummary[];
  feed: FeedItem[];
  ledger?: LedgerView;
}
