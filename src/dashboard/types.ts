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

/** What the gateway's ledger says about one identity (amounts in the view's unit, decimal strings). */
export interface LedgerEntry {
  /** EIP-55 address of the identity */
  address?: string;
  role?: 'node' | 'gateway';
  /** bonded stake */
  stake: string;
  /** total ever taken by slashes */
  slashed?: string;
  reputation: number;
  /** rewards earned so far */
  earnings: string;
  /** may be routed to (enough stake, never slashed) */
  eligible?: boolean;
}

/** A client account's balance on the ledger. */
export interface LedgerAccountView {
  address: string;
  balance: string;
  /** total ever charged */
  charged: string;
}

/** The ledger panel's data: present in a snapshot only when the gateway has a ledger. */
export interface LedgerView {
  /** the backend and where it lives, shown as the panel's caption */
  name: string;
  /** the unit amounts are shown in, e.g. 'ODSI' */
  unit: string;
  /** the last settled epoch */
  epoch?: number;
  /** by peer id where the gateway knows the node, else by address */
  nodes: Record<string, LedgerEntry>;
  /** client accounts, largest balance first */
  accounts?: LedgerAccountView[];
  /** identities / accounts left out to keep the view bounded */
  moreIdentities?: number;
  moreAccounts?: number;
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
  /**
   * links, framing, scheduling: the step's round trip over its route less the hops' own time
   * (without a route's round trip: the token's wall time less the hops' and the gateway's)
   */
  wireMs: number;
  /** how long after its step was done (round trip and gateway) the token was released: its receipts' check, the pipelining (0 without a route's round trip) */
  heldMs: number;
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
export type DashboardDelta = Omit<DashboardSnapshot, 'model' | 'gateway'>;
