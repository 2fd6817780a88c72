// The swarm gateway: holds only the model's ends (embedding, final norm + LM head) and the
// tokenizer, and routes each request through nodes serving the middle. Where those nodes come
// from is chosen at start-up: signed DHT adverts + pings (Discovery), or a fixed list
// (GatewayOptions.peers). A CostPlanner picks routes over them, skipping the ban list; every
// request runs on a ResilientRoute (re-routes around failing hops, with the same planner and
// ban list). Text never leaves the gateway; only activations travel the route. Implements the
// API's Backend.

import { randomUUID } from 'node:crypto';
import { CoalescingStage } from '../engine/coalesce.js';
import { createStage, type EngineKind } from '../engine/create.js';
import type { ComputeThread, Stage, StageInput, StageOutput } from '../engine/types.js';
import { generateIdentity, type Identity } from '../identity/identity.js';
import { openModel } from '../model/load.js';
import { modelIdentity } from '../model/identity.js';
import { ModelFormatError, type WeightSource } from '../model/types.js';
import type { NodeAdvert } from '../p2p/advert-record.js';
import { createHost, type OdsiHost } from '../p2p/host.js';
import { createTokenizer } from '../tokenizer/index.js';
import type { Tokenizer } from '../tokenizer/types.js';
import type { BackendModelInfo, BackendRequest, BackendResult, BackendToken, TokenTimeline } from '../api/backend.js';
import { modelNameOf } from './local.js';
import { PipelineBackend, type RequestPipeline } from './pipeline-backend.js';
import { NoRouteError, type Route, type RouteCandidate } from '../routing/router.js';
import { BanList } from '../routing/bans.js';
import { Disputes } from '../routing/disputes.js';
import { UnexplainedFailures } from '../routing/unexplained.js';
import { peerEligible, type StakeView } from '../routing/stake.js';
import type { Address, Ledger } from '../ledger/ledger.js';
import { LedgerStakeView } from '../ledger/stake-view.js';
import { GatewaySettlement } from '../ledger/settlement.js';
import { CostPlanner, StaticCandidates, type CandidateSource } from '../routing/planner.js';
import { TimedStage } from './timed.js';
import { Discovery } from './discovery.js';
import { SessionLoad } from './session-load.js';
import type { Registry } from 'prom-client';
import { GatewayMetrics } from './metrics.js';
import { Waves } from './waves.js';
import { MeasuredSpeed, swarmStatus, type SwarmStatus } from './swarm-status.js';
import { FaultLog, type FaultEvent, type RouteHopRef } from '../route/events.js';
import { openResilientRoute, type ResilientRoute } from '../route/resilient-route.js';
import { RouteClient } from '../route/route-client.js';
import type { RouteHopInfo } from '../route/step-verifier.js';
import { createGatewayAccountability, type GatewayAccountability } from '../accountability/gateway/accountability.js';
import { DisputeEvidence } from '../accountability/gateway/dispute-evidence.js';
import type { DisputeJudge } from '../route/ban-worthy.js';
import { DEV_CHAIN_ID, type OdsiDomain } from '../accountability/records/eip712.js';
import { requestIdOf } from '../accountability/records/wire.js';

