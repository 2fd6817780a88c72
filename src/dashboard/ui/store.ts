// The page's copy of the gateway's dashboard data: the SSE stream's snapshot, then its deltas
// merged in (swarm parts replaced, requests upserted, feed items appended, all bounded).

import type { DashboardDelta, DashboardSnapshot, RequestSummary } from '../types.js';

const MAX_REQUESTS = 100;
const MAX_FEED = 300;

export function merge(s: DashboardSnapshot, d: DashboardDelta): DashboardSnapshot {
  const byId = new Map<string, RequestSummary>(s.requests.map((r) => [r.id, r]));
  for (const r of d.requests) byId.set(r.id, r);
  const requests = [...byId.values()].sort((a, b) => b.startedAt - a.startedAt).slice(0, MAX_REQUESTS);
  const feed = [...s.feed, ...d.feed].slice(-MAX_FEED);
  return { ...s, ...d, requests, feed };
}

export type Connection = 'connecting' | 'live' | 'reconnecting';

/** Follows /dashboard/events; calls back with each new state. Returns a stop function. */
export function follow(onState: (s: DashboardSnapshot) => void, onConn: (c: Connection) => void): () => void {
  let state: DashboardSnapshot | undefined;
  const es = new EventSource('/dashboard/events');
  es.addEventListener('snapshot', (ev) => {
    state = JSON.parse((ev as MessageEvent<string>).data) as DashboardSnapshot;
    onConn('live');
    onState(state);
  });
  es.addEventListener('delta', (ev) => {
    if (!state) return;
    state = merge(state, JSON.parse((ev as MessageEvent<string>).data) as DashboardDelta);
    onState(state);
  });
  // EventSource reconnects by itself (the server asks for 2 s); a fresh snapshot follows
  es.onerror = () => onConn('reconnecting');
  return () => es.close();
}

export const short = (peerId: string) => `…${peerId.slice(-6)}`;
export const ms = (x: number | undefined, digits = 1) => (x === undefined ? '—' : `${x.toFixed(digits)} ms`);
export const ago = (at: number, now = Date.now()) => {
  const s = Math.max(0, Math.round((now - at) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : `${Math.floor(s / 3600)}h ago`;
};
