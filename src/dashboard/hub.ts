// The gateway's dashboard data: the swarm as this gateway sees it (nodes, their state and
// measured speed, per-layer coverage, routes in use), recent requests with their per-token
// timelines, and the accountability feed; served as a snapshot and as a live SSE stream
// (snapshot, then a delta per tick). Nothing here runs on the token path except the request
// store's O(1) recording: the stream is written from a timer, and a client that does not read
// is dropped instead of buffering without bound.

import type { ServerResponse } from 'node:http';
import type { Gateway } from '../gateway/gateway.js';
import { RecentRequests } from './requests.js';
import type { DashboardDelta, DashboardSnapshot, FallbackView, FeedItem, LedgerView, NodeView } from './types.js';
import { FOREVER } from '../routing/bans.js';
import { LedgerFeed } from './ledger.js';

export interface DashboardOptions {
  /** SSE clients at once (default 16); more get 503 */
  maxClients?: number;
  /** SSE clients at once per remote address (default 4) */
  maxClientsPerAddress?: number;
  /** how often the stream sends a delta, ms (default 1000) */
  tickMs?: number;
  /** how often nodes are pinged while someone watches, ms (default 1500) */
  pingMs?: number;
  /** the cloud fallback's description (the API server's); undefined: none configured */
  fallback?: () => FallbackView;
  /** the ledger panel's data; default: read from the gateway's ledger when it has one (LedgerFeed) */
  ledger?: () => LedgerView | undefined;
  /** how often the gateway's ledger is re-read while someone watches, ms (default 5000) */
  ledgerRefreshMs?: number;
}

/** bytes a client may leave unread before it is dropped (it reconnects to a fresh snapshot) */
const MAX_UNREAD_BYTES = 512 * 1024;
/** consecutive failed pings before a node counts as unreachable */
const PING_FAILURES_DOWN = 2;
/** feed items kept: the notable ones (failed audits, evidence, bans), and passed audits */
const MAX_NOTABLE = 200;
const MAX_PASSED = 50;
/** characters of a feed item's evidence or verdict JSON */
const MAX_DETAIL_CHARS = 2000;

interface Client {
  res: ServerResponse;
  address: string;
  /** the request store's version this client has seen */
  version: number;
  feedSeq: number;
}

export class Dashboard {
  readonly requests: RecentRequests;
  private readonly clients = new Set<Client>();
  private readonly maxClients: number;
  private readonly maxPerAddress: number;
  private readonly tickMs: number;
  private readonly pingMs: number;
  private tickTimer?: NodeJS.Timeout;
  private pingTimer?: NodeJS.Timeout;
  private pinging = false;
  private closed = false;
  /** own reachability checks, peer → consecutive failed pings: a fixed peer list has no
   *  discovery pinging it, and a dead node should show before a route runs into it */
  private readonly pingFailures = new Map<string, number>();
  // the accountability feed, built incrementally from the gateway's records
  private seq = 0;
  private notable: FeedItem[] = [];
  private passed: FeedItem[] = [];
  private auditsSeen = 0;
  private evidenceSeen = 0;
  private readonly faultsSeen = new WeakSet<object>();
  private readonly bansSeen = new Map<string, number>();
  /** the gateway's ledger as the panel shows it (none without a ledger) */
  private readonly ledgerFeed?: LedgerFeed;

  constructor(
    private readonly gw: Gateway,
    private readonly o: DashboardOptions = {},
  ) {
    this.requests = new RecentRequests();
    this.maxClients = o.maxClients ?? 16;
    this.maxPerAddress = o.maxClientsPerAddress ?? 4;
    this.tickMs = o.tickMs ?? 1000;
    this.pingMs = o.pingMs ?? 1500;
    gw.observer = this.requests;
    if (gw.ledger && !o.ledger) {
      this.ledgerFeed = new LedgerFeed(gw.ledger, () => this.gw.swarmStatus().nodes.map((n) => n.peerId), { refreshMs: o.ledgerRefreshMs });
      void this.ledgerFeed.refresh();
    }
  }

  /** The whole picture now. */
  snapshot(): DashboardSnapshot {
    this.ingest();
    return {
      at: Date.now(),
      model: { name: this.gw.model.id, id: this.gw.modelId, nLayers: this.gw.nLayers },
      gateway: { peerId: this.gw.host.peerId },
      ...this.swarm(),
      routes: this.requests.running(),
      requests: this.requests.summaries(),
      feed: this.feed(0),
      ...this.ledger(),
    };
  }

