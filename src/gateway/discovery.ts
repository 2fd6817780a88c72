// Swarm discovery for the gateway: reads the nodes' signed adverts from the DHT and pings them,
// and offers the result to the route planner as candidates (with measured RTTs, and peers that
// stopped answering pings marked unavailable). One of the gateway's candidate sources; the
// other is a fixed list (GatewayOptions.peers).

import { findAdverts } from '../p2p/adverts.js';
import type { NodeAdvert } from '../p2p/advert-record.js';
import type { OdsiHost } from '../p2p/host.js';
import type { CandidateSource } from '../routing/planner.js';
import type { RouteCandidate } from '../routing/router.js';

export interface DiscoveryOptions {
  /** the model the adverts must be for */
  modelId: string;
  /** the model's decoder layers: adverts outside [0, nLayers) are dropped */
  nLayers: number;
  /** how often to re-read adverts and re-measure RTTs (default 10 s; 0 = only on demand) */
  refreshMs?: number;
  /** how long one advert lookup may take (default 3 s) */
  lookupTimeoutMs?: number;
  /** told how long each lookup took (metrics) */
  onLookup?(ms: number, ok: boolean): void;
}

/** consecutive refresh pings a peer may fail before it is treated as gone */
const PING_FAILURES_GONE = 2;

export class Discovery implements CandidateSource {
  private adverts: NodeAdvert[] = [];
  private readonly rtt = new Map<string, number>();
  /** consecutive refresh pings a peer failed: churn detection between adverts' expiry */
  private readonly pingFailures = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<void>;
  private closed = false;
  /** why the last lookup failed, if it did */
  lastError?: string;

  constructor(
    private readonly host: OdsiHost,
    private readonly o: DiscoveryOptions,
  ) {}

  /** Look now, then every refreshMs in the background. */
  start(): void {
    const every = this.o.refreshMs ?? 10_000;
    if (every > 0) {
      this.timer = setInterval(() => void this.refresh().catch(() => undefined), every);
      this.timer.unref();
    }
    void this.refresh().catch(() => undefined);
  }

  /** the verified adverts from the last lookups */
  known(): readonly NodeAdvert[] {
    return this.adverts;
  }

  candidates(): readonly RouteCandidate[] {
    return this.adverts.map((a) => ({
      peerId: a.peerId,
      addrs: a.addrs,
      start: a.start,
      end: a.end,
      msPerToken: a.msPerToken,
      load: a.load,
      freeKvTokens: a.freeKvTokens,
    }));
  }

  /** measured gateway↔peer RTTs (ms, smoothed) */
  rttMs(): ReadonlyMap<string, number> {
    return this.rtt;
  }

  /** a peer that failed two refresh pings in a row is gone until it answers again (one failure
   *  may be load; its advert alone would keep it eligible until expiry) */
  unavailable(): ReadonlySet<string> {
    return new Set([...this.pingFailures].filter(([, n]) => n >= PING_FAILURES_GONE).map(([p]) => p));
  }

  /** Re-read adverts from the DHT and ping the peers; concurrent callers share one run. */
  refresh(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.refreshing ??= this.doRefresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.refreshing?.catch(() => undefined);
  }

  private async doRefresh(): Promise<void> {
    const t0 = performance.now();
    try {
      const found = await findAdverts(this.host, this.o.modelId, { timeoutMs: this.o.lookupTimeoutMs ?? 3_000 });
      this.o.onLookup?.(performance.now() - t0, true);
      if (this.closed) return;
      // A lookup is best effort (it may time out before every record arrives), so merge:
      // newer adverts replace older ones per peer, and an advert stays until it expires.
      const now = Date.now();
      const byPeer = new Map(this.adverts.map((a) => [a.peerId, a]));
      for (const a of found) {
        // keep only adverts that fit this model: a bad range would only produce bad routes
        if (!(a.start >= 0 && a.end <= this.o.nLayers && a.start < a.end) || a.peerId === this.host.peerId) continue;
        const old = byPeer.get(a.peerId);
        if (!old || a.issuedAt >= old.issuedAt) byPeer.set(a.peerId, a);
      }
      this.adverts = [...byPeer.values()]
        .filter((a) => a.issuedAt + a.ttlMs > now)
        .sort((a, b) => a.start - b.start || a.peerId.localeCompare(b.peerId));
      await Promise.all(this.adverts.map((a) => this.ping(a)));
      this.lastError = undefined;
    } catch (e) {
      this.o.onLookup?.(performance.now() - t0, false);
      this.lastError = (e as Error).message;
    }
  }

  private async ping(a: NodeAdvert): Promise<void> {
    try {
      const ms = await this.host.ping(a.peerId, { addrs: a.addrs, signal: AbortSignal.timeout(2_000) });
      const prev = this.rtt.get(a.peerId);
      // EMA: one slow ping does not swing routing
      this.rtt.set(a.peerId, prev === undefined ? ms : 0.7 * prev + 0.3 * ms);
      this.pingFailures.delete(a.peerId);
    } catch {
      this.rtt.delete(a.peerId); // unknown RTT: the router assumes a slow link
      this.pingFailures.set(a.peerId, (this.pingFailures.get(a.peerId) ?? 0) + 1);
    }
  }
}