export interface GatewayOptions {
  /** the model file/directory: the gateway reads its header, tokenizer, embedding and head */
  modelPath: string;
  identity?: Identity;
  /** route over exactly these nodes instead of discovering them (no DHT lookups, no pings) */
  peers?: readonly RouteCandidate[];
  /** multiaddrs (with /p2p/<id>) of swarm members to join through */
  bootstrap?: string[];
  /** libp2p listen addresses (default /ip4/127.0.0.1/tcp/0) */
  listen?: string[];
  /** engine for the embed/head stages (default 'reference'; 'llama' means ORT there) */
  engine?: EngineKind;
  /** where the LM head computes (ORT): its own worker thread (default) or the gateway's main thread */
  computeThread?: ComputeThread;
  /** default per-token deadline budget for routes, ms */
  deadlineMs?: number;
  /** discovery: how often to re-read adverts and re-measure RTTs (default 10 s; 0 = only on demand) */
  refreshMs?: number;
  /** discovery: how long one advert lookup may take (default 3 s) */
  lookupTimeoutMs?: number;
  /** name served as `model` (default: the file name) */
  modelName?: string;
  /** routes tried per request when opening fails (default 3) */
  openAttempts?: number;
  /** seed for routing's tie-breaking (tests) */
  routeSeed?: number;
  /** failure detection on open routes (ResilientRoute): grace added to a step's budget before
   *  it counts as lost, and the least budget of a step without a deadline.
   *  Raise both on overloaded machines, where slow is not dead. */
  failover?: { graceMs?: number; minStepMs?: number; maxRecoveries?: number };
  /** false: a step lost with every hop still answering is avoided by its own request only, not doubted or counted by the gateway (bench/staller's off arm; default true) */
  rememberUnexplained?: boolean;
  /** a prompt longer than this goes to the route as pipelined steps of this many tokens (default PROMPT_CHUNK; 0: one step) */
  promptChunk?: number;
  /** drawn tokens that may wait for their step's receipt verdict while later steps run
   *  (default PIPELINE_DEPTH; 0: each step goes out only after the previous one verified) */
  pipelineDepth?: number;
  /** negotiated activation streams kept ready per first hop just used (default 1; 0: none; p2p/stream-pool.ts) */
  streamSpares?: number;
  /** send a request's first step right behind its route's OPEN, and a re-route's first replay chunk
   *  right behind its replacement's, not after OPENED (default true; route/resilient-route.ts) */
  eagerOpen?: boolean;
  /** receipt checks and audits of every route step (default: on, dev chain id, no audits) */
  accountability?: GatewayAccountabilityConfig;
  /** register the gateway's metrics (coverage, recoveries, audits, fallback, DHT lookups) here,
   *  e.g. the API server's registry so /metrics shows both */
  metrics?: Registry;
  /** stake and reputation (e.g. the ledger's view): who may be routed to or audit, weights, probation audit rates */
  stake?: StakeView;
  /** the ledger this gateway settles with: evidence, per-epoch payments, reputation (never on the token path) */
  ledger?: GatewayLedgerConfig;
  /**
   * decode steps of the sessions sharing a route enter it together, one wave per round, waiting
   * at most `waitMs` (default WAVE_WAIT_MS) for the last wave's stragglers (waves.ts): for nodes
   * that share cores, such as the demo's on one machine (default off)
   */
  waves?: boolean | { waitMs?: number };
}

/** how long a wave waits for the last wave's stragglers once its route is empty (ms): 15 ms
 *  split the demo's waves, 40 kept them whole (bench/README, session 15) */
export const WAVE_WAIT_MS = 40;

/** How the gateway uses a ledger (opened by the CLI, which also closes it). */
export interface GatewayLedgerConfig {
  ledger: Ledger;
  /** the client account requests are charged to */
  account: Address;
  /** settle an epoch this often (default 60 s; 0: only on settle()) */
  epochMs?: number;
  /** re-read stake and reputation this often (default 5 s) */
  stakeRefreshMs?: number;
}

/** How the gateway holds the route's nodes to account (read from the environment by the CLI). */
export interface GatewayAccountabilityConfig {
  /** false: no receipt checks (nodes and gateway must agree; default true) */
  enabled?: boolean;
  /** the EIP-712 domain receipts are signed under (default: chain id 31337, no contract) */
  domain?: OdsiDomain;
  /** share of each node's steps audited, in [0, 1] (default 0) */
  auditRate?: number;
  /** audits of nodes audited at this rate or more hold the step until the verdict (default 0.5) */
  holdAtRate?: number;
  /** with no audit rate: audit each node at a rate from its passed audits (new nodes often) */
  reputation?: boolean;
  /** the nodes that re-execute audits (default: every node the gateway knows) */
  auditors?: readonly RouteHopInfo[];
}

/** A generation run through the gateway without HTTP (tests, benchmarks). */
export interface GatewayRunRequest extends BackendRequest {
  /** the session id on the route (default: a fresh UUID) */
  sessionId?: string;
  /** each token as it comes; a returned promise is awaited before the next step */
  onToken?(t: GatewayToken): void | Promise<void>;
}

export interface GatewayToken extends BackendToken {
  /** the nodes that computed this token, in route order */
  route: RouteHopRef[];
}

export interface GatewayRun extends BackendResult {
  sessionId: string;
  /** the route of the last token */
  route: RouteHopRef[];
  /** this session's failures and re-routes (also in the gateway's fault log) */
  events: FaultEvent[];
}

