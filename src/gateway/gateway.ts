// The swarm gateway: holds only the model's ends (embedding, final norm + LM head) and the
// tokenizer, finds nodes serving the middle through signed DHT adverts, measures RTTs,
// picks a route per request and streams tokens. Text never leaves the gateway; only
// activations travel the route. Implements the API's Backend.

import { createStage, type EngineKind } from '../engine/create.js';
import type { Stage } from '../engine/types.js';
import { generateIdentity, type Identity } from '../identity/identity.js';
import { openModel } from '../model/load.js';
import { modelIdentity } from '../model/identity.js';
import { ModelFormatError, type WeightSource } from '../model/types.js';
import type { NodeAdvert } from '../p2p/advert-record.js';
import { findAdverts } from '../p2p/adverts.js';
import { createHost, type OdsiHost } from '../p2p/host.js';
import { openRoute, RouteError, type RouteStage } from '../route/route-stage.js';
import { createTokenizer } from '../tokenizer/index.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { BackendModelInfo, BackendRequest } from '../api/backend.js';
import { modelNameOf } from './local.js';
import { PipelineBackend, type RequestPipeline } from './pipeline-backend.js';
import { NoRouteError, selectRoute, type Route, type RouteCandidate } from '../routing/router.js';
import { TimedStage } from './timed.js';
import { FaultLog } from '../route/events.js'; // fault-tolerance
import { ResilientRoute, spareHops } from '../route/resilient-route.js'; // fault-tolerance
import { enableAccountability, type GatewayAccountant } from '../accountability/gateway/verify-route.js'; // accountability

export interface GatewayOptions {
  /** the model file/directory: the gateway reads its header, tokenizer, embedding and head */
  modelPath: string;
  identity?: Identity;
  /** multiaddrs (with /p2p/<id>) of swarm members to join through */
  bootstrap?: string[];
  /** libp2p listen addresses (default /ip4/127.0.0.1/tcp/0) */
  listen?: string[];
  /** engine for the embed/head stages (default 'reference') */
  engine?: EngineKind;
  /** default per-token deadline budget for routes, ms */
  deadlineMs?: number;
  /** how often to re-read adverts and re-measure RTTs (default 10 s; 0 = only on demand) */
  refreshMs?: number;
  /** how long one advert lookup may take (default 3 s) */
  lookupTimeoutMs?: number;
  /** name served as `model` (default: the file name) */
  modelName?: string;
  /** routes tried per request when opening fails (default 3) */
  openAttempts?: number;
  /** seed for routing's tie-breaking (tests) */
  routeSeed?: number;
  /** failure detection on open routes (src/fault ResilientRoute): grace added to a step's
   *  budget before it counts as lost, and the least budget of a step without a deadline.
   *  Raise both on overloaded machines, where slow is not dead. */
  failover?: { graceMs?: number; minStepMs?: number; maxRecoveries?: number };
}

/** Ban with exponential backoff: a failing peer is skipped for base·2^(failures-1), capped. */
class BanList {
  private bans = new Map<string, { until: number; failures: number }>();
  constructor(
    private readonly baseMs = 5_000,
    private readonly maxMs = 120_000,
  ) {}
  ban(peerId: string, now = Date.now()): number {
    const prev = this.bans.get(peerId);
    const failures = (prev?.failures ?? 0) + 1;
    const ms = Math.min(this.maxMs, this.baseMs * 2 ** (failures - 1));
    this.bans.set(peerId, { until: now + ms, failures });
    return ms;
  }
  active(now = Date.now()): Set<string> {
    const out = new Set<string>();
    for (const [p, b] of this.bans) if (b.until > now) out.add(p);
    return out;
  }
  clear(peerId: string): void {
    this.bans.delete(peerId);
  }
}

const PING_FAILURES_GONE = 2;

