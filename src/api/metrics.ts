// Prometheus metrics for the API. One registry per server, so several servers (tests) can
// live in one process without name clashes.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface ApiMetrics {
  registry: Registry;
  requests: Counter<'endpoint' | 'status'>;
  promptTokens: Counter;
  generatedTokens: Counter;
  tokenLatency: Histogram;
  timeToFirstToken: Histogram;
  routeFailures: Counter<'reason'>;
  active: Gauge;
  fallbacks: Counter<'reason'>;
}

export function createMetrics(opts: { defaultMetrics?: boolean } = {}): ApiMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'odsi_' });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({
      name: 'odsi_requests_total',
      help: 'API requests by endpoint and HTTP status',
      labelNames: ['endpoint', 'status'],
      registers,
    }),
    promptTokens: new Counter({ name: 'odsi_prompt_tokens_total', help: 'prompt tokens processed', registers }),
    generatedTokens: new Counter({ name: 'odsi_generated_tokens_total', help: 'tokens generated', registers }),
    tokenLatency: new Histogram({
      name: 'odsi_token_latency_seconds',
      help: 'time per generated token (decode step, including the route)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    timeToFirstToken: new Histogram({
      name: 'odsi_time_to_first_token_seconds',
      help: 'request start to first generated token',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    routeFailures: new Counter({
      name: 'odsi_route_failures_total',
      help: 'requests failed by routing or the swarm, by reason',
      labelNames: ['reason'],
      registers,
    }),
    active: new Gauge({ name: 'odsi_active_requests', help: 'requests being generated now', registers }),
    fallbacks: new Counter({
      name: 'odsi_fallback_requests_total',
      help: 'requests served (wholly, or from mid-generation on) by the upstream fallback, by reason (no-route, overload, deadline, failure)',
      labelNames: ['reason'],
      registers,
    }),
  };
}