export class Gateway extends PipelineBackend {
  readonly model: BackendModelInfo;
  readonly tokenizer: Tokenizer;
  readonly addBos: boolean;
  readonly modelId: string;
  /** peers that failed recently; the planner (first routes and re-routes) skips them */
  readonly bans = new BanList();
  /** one hop's signed word against its neighbour's: both doubted, banned only past the rule's threshold */
  readonly disputes = new Disputes({ bans: this.bans });
  /** with accountability: disputes the accused's own signed record settles (a non-finite output it signed) */
  evidence?: DisputeEvidence;
  /** what routes hand a dispute to: the disputes' rule, and the accused's record examined when the step is known */
  private readonly judge: DisputeJudge = {
    dispute: (accuser, accused, reason, site) => {
      if (site) this.evidence?.consider(accuser, accused, site);
      return this.disputes.dispute(accuser, accused, reason);
    },
  };
  /** steps lost with every hop still answering: all hops doubted (the disputes' doubts), a peer that alone explains three banned */
  readonly unexplained = new UnexplainedFailures({ bans: this.bans, doubts: this.disputes.doubts });
  /** failures and re-routes of recent sessions */
  readonly faults = new FaultLog();
  /** recoveries since start, by method, and sessions that gave up (the fault log is bounded) */
  readonly recoveries = { replay: 0, transfer: 0, gaveUp: 0 };
  /** each node's decode ms/token as measured on this gateway's routes */
  readonly measured = new MeasuredSpeed();
  /** GatewayOptions.waves: decode steps enter their route in waves */
  readonly waves?: Waves;
  /** where routes come from: the cost model over the known nodes, minus bans */
  readonly planner: CostPlanner;
  /** the known nodes: discovered, or the fixed list */
  private readonly source: CandidateSource;
  private readonly discovery?: Discovery;
  private readonly load: SessionLoad;
  private closed = false;
  /** accountability: checks every route step (receipts, audits); none when it is off */
  accountability?: GatewayAccountability;
  /** Prometheus metrics, when GatewayOptions.metrics names a registry */
  readonly metrics?: GatewayMetrics;
  /** with a ledger: evidence submission, payments and reputation per epoch */
  settlement?: GatewaySettlement;
  /** with a ledger: stake and reputation as routing reads them */
  stakeView?: LedgerStakeView;
  /** with a ledger: each open generation's receipt requestId → the request its payment settles with */
  private readonly paying = new Map<string, string>();

