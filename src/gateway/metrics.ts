// The gateway's Prometheus metrics beside the API's (same registry, src/api/metrics.ts): swarm
// coverage, recoveries by method, audits and verdicts, DHT lookup latency (the cloud fallback's
// counter is the API's, odsi_fallback_requests_total). Counters the gateway already keeps are
// read at scrape time; only the lookup histogram is fed as lookups happen.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { SwarmStatus } from './swarm-status.js';

export interface GatewayMetricsSource {
  status(): SwarmStatus;
  recoveries(): { replay: number; transfer: number; gaveUp: number };
  accountability(): { steps: number; audited: number; failed: number; evidence: number; convicted: number } | undefined;
  /** one hop's accusations of another heard so far, and the peers they got banned (routing/disputes.ts) */
  disputes?(): { disputes: number; banned: number; proven?: number };
  /** steps lost with every hop still answering, and the peers they got banned (routing/unexplained.ts) */
  unexplained?(): { failures: number; banned: number };
  /** GatewayOptions.waves: waves and decode steps sent so far (undefined: off) */
  waves?(): { waves: number; steps: number; timedOut: number; overdue: number } | undefined;
}

export class GatewayMetrics {
  private readonly lookup: Histogram<'result'>;

  constructor(registry: Registry, src: GatewayMetricsSource) {
    const registers = [registry];
    this.lookup = new Histogram({
      name: 'odsi_gateway_dht_lookup_seconds',
      help: 'time of one advert lookup in the DHT (ok or failed)',
      labelNames: ['result'],
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    new Counter({
      name: 'odsi_gateway_recoveries_total',
      help: 'failed routes recovered, by method (replay: rebuilt from the gateway history; transfer: KV handed over)',
      labelNames: ['method'],
      registers,
      collect() {
        const r = src.recoveries();
        this.reset();
        this.inc({ method: 'replay' }, r.replay);
        this.inc({ method: 'transfer' }, r.transfer);
      },
    });
    /** a counter read at scrape time */
    const total = (name: string, help: string, read: () => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    const acc = (name: string, help: string, pick: (a: NonNullable<ReturnType<GatewayMetricsSource['accountability']>>) => number) =>
      total(name, help, () => {
        const a = src.accountability();
        return a ? pick(a) : 0;
      });
    const wave = (name: string, help: string, pick: (w: NonNullable<ReturnType<NonNullable<GatewayMetricsSource['waves']>>>) => number) =>
      total(name, help, () => {
        const w = src.waves?.();
        return w ? pick(w) : 0;
      });
    total('odsi_gateway_recovery_failures_total', 'sessions whose recovery gave up', () => src.recoveries().gaveUp);
    total(
      'odsi_gateway_disputes_total',
      "disputes: a hop's signed accusation of its route neighbour (both avoided, neither banned on it alone)",
      () => src.disputes?.().disputes ?? 0,
    );
    total(
      'odsi_gateway_dispute_bans_total',
      'peers banned for being in disputes with two distinct peers',
      () => src.disputes?.().banned ?? 0,
    );
    total(
      'odsi_gateway_dispute_proofs_total',
      "disputes settled by the accused's own signed record (a non-finite output it signed): the accused barred, the accuser cleared",
      () => src.disputes?.().proven ?? 0,
    );
    total(
      'odsi_gateway_unexplained_failures_total',
      'steps lost on a route whose hops all still answered a ping and a probe (every hop doubted)',
      () => src.unexplained?.().failures ?? 0,
    );
    total(
      'odsi_gateway_unexplained_bans_total',
      'peers banned for being, alone, on the routes of three unexplained failures',
      () => src.unexplained?.().banned ?? 0,
    );
    wave('odsi_gateway_waves_total', 'waves of decode steps sent into routes (--waves; steps / waves = mean wave)', (w) => w.waves);
    wave('odsi_gateway_wave_steps_total', 'decode steps sent in waves (--waves)', (w) => w.steps);
    wave(
      'odsi_gateway_waves_timed_out_total',
      'waves sent without every session of the last one, after the wait bound (--waves)',
      (w) => w.timedOut,
    );
    wave('odsi_gateway_waves_overdue_total', 'waves sent while the one before was still in flight, overdue (--waves)', (w) => w.overdue);
    acc('odsi_gateway_verified_steps_total', 'route steps whose receipts were checked', (a) => a.steps);
    acc('odsi_gateway_audits_total', 'audits run (re-executions of sampled steps)', (a) => a.audited);
    acc('odsi_gateway_audits_failed_total', 'audits that found a node at fault', (a) => a.failed);
    acc('odsi_gateway_evidence_total', 'pieces of signed evidence recorded (guilty verdicts, equivocations)', (a) => a.evidence);
    new Gauge({
      name: 'odsi_gateway_convicted_nodes',
      help: 'nodes convicted since start',
      registers,
      collect() {
        this.set(src.accountability()?.convicted ?? 0);
      },
    });
    // one status snapshot per scrape feeds the swarm gauges
    let snap: SwarmStatus | undefined;
    const status = () => (snap ??= src.status());
    new Gauge({
      name: 'odsi_gateway_nodes',
      help: 'nodes known to the gateway, by state (usable = routable; banned, unreachable, convicted; ineligible: not eligible on the ledger; doubted: in a recent dispute or unexplained failure, avoided while another route exists)',
      labelNames: ['state'],
      registers,
      collect() {
        snap = undefined;
        const s = status();
        this.reset();
        this.set({ state: 'usable' }, s.nodes.filter((n) => n.routable).length);
        this.set({ state: 'banned' }, s.nodes.filter((n) => n.banned).length);
        this.set({ state: 'unreachable' }, s.nodes.filter((n) => !n.reachable).length);
        this.set({ state: 'convicted' }, s.nodes.filter((n) => n.conviction).length);
        this.set({ state: 'ineligible' }, s.nodes.filter((n) => n.unroutable?.startsWith('not eligible')).length);
        this.set({ state: 'doubted' }, s.nodes.filter((n) => n.doubt).length);
      },
    });
    new Gauge({
      name: 'odsi_gateway_layer_nodes',
      help: 'usable nodes serving each layer (0 = a gap)',
      labelNames: ['layer'],
      registers,
      collect() {
        this.reset();
        for (const c of status().coverage) this.set({ layer: String(c.layer) }, c.nodes);
      },
    });
    new Gauge({
      name: 'odsi_gateway_uncovered_layers',
      help: 'layers no usable node serves',
      registers,
      collect() {
        this.set(status().coverage.filter((c) => c.nodes === 0).length);
      },
    });
  }

  /** one DHT advert lookup took `ms` */
  lookedUp(ms: number, ok: boolean): void {
    this.lookup.observe({ result: ok ? 'ok' : 'failed' }, ms / 1000);
  }
}