  /**
   * Serve one SSE client: a snapshot now, then a delta per tick. Returns false (nothing
   * written) when the client limits are reached.
   */
  addClient(res: ServerResponse, address: string): boolean {
    if (this.closed || this.clients.size >= this.maxClients) return false;
    let same = 0;
    for (const c of this.clients) if (c.address === address) same++;
    if (same >= this.maxPerAddress) return false;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    const version = this.requests.currentVersion;
    const snap = this.snapshot();
    const client: Client = { res, address, version, feedSeq: this.seq };
    this.clients.add(client);
    res.on('close', () => this.drop(client));
    // tell EventSource to come back after 2 s if the stream ends
    this.write(client, `retry: 2000\nevent: snapshot\ndata: ${JSON.stringify(snap)}\n\n`);
    this.startTimers();
    return true;
  }

  /** number of SSE clients connected */
  get clientCount(): number {
    return this.clients.size;
  }

  close(): void {
    this.closed = true;
    this.stopTimers();
    for (const c of this.clients) c.res.end();
    this.clients.clear();
    if (this.gw.observer === this.requests) this.gw.observer = undefined;
  }

  private startTimers(): void {
    if (this.tickTimer) return;
    this.tickTimer = setInterval(() => this.tick(), this.tickMs);
    this.tickTimer.unref();
    this.pingTimer = setInterval(() => void this.pingAll(), this.pingMs);
    this.pingTimer.unref();
    void this.pingAll();
  }

  private stopTimers(): void {
    clearInterval(this.tickTimer);
    clearInterval(this.pingTimer);
    this.tickTimer = this.pingTimer = undefined;
  }

  private drop(c: Client): void {
    this.clients.delete(c);
    if (!c.res.destroyed) c.res.destroy();
    if (this.clients.size === 0) this.stopTimers();
  }

  private write(c: Client, s: string): void {
    // a client still sitting on what it was sent a tick ago is dropped rather than buffered
    // without bound (the snapshot itself is always written: it may be larger than the bound)
    if (c.res.writableEnded || c.res.destroyed || c.res.writableLength > MAX_UNREAD_BYTES) return this.drop(c);
    c.res.write(s);
  }

  private tick(): void {
    if (!this.clients.size) return;
    this.ingest();
    const common = { at: Date.now(), ...this.swarm(), routes: this.requests.running(), ...this.ledger() };
    const version = this.requests.currentVersion;
    for (const c of [...this.clients]) {
      const delta: DashboardDelta = { ...common, requests: this.requests.summaries(c.version), feed: this.feed(c.feedSeq) };
      c.version = version;
      c.feedSeq = this.seq;
      this.write(c, `event: delta\ndata: ${JSON.stringify(delta)}\n\n`);
    }
  }

  private ledger(): { ledger?: LedgerView } {
    this.ledgerFeed?.refreshIfStale();
    const l = this.o.ledger ? this.o.ledger() : this.ledgerFeed?.view;
    return l ? { ledger: l } : {};
  }

  /** the gateway's swarm status (nodes, coverage), with this dashboard's own reachability pings */
  private swarm(): Pick<DashboardSnapshot, 'nodes' | 'coverage' | 'ready' | 'reason' | 'recoveries' | 'fallback'> {
    const down = [...this.pingFailures].filter(([, n]) => n >= PING_FAILURES_DOWN).map(([p]) => p);
    // (swarmStatus itself leaves convicted, banned and ineligible nodes out of coverage)
    const st = this.gw.swarmStatus({ unusable: new Set(down) });
    const nodes = st.nodes.map((n): NodeView => ({
      ...n,
      state: n.conviction ? 'convicted' : n.banned ? 'banned' : !n.reachable ? 'unreachable' : n.routable ? 'up' : 'ineligible',
    }));
    const fallback = this.o.fallback?.();
    return {
      nodes,
      coverage: st.coverage,
      ready: st.ready,
      reason: st.reason,
      recoveries: st.recoveries,
      ...(fallback ? { fallback } : {}),
    };
  }

