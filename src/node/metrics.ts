// Prometheus metrics of one node (`odsi node --metrics-port P`): its own prom-client registry
// (never the global default one), filled by the node server as steps run and read from the
// server's counters at scrape time. Served by a bare HTTP listener that answers GET /metrics
// only; it reveals nothing a scraper could not learn from the node's signed advert and timings.

import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** What the metrics read from the node at scrape time. */
export interface NodeMetricsSource {
  /** layers served, e.g. "0:2" (the label of the step histograms) */
  layers: string;
  sessions(): number;
  /** KV bytes reserved by sessions now, and the budget */
  kvBytes(): { reserved: number; budget: number };
  /** refusals counted elsewhere (per-peer limits), by reason */
  refusals(): Record<string, number>;
  /** audit re-executions served to auditors, and refused */
  audits(): { served: number; refused: number; tokens: number };
}

const STEP_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export class NodeMetrics {
  readonly registry = new Registry();
  private readonly compute: Histogram<'layers'>;
  private readonly queue: Histogram<'layers'>;
  private readonly send: Histogram<'layers'>;
  private readonly steps: Counter<'layers'>;
  private readonly tokens: Counter<'layers'>;
  private readonly stepErrors: Counter<'code'>;
  private readonly sessionRefusals: Counter<'reason'>;
  private readonly relayedErrors: Counter<'verified'>;
  private readonly bytesIn: Counter<'protocol'>;
  private readonly bytesOut: Counter<'protocol'>;
  private readonly publish: Histogram;
  private readonly batchSessions: Histogram<'layers'>;
  private readonly batchTokens: Histogram<'layers'>;
  private readonly iterationSeconds: Histogram<'layers'>;

  constructor(
    private readonly src: NodeMetricsSource,
    opts: { defaultMetrics?: boolean } = {},
  ) {
    const registers = [this.registry];
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'odsi_node_' });
    const hist = (name: string, help: string) => new Histogram({ name, help, labelNames: ['layers'], buckets: STEP_BUCKETS, registers });
    this.compute = hist('odsi_node_step_compute_seconds', 'compute time of one step on this node, by layer range');
    this.queue = hist('odsi_node_step_queue_seconds', 'time a step waited for the compute lock after it arrived, by layer range');
    this.send = hist('odsi_node_step_send_seconds', 'time to serialise a step output and hand it to the stream, by layer range');
    this.steps = new Counter({ name: 'odsi_node_steps_total', help: 'steps computed and sent on', labelNames: ['layers'], registers });
    this.tokens = new Counter({
      name: 'odsi_node_step_tokens_total',
      help: 'tokens computed in steps (prefill and decode)',
      labelNames: ['layers'],
      registers,
    });
    this.stepErrors = new Counter({
      name: 'odsi_node_step_errors_total',
      help: 'steps answered with an error, by error code',
      labelNames: ['code'],
      registers,
    });
    this.sessionRefusals = new Counter({
      name: 'odsi_node_session_refusals_total',
      help: 'session OPENs refused, by error code',
      labelNames: ['reason'],
      registers,
    });
    this.relayedErrors = new Counter({
      name: 'odsi_node_relayed_errors_total',
      help: "next hops' ERRORs passed upstream: verified = a later hop's signed ERROR as it was; false = re-issued in this node's name (the next hop's word only)",
      labelNames: ['verified'],
      registers,
    });
    this.bytesIn = new Counter({
      name: 'odsi_node_received_bytes_total',
      help: 'bytes received on odsi streams, by protocol',
      labelNames: ['protocol'],
      registers,
    });
    this.bytesOut = new Counter({
      name: 'odsi_node_sent_bytes_total',
      help: 'bytes sent on odsi streams, by protocol',
      labelNames: ['protocol'],
      registers,
    });
    this.publish = new Histogram({
      name: 'odsi_node_advert_publish_seconds',
      help: 'time to publish the signed advert to the DHT',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    // continuous batching: how many sessions' steps met in one forward pass (scheduler.ts)
    const BATCH_BUCKETS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64];
    this.batchSessions = new Histogram({
      name: 'odsi_node_batch_sessions',
      help: "sessions' steps in one scheduler iteration (one batched forward pass), by layer range",
      labelNames: ['layers'],
      buckets: BATCH_BUCKETS,
      registers,
    });
    this.batchTokens = new Histogram({
      name: 'odsi_node_batch_tokens',
      help: 'tokens in one scheduler iteration (decode tokens plus prompt chunks), by layer range',
      labelNames: ['layers'],
      buckets: BATCH_BUCKETS,
      registers,
    });
    this.iterationSeconds = hist('odsi_node_iteration_seconds', 'time of one scheduler iteration (one batched forward pass), by layer range');
    new Gauge({
      name: 'odsi_node_sessions',
      help: 'sessions open on this node',
      registers,
      collect() {
        this.set(src.sessions());
      },
    });
    new Gauge({
      name: 'odsi_node_kv_reserved_bytes',
      help: 'KV cache bytes reserved by open sessions (as the engine allocates and stores them)',
      registers,
      collect() {
        this.set(src.kvBytes().reserved);
      },
    });
    new Gauge({
      name: 'odsi_node_kv_budget_bytes',
      help: 'KV cache bytes this node admits sessions against (its budget, less what the engine keeps for itself or cannot hold)',
      registers,
      collect() {
        this.set(src.kvBytes().budget);
      },
    });
    new Counter({
      name: 'odsi_node_refusals_total',
      help: 'work refused by per-peer limits, by reason (sessions, kv, streams)',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(src.refusals())) this.inc({ reason }, n);
      },
    });
    new Counter({
      name: 'odsi_node_audits_served_total',
      help: 'audit re-executions served to auditors',
      registers,
      collect() {
        this.reset();
        this.inc(src.audits().served);
      },
    });
    new Counter({
      name: 'odsi_node_audits_refused_total',
      help: 'audit re-executions refused',
      registers,
      collect() {
        this.reset();
        this.inc(src.audits().refused);
      },
    });
  }

  /** one step computed and sent on (times in ms, as the hop timing has them) */
  step(t: { queueMs: number; computeMs: number; sendMs: number }, nTokens: number): void {
    const l = { layers: this.src.layers };
    this.compute.observe(l, t.computeMs / 1000);
    this.queue.observe(l, t.queueMs / 1000);
    this.send.observe(l, t.sendMs / 1000);
    this.steps.inc(l);
    this.tokens.inc(l, nTokens);
  }

  /** one scheduler iteration: `sessions` steps with `tokens` tokens in one forward pass of `ms` */
  iteration(sessions: number, tokens: number, ms: number): void {
    const l = { layers: this.src.layers };
    this.batchSessions.observe(l, sessions);
    this.batchTokens.observe(l, tokens);
    this.iterationSeconds.observe(l, ms / 1000);
  }

  stepError(code: string): void {
    this.stepErrors.inc({ code });
  }

  sessionRefused(reason: string): void {
    this.sessionRefusals.inc({ reason });
  }

  relayedError(verified: boolean): void {
    this.relayedErrors.inc({ verified: String(verified) });
  }

  /** a byte meter for a channel of `protocol` (ChannelOptions.onBytes) */
  meter(protocol: string): (dir: 'in' | 'out', n: number) => void {
    const inc = this.bytesIn.labels({ protocol });
    const out = this.bytesOut.labels({ protocol });
    return (dir, n) => (dir === 'in' ? inc.inc(n) : out.inc(n));
  }

  advertPublished(ms: number): void {
    this.publish.observe(ms / 1000);
  }
}

/** Serve `registry` at GET /metrics on host:port; resolves with the URL once listening. */
export async function serveMetrics(registry: Registry, port: number, host = '127.0.0.1'): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: only GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n'),
    );
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  const p = typeof a === 'object' && a ? a.port : port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${p}/metrics`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