  private constructor(
    private readonly opts: GatewayOptions,
    readonly host: OdsiHost,
    private readonly routes: RouteClient,
    private readonly src: WeightSource,
    private readonly embed: Stage,
    private readonly head: Stage,
    tokenizer: Tokenizer,
    modelId: string,
  ) {
    super();
    this.pipelineDepth = opts.pipelineDepth;
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
    const nLayers = src.config.nLayers;
    if (opts.waves) this.waves = new Waves(opts.waves === true ? WAVE_WAIT_MS : (opts.waves.waitMs ?? WAVE_WAIT_MS));
    if (opts.metrics)
      this.metrics = new GatewayMetrics(opts.metrics, {
        status: () => this.swarmStatus(),
        recoveries: () => this.recoveries,
        accountability: () => this.accountabilityTotals(),
        waves: () => this.waves?.stats,
        disputes: () => ({ ...this.disputes.stats, proven: this.evidence?.stats.proven ?? 0 }),
        unexplained: () => this.unexplained.stats,
      });
    if (opts.peers) this.source = new StaticCandidates(opts.peers);
    else {
      this.discovery = new Discovery(host, {
        modelId,
        nLayers,
        refreshMs: opts.refreshMs,
        lookupTimeoutMs: opts.lookupTimeoutMs,
        onLookup: (ms, ok) => this.metrics?.lookedUp(ms, ok),
      });
      this.source = this.discovery;
    }
    this.load = new SessionLoad(this.source);
    this.planner = new CostPlanner(this.load, {
      nLayers,
      bans: this.bans,
      doubts: this.disputes.doubts,
      seed: opts.routeSeed,
      stake: opts.stake,
    });
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
      // the embedding and LM head are a lookup and one matmul: with llama nodes the gateway runs
      // them on ORT, which takes a SmolLM2-135M Q4_0 head in 0.7 ms per token against 8.2 ms
      // through libllama (in process, 1 thread; bench/README.md, concurrency)
      const engine = opts.engine === 'llama' ? 'ort' : (opts.engine ?? 'reference');
      // shared by every request: concurrent calls go through them as one batched pass
      stages.push(new CoalescingStage(await createStage(engine, src, { start: 0, end: 0, embed: true, head: false })));
      stages.push(
        new CoalescingStage(
          await createStage(engine, src, { start: L, end: L, embed: false, head: true }, { computeThread: opts.computeThread }),
        ),
      );
      host = await createHost({ identity: opts.identity ?? generateIdentity(), listen: opts.listen, bootstrap: opts.bootstrap });
      // a RESULT carries at most a whole context's rows (plus its receipts)
      const routes = await RouteClient.start(host, {
        maxResultBytes: src.config.contextLength * src.config.dim * 4 + (1 << 20),
        streamSpares: opts.streamSpares,
      });
      const lc = opts.ledger;
      const stakeView = lc ? await LedgerStakeView.open(lc.ledger, { refreshMs: lc.stakeRefreshMs }) : undefined;
      const gw = new Gateway({ ...opts, stake: opts.stake ?? stakeView }, host, routes, src, stages[0]!, stages[1]!, tokenizer, modelId);
      gw.stakeView = stakeView;
      // accountability: receipt checks + audits, re-executed by other nodes of the swarm (src/accountability/gateway)
      const acc = opts.accountability ?? {};
      if (acc.enabled !== false)
        gw.accountability = createGatewayAccountability({
          host,
          domain: acc.domain ?? { chainId: DEV_CHAIN_ID },
          src,
          bans: gw.bans,
          modelId,
          auditRate: acc.auditRate,
          holdAtRate: acc.holdAtRate,
          reputation: acc.reputation,
          auditors: () => acc.auditors ?? gw.source.candidates(),
          stake: opts.stake ?? stakeView,
          onReceipts: lc ? (r) => gw.settlement?.addReceipts(r, gw.paying.get(r[0]?.record.requestId ?? '')) : undefined,
        });
      if (gw.accountability)
        gw.evidence = new DisputeEvidence({
          host,
          domain: acc.domain ?? { chainId: DEV_CHAIN_ID },
          dim: src.config.dim,
          bans: gw.bans,
          absolve: (liar) => void gw.disputes.absolve(liar),
          audit: (c, receipt) =>
            gw.accountability!.auditSigned({
              routeSessionId: c.sessionId,
              step: c.step,
              hopIndex: c.hopIndex,
              hop: c.accused,
              dim: src.config.dim,
              receipt,
            }),
        });
      if (lc) {
        gw.settlement = new GatewaySettlement({
          ledger: lc.ledger,
          signer: host.identity,
          evidence: gw.accountability?.queue,
          stake: stakeView,
          audits: () => gw.accountability?.audits ?? [],
          epochMs: lc.epochMs ?? 60_000,
        });
        gw.settlement.start();
      }
      gw.discovery?.start();
      return gw;
    } catch (e) {
      for (const s of stages) await s.dispose().catch(() => undefined);
      await host?.stop().catch(() => undefined);
      src.close();
      throw e;
    }
  }

  /** the ledger this gateway settles with, if any (read-only users: the dashboard's ledger panel) */
  get ledger(): Ledger | undefined {
    return this.opts.ledger?.ledger;
  }

  get nLayers(): number {
    return this.src.config.nLayers;
  }

  /** the verified adverts from the last lookups (none with a fixed peer list) */
  knownAdverts(): readonly NodeAdvert[] {
    return this.discovery?.known() ?? [];
  }

  /** measured gateway↔peer RTTs (ms, smoothed) */
  rtts(): ReadonlyMap<string, number> {
    return this.source.rttMs();
  }

  /** Re-read adverts from the DHT and ping the peers (nothing to do with a fixed peer list). */
  refresh(): Promise<void> {
    return this.discovery?.refresh() ?? Promise.resolve();
  }

  /** The best route now (throws NoRouteError naming uncovered layers). */
  route(opts: { exclude?: Set<string>; needKvTokens?: number } = {}): Route {
    return this.planner.route(opts);
  }

  /** Wait (bounded) until the known nodes cover every layer; returns the route the next request gets (previewed, not drawn). */
  async waitForRoute(timeoutMs: number): Promise<Route> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return this.planner.preview();
      } catch (e) {
        if (!(e instanceof NoRouteError) || Date.now() >= deadline) throw e;
      }
      await Promise.all([this.refresh(), sleep(Math.min(250, Math.max(0, deadline - Date.now())))]);
    }
  }

  override unavailable(): string | undefined {
    if (this.closed) return 'gateway is shutting down';
    return undefined;
  }

  /** Readiness for /healthz: a route covers every layer; plus the swarm as this gateway sees it. */
  status(): { ready: boolean; reason?: string; detail?: Record<string, unknown> } {
    const rtt = this.source.rttMs();
    const nodes = this.source
      .candidates()
      .map((c) => ({ peerId: c.peerId, layers: [c.start, c.end], msPerToken: c.msPerToken, load: c.load, rttMs: rtt.get(c.peerId) }));
    const detail = { modelId: this.modelId, peerId: this.host.peerId, nodes, banned: [...this.bans.active()] };
    try {
      const r = this.planner.preview(); // a probe must not advance the planner's draws
      return {
        ready: true,
        detail: {
          ...detail,
          route: r.hops.map((h) => ({ peerId: h.peerId, layers: [h.start, h.end] })),
          estimatedMsPerToken: r.estimatedMs,
        },
      };
    } catch (e) {
      const lookup = this.discovery?.lastError;
      const why = (e as Error).message + (lookup ? ` (last lookup failed: ${lookup})` : '');
      return { ready: false, reason: why, detail };
    }
  }

  /** The swarm as this gateway sees it: nodes, per-layer coverage, bans, convictions (GET /v1/odsi/status).
   *  `unusable`: peers a caller found down or unfit on its own (e.g. the dashboard's pings of a
   *  fixed peer list), reported unreachable and left out of coverage. */
  swarmStatus(o: { unusable?: ReadonlySet<string> } = {}): SwarmStatus {
    let route: Route | undefined;
    let noRouteReason: string | undefined;
    try {
      route = this.planner.preview(); // looking must not change what requests get routed to
    } catch (e) {
      const lookup = this.discovery?.lastError;
      noRouteReason = (e as Error).message + (lookup ? ` (last lookup failed: ${lookup})` : '');
    }
    const acc = this.accountability;
    const stake = this.opts.stake;
    return swarmStatus({
      model: { id: this.model.id, modelId: this.modelId, nLayers: this.nLayers },
      gatewayPeerId: this.host.peerId,
      candidates: this.load.candidates(),
      adverts: this.discovery?.known(),
      rttMs: this.source.rttMs(),
      unreachable: o.unusable?.size ? new Set([...this.source.unavailable(), ...o.unusable]) : this.source.unavailable(),
      bans: this.bans.list(),
      doubts: this.disputes.list(),
      measuredMsPerToken: this.measured.snapshot(),
      convictionOf: (p) => acc?.convictionOf(p),
      ineligible:
        stake && ((p) => (peerEligible(stake, p) ? undefined : 'no eligible stake on the ledger (below the minimum, slashed or unknown)')),
      audits: acc?.audits,
      route,
      noRouteReason,
      recoveries: { ...this.recoveries },
      accountability: this.accountabilityTotals(),
    });
  }

  private accountabilityTotals(): SwarmStatus['accountability'] {
    const acc = this.accountability;
    return (
      acc && {
        steps: acc.stats.steps,
        audited: acc.stats.audited,
        failed: acc.stats.failed,
        convicted: new Set(acc.evidence.map((e) => e.peerId)).size,
        evidence: acc.evidence.length,
      }
    );
  }

  private onFault(e: FaultEvent): void {
    this.faults.push(e);
    if (e.type === 'reroute') this.recoveries[e.method]++;
    else if (e.type === 'gave_up') this.recoveries.gaveUp++;
  }

  /** One generation without HTTP: the tokens, the route and what it went through. */
  async run(req: GatewayRunRequest): Promise<GatewayRun> {
    const sessionId = req.sessionId ?? randomUUID();
    const it = this.stream(sessionId, req);
    let route: RouteHopRef[] = [];
    for (;;) {
      const r = await it.next();
      if (r.done) {
        const events = this.faults.events().filter((e) => e.sessionId === sessionId);
        return { ...r.value, sessionId, route, events };
      }
      route = routeOf(r.value.timeline);
      await req.onToken?.({ ...r.value, route });
    }
  }

  protected async openPipeline(sessionId: string, req: BackendRequest): Promise<RequestPipeline> {
    const open = (): Promise<ResilientRoute> =>
      openResilientRoute({
        routes: this.routes,
        modelId: this.modelId,
        config: this.src.config,
        sessionId,
        planner: this.planner,
        bans: this.bans,
        disputes: this.judge,
        unexplained: this.opts.rememberUnexplained === false ? undefined : this.unexplained,
        deadlineMs: req.deadlineMs ?? this.opts.deadlineMs,
        maxTokens: req.promptIds.length + req.maxTokens,
        openAttempts: this.opts.openAttempts,
        eagerOpen: this.opts.eagerOpen,
        signal: req.signal,
        ...this.opts.failover,
        promptChunk: this.opts.promptChunk,
        onEvent: (e) => this.onFault(e),
        verifier: this.accountability?.verifier,
      });
    let route: ResilientRoute;
    try {
      route = await open();
    } catch (e) {
      // no adverts yet (just started) or all excluded: look again once before giving up
      if (!(e instanceof NoRouteError) || !this.discovery) throw e;
      await this.refresh();
      route = await open();
    }
    const release = this.load.hold(route.hops.map((h) => h.peerId));
    // ledger: this generation's receipts are credited to its request (BackendRequest.requestKey,
    // ended by endRequest); without one the generation is its own request, ended with it
    const rid = this.settlement ? requestIdOf(sessionId) : undefined;
    if (rid) this.paying.set(rid, req.requestKey ?? rid);
    return {
      stages: [
        new TimedStage(this.embed, 'gateway'),
        new MeasuredRoute(route, this.measured, this.waves),
        new TimedStage(this.head, 'gateway'),
      ],
      release: async () => {
        release();
        await route.dispose().catch(() => undefined);
        if (rid) {
          this.paying.delete(rid);
          if (req.requestKey === undefined) this.settlement?.end(rid);
        }
      },
    };
  }

  /**
   * Charges the ledger's client account for a request's usage (prompt + completion tokens, as the
   * API reported them); with `request` (the generations' BackendRequest.requestKey) the charge
   * settles with that request's credits once endRequest(request) says it is over.
   */
  chargeUsage(totalTokens: number, request?: string): void {
    if (this.settlement && this.opts.ledger) this.settlement.charge(this.opts.ledger.account, totalTokens, request);
  }

  /** The API is done with `request` (charged or not): its credits and charge settle with the open epoch. */
  endRequest(request: string): void {
    this.settlement?.end(request);
  }

  /** Submits pending evidence, then settles the open epoch with the ledger (no-op without one). */
  async settle(): Promise<void> {
    await this.accountability?.settled();
    await this.settlement?.drained();
    await this.settlement?.settle();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.discovery?.close();
    await this.accountability?.dispose().catch(() => undefined);
    // the open epoch is settled before the gateway goes (the ledger itself is the caller's to close)
    await this.settlement?.drained().catch(() => undefined);
    await this.settlement?.settle({ final: true }).catch(() => undefined);
    await this.settlement?.stop().catch(() => undefined);
    this.stakeView?.stop();
    await this.routes.stop();
    await this.host.stop().catch(() => undefined);
    await this.embed.dispose().catch(() => undefined);
    await this.head.dispose().catch(() => undefined);
    this.src.close();
  }
}

/** The route's stage in a request pipeline: also feeds each decode step's per-hop compute to the gateway's measured speeds. */
class MeasuredRoute extends TimedStage {
  constructor(
    private readonly route: ResilientRoute,
    private readonly speed: MeasuredSpeed,
    private readonly waves?: Waves,
  ) {
    super(route, 'route');
  }

  override async forward(input: StageInput): Promise<StageOutput> {
    if (input.nTokens !== 1) return super.forward(input);
    // the route's key (its hops in order) only when waves are on: a string per step otherwise spent for nothing
    const out = this.waves
      ? await this.waves.step(input.sessionId, this.route.hops.map((h) => h.peerId).join(' '), () => super.forward(input))
      : await super.forward(input);
    this.speed.observe(this.route.lastTimeline);
    return out;
  }

  override closeSession(sessionId: string): void {
    this.waves?.close(sessionId);
    super.closeSession(sessionId);
  }
}

/** the remote hops of one step's timeline, in route order */
function routeOf(timeline: TokenTimeline): RouteHopRef[] {
  return timeline.hops.filter((h) => h.role === 'layers').map((h) => ({ peerId: h.node, start: h.start, end: h.end }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