  /** Reads what the gateway recorded since the last call: audits, evidence, bans, route events. */
  private ingest(): void {
    // the fault log is bounded and its times are not ordered: remember the events already read
    for (const e of this.gw.faults.events()) {
      if (this.faultsSeen.has(e)) continue;
      this.faultsSeen.add(e);
      this.requests.routeEvent(e);
    }
    const acc = this.gw.accountability;
    if (acc) {
      // the records are bounded arrays: count new ones by the monotonic totals
      const newAudits = Math.min(acc.stats.audited - this.auditsSeen, acc.audits.length);
      this.auditsSeen = acc.stats.audited;
      for (const a of acc.audits.slice(acc.audits.length - newAudits)) {
        const verdict = a.verdict ? ` · verdict signed` : '';
        const outcome = a.incomplete ? 'incomplete' : a.pass ? 'passed' : 'FAILED';
        const by = a.executor === 'referee' ? 'the referee' : `…${a.executor.slice(-6)}`;
        this.push({
          at: a.at,
          kind: 'audit',
          peerId: a.peerId,
          pass: a.incomplete ? undefined : a.pass,
          text: `audit of step ${a.step} (layers ${a.layers[0]}:${a.layers[1]}, ${a.mode}) re-executed by ${by}: ${outcome}${a.maxRelL2 !== undefined ? ` (rel. L2 ${a.maxRelL2.toExponential(2)}${a.tau !== undefined ? ` vs τ ${a.tau.toExponential(2)}` : ''})` : ''}${a.reason ? ` — ${a.reason}` : ''}${verdict}`,
          detail: a.verdict ? clip(a.verdict) : undefined,
        });
      }
      const enqueued = acc.queue.stats().enqueued;
      const newEvidence = Math.min(enqueued - this.evidenceSeen, acc.evidence.length);
      this.evidenceSeen = enqueued;
      for (const ev of acc.evidence.slice(acc.evidence.length - newEvidence)) {
        this.push({
          at: ev.at,
          kind: 'evidence',
          peerId: ev.peerId,
          pass: false,
          text: `convicted (${ev.kind}) — ${ev.reason}; identity ${ev.accused}`,
          detail: clip(ev.evidence),
        });
      }
    }
    for (const b of this.gw.bans.list()) {
      if (this.bansSeen.get(b.peerId) === b.until) continue;
      this.bansSeen.set(b.peerId, b.until);
      this.push({
        at: Date.now(),
        kind: 'ban',
        peerId: b.peerId,
        pass: false,
        text: `${b.until >= FOREVER ? 'barred for good' : `banned until ${new Date(b.until).toISOString()}`} (failure ${b.failures})${b.reason ? `: ${b.reason}` : ''}`,
      });
    }
  }

  private push(item: Omit<FeedItem, 'seq'>): void {
    const it = { seq: ++this.seq, ...item };
    const list = item.kind === 'audit' && item.pass !== false ? this.passed : this.notable;
    list.push(it);
    if (this.passed.length > MAX_PASSED) this.passed.shift();
    if (this.notable.length > MAX_NOTABLE) this.notable.shift();
  }

  /** feed items after `seq`, oldest first */
  private feed(seq: number): FeedItem[] {
    return [...this.notable, ...this.passed].filter((f) => f.seq > seq).sort((a, b) => a.seq - b.seq);
  }

  /** pings every known node once (bounded: one round at a time, 1.5 s each) */
  private async pingAll(): Promise<void> {
    if (this.pinging || this.closed) return;
    this.pinging = true;
    try {
      const cands = this.gw.swarmStatus().nodes;
      const known = new Set(cands.map((c) => c.peerId));
      for (const p of this.pingFailures.keys()) if (!known.has(p)) this.pingFailures.delete(p);
      await Promise.all(
        cands.map(async (c) => {
          try {
            await this.gw.host.ping(c.peerId, { addrs: c.addrs, signal: AbortSignal.timeout(1500) });
            this.pingFailures.delete(c.peerId);
          } catch {
            this.pingFailures.set(c.peerId, (this.pingFailures.get(c.peerId) ?? 0) + 1);
          }
        }),
      );
    } finally {
      this.pinging = false;
    }
  }
}

/** a record as JSON (bigints as strings, byte arrays as hex), cut to a bounded size */
function clip(x: unknown): string {
  const s = JSON.stringify(x, (_k, v: unknown) => {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Uint8Array)
      return '0x' + Buffer.from(v.buffer, v.byteOffset, Math.min(v.byteLength, 64)).toString('hex') + (v.byteLength > 64 ? '…' : '');
    return v;
  });
  return s.length > MAX_DETAIL_CHARS ? s.slice(0, MAX_DETAIL_CHARS) + '…' : s;
}