export class Gateway extends PipelineBackend {
  readonly model: BackendModelInfo;
  readonly tokenizer: Tokenizer;
  readonly addBos: boolean;
  readonly modelId: string;
  readonly bans = new BanList();
  /** fault-tolerance: failures and re-routes of recent sessions (src/fault) */
  readonly faults = new FaultLog();
  private adverts: NodeAdvert[] = [];
  private readonly rtt = new Map<string, number>();
  /** consecutive refresh pings a peer failed: churn detection between adverts' expiry */
  private readonly pingFailures = new Map<string, number>();
  /** sessions this gateway has open per peer: fresher than the load in adverts */
  private readonly localLoad = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<void>;
  private closed = false;
  private lastRefreshError?: string;
  private routeCounter = 0;
  /** accountability: checks every route step (receipts, audits); none when it is off */
  accountability?: GatewayAccountant;

  private constructor(
    private readonly opts: GatewayOptions,
    readonly host: OdsiHost,
    private readonly src: WeightSource,
    private readonly embed: Stage,
    private readonly head: Stage,
    tokenizer: Tokenizer,
    modelId: string,
  ) {
    super();
    this.tokenizer = tokenizer;
    this.addBos = src.tokenizer?.addBos ?? true;
    this.modelId = modelId;
    this.model = {
      id: opts.modelName ?? modelNameOf(opts.modelPath),
      aliases: [modelId, src.config.name].filter(Boolean),
      contextLength: src.config.contextLength,
      created: Math.floor(Date.now() / 1000),
      ownedBy: 'odsi-swarm',
    };
  }

  static async start(opts: GatewayOptions): Promise<Gateway> {
    const src = openModel(opts.modelPath);
    const stages: Stage[] = [];
    let host: OdsiHost | undefined;
    try {
      if (!src.tokenizer) throw new ModelFormatError('model has no tokenizer; the gateway needs one', opts.modelPath);
      const tokenizer = createTokenizer(src.tokenizer);
      const { modelId } = modelIdentity(src);
      const L = src.config.nLayers;
      const engine = opts.engine ?? 'reference';
      stages.push(await createStage(engine, src, { start: 0, end: 0, embed: true, head: false }));
      stages.push(await createStage(engine, src, { start: L, end: L, embed: false, head: true }));
      host = await createHost({ identity: opts.identity ?? generateIdentity(), listen: opts.listen, bootstrap: opts.bootstrap });
      const gw = new Gateway(opts, host, src, stages[0]!, stages[1]!, tokenizer, modelId);
      // accountability: receipt checks + audits, re-executed by other nodes of the swarm (src/control)
      gw.accountability = enableAccountability(host, { src, bans: gw.bans, modelId, auditors: () => gw.adverts.map((a) => ({ peerId: a.peerId, addrs: a.addrs, start: a.start, end: a.end })) });
      const every = opts.refreshMs ?? 10_000;
      if (every > 0) {
        gw.timer = setInterval(() => void gw.refresh().catch(() => undefined), every);
        gw.timer.unref();
      }
      void gw.refresh().catch(() => undefined);
      return gw;
    } catch (e) {
      for (const s of stages) await s.dispose().catch(() => undefined);
      await host?.stop().catch(() => undefined);
      src.close();
      throw e;
    }
  }

  get nLayers(): number {
    return this.src.config.nLayers;
  }

  /** the verified adverts from the last lookup */
  knownAdverts(): readonly NodeAdvert[] {
    return this.adverts;
  }

  /** measured gateway↔peer RTTs (ms, smoothed) */
  rtts(): ReadonlyMap<string, number> {
    return this.rtt;
  }

  /** Re-read adverts from the DHT and ping the peers; concurrent callers share one run. */
  refresh(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.refreshing ??= this.doRefresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async doRefresh(): Promise<void> {
    try {
      const found = await findAdverts(this.host, this.modelId, { timeoutMs: this.opts.lookupTimeoutMs ?? 3_000 });
      if (this.closed) return;
      // A lookup is best effort (it may time out before every record arrives), so merge:
      // newer adverts replace older ones per peer, and an advert stays until it expires.
      const now = Date.now();
      const byPeer = new Map(this.adverts.map((a) => [a.peerId, a]));
      for (const a of found) {
        // keep only adverts that fit this model: a bad range would only produce bad routes
        if (!(a.start >= 0 && a.end <= this.nLayers && a.start < a.end) || a.peerId === this.host.peerId) continue;
        const old = byPeer.get(a.peerId);
        if (!old || a.issuedAt >= old.issuedAt) byPeer.set(a.peerId, a);
      }
      this.adverts = [...byPeer.values()].filter((a) => a.issuedAt + a.ttlMs > now).sort((a, b) => a.start - b.start || a.peerId.localeCompare(b.peerId));
      await Promise.all(
        this.adverts.map(async (a) => {
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
        }),
      );
      this.lastRefreshError = undefined;
    } catch (e) {
      this.lastRefreshError = (e as Error).message;
    }
  }

  /** The best route now (throws NoRouteError naming uncovered layers). */
  route(opts: { exclude?: Set<string>; needKvTokens?: number } = {}): Route {
    // a peer that failed two refresh pings in a row is treated as gone until it answers again
    // (one failure may be load; its advert alone would keep it eligible until expiry)
    const silent = [...this.pingFailures].filter(([, n]) => n >= PING_FAILURES_GONE).map(([p]) => p);
    const exclude = new Set([...this.bans.active(), ...silent, ...(opts.exclude ?? [])]);
    const cands: RouteCandidate[] = this.adverts.map((a) => ({
      peerId: a.peerId,
      addrs: a.addrs,
      start: a.start,
      end: a.end,
      msPerToken: a.msPerToken,
      load: Math.max(a.load, this.localLoad.get(a.peerId) ?? 0),
      freeKvTokens: a.freeKvTokens,
    }));
    return selectRoute(cands, {
      nLayers: this.nLayers,
      rttMs: this.rtt,
      exclude,
      needKvTokens: opts.needKvTokens,
      seed: this.opts.routeSeed === undefined ? undefined : this.opts.routeSeed + this.routeCounter++,
    });
  }

  /** Wait (bounded) until adverts cover every layer; returns the route found. */
  async waitForRoute(timeoutMs: number): Promise<Route> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (let i = 0; i < 10_000; i++) {
      try {
        return this.route();
      } catch (e) {
        if (!(e instanceof NoRouteError)) throw e;
        last = e;
      }
      if (Date.now() >= deadline) break;
      await this.refresh();
      if (this.adverts.length === 0 || !this.coversAll()) await sleep(Math.min(250, Math.max(0, deadline - Date.now())));
    }
    throw last instanceof Error ? last : new NoRouteError('no route', [[0, this.nLayers]]);
  }

  private coversAll(): boolean {
    try {
      this.route();
      return true;
    } catch {
      return false;
    }
  }

  override unavailable(): string | undefined {
    if (this.closed) return 'gateway is shutting down';
    return undefined;
  }

  /** Readiness for /healthz: a route covers every layer; plus the swarm as this gateway sees it. */
  status(): { ready: boolean; reason?: string; detail?: Record<string, unknown> } {
    const nodes = this.adverts.map((a) => ({ peerId: a.peerId, layers: [a.start, a.end], msPerToken: a.msPerToken, load: a.load, rttMs: this.rtt.get(a.peerId) }));
    const detail = { modelId: this.modelId, peerId: this.host.peerId, nodes, banned: [...this.bans.active()] };
    try {
      const r = this.route({});
      return { ready: true, detail: { ...detail, route: r.hops.map((h) => ({ peerId: h.peerId, layers: [h.start, h.end] })), estimatedMsPerToken: r.estimatedMs } };
    } catch (e) {
      const why = (e as Error).message + (this.lastRefreshError ? ` (last lookup failed: ${this.lastRefreshError})` : '');
      return { ready: false, reason: why, detail };
    }
  }

  protected async openPipeline(sessionId: string, req: BackendRequest): Promise<RequestPipeline> {
    const need = req.promptIds.length + req.maxTokens;
    const tried = new Set<string>();
    const attempts = this.opts.openAttempts ?? 3;
    let lastErr: unknown;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (req.signal?.aborted) throw new RouteError('request aborted before the route opened', 'timeout');
      let route: Route;
      try {
        route = this.route({ exclude: tried, needKvTokens: need });
      } catch (e) {
        // no adverts yet (just started) or all excluded: look again once before giving up
        if (attempt === 0 && e instanceof NoRouteError) {
          await this.refresh();
          route = this.route({ exclude: tried, needKvTokens: need });
        } else throw lastErr ?? e;
      }
      let stage: RouteStage;
      try {
        stage = await openRoute(this.host, {
          modelId: this.modelId,
          config: this.src.config,
          hops: route.hops.map((h) => ({ peerId: h.peerId, addrs: h.addrs, start: h.start, end: h.end })),
          sessionId: attempt === 0 ? sessionId : `${sessionId}.${attempt}`,
          deadlineMs: req.deadlineMs ?? this.opts.deadlineMs,
          maxTokens: need,
          // same-range nodes a draining hop may hand its KV cache to (no replay)
          spares: spareHops(this, route.hops, tried),
          verifier: this.accountability,
        });
      } catch (e) {
        lastErr = e;
        const bad = e instanceof RouteError ? e.peerId : undefined;
        if (bad) {
          tried.add(bad);
          if (e instanceof RouteError && banWorthy(e)) this.bans.ban(bad);
        } else route.hops.forEach((h) => tried.add(h.peerId));
        continue;
      }
      // fault-tolerance: the session survives failing hops (re-route + replay, src/fault)
      const resilient = new ResilientRoute(stage, route, {
        host: this.host,
        modelId: this.modelId,
        config: this.src.config,
        sessionId,
        planner: this,
        bans: this.bans,
        deadlineMs: req.deadlineMs ?? this.opts.deadlineMs,
        maxTokens: need,
        ...this.opts.failover,
        onEvent: (e) => this.faults.push(e),
        verifier: this.accountability,
      });
      return this.pipelineFor(resilient, route);
    }
    throw lastErr;
  }

  private pipelineFor(stage: RouteStage | ResilientRoute /* fault-tolerance */, route: Route): RequestPipeline {
    const peers = route.hops.map((h) => h.peerId);
    for (const p of peers) this.localLoad.set(p, (this.localLoad.get(p) ?? 0) + 1);
    let released = false;
    return {
      stages: [new TimedStage(this.embed, 'gateway'), new TimedStage(stage, 'route'), new TimedStage(this.head, 'gateway')],
      release: async () => {
        if (released) return;
        released = true;
        for (const p of peers) this.localLoad.set(p, Math.max(0, (this.localLoad.get(p) ?? 1) - 1));
        await stage.dispose().catch(() => undefined);
      },
      fail: (e) => {
        // a resilient route has already banned whoever it found at fault
        if (stage instanceof ResilientRoute) return;
        if (e instanceof RouteError && e.peerId && banWorthy(e)) this.bans.ban(e.peerId);
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.refreshing?.catch(() => undefined);
    await this.host.stop().catch(() => undefined);
    await this.embed.dispose().catch(() => undefined);
    await this.head.dispose().catch(() => undefined);
    this.src.close();
  }
}

/**
 * Whether a failure says the peer is broken. A node at capacity ('busy') is healthy, and a
 * missed deadline may be the client's budget being too tight: neither is banned, the request
 * just does not use that peer again.
 */
function banWorthy(e: RouteError): boolean {
  return e.code !== 'deadline' && e.remoteCode !== 'busy' && e.remoteCode !== 'deadline';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
