// A local swarm of `odsi node` processes on 127.0.0.1 (demo, tests, benchmarks), each a
// NodeProcess: the first node is the bootstrap of the others. Every node is stopped on stop(),
// on process exit and when a start fails, so nothing is left running.

import { NodeProcess, type NodeProcessInfo } from './process.js';

export interface LocalSwarmOptions {
  model: string;
  /** decoder layers per node, [start, end) */
  ranges: [number, number][];
  engine?: 'ort' | 'reference' | 'llama';
  /** skip hashing the model in every node */
  modelId?: string;
  /** node advert refresh interval (default 10 s; adverts live 3 intervals) */
  announceIntervalMs?: number;
  /** start-up benchmark tokens per node (default 8, the node's own default: adverts carry a measured speed) */
  benchTokens?: number;
  /** how long one node may take to report ready (default 60 s) */
  readyTimeoutMs?: number;
  /** pino level for the nodes' stderr logs (default 'warn') */
  logLevel?: string;
  /** pass node stderr through to ours (default: the last lines are kept for error messages) */
  inheritStderr?: boolean;
  /** every node serves Prometheus metrics on a free port (NodeProcessInfo.metrics) */
  metrics?: boolean;
  /** extra arguments for every node */
  extraArgs?: string[];
  /** key file of node i (created on first start); default: a fresh key per start */
  identityFile?: (index: number) => string | undefined;
  /** fault-tolerance: extra arguments for node i only (e.g. --fault specs) */
  nodeArgs?: (index: number) => string[];
}

export class LocalSwarm {
  private stopped = false;

  private constructor(private readonly procs: NodeProcess[]) {}

  /** what each node reported when it became ready, in the order of opts.ranges */
  get nodes(): NodeProcessInfo[] {
    return this.procs.map((p) => p.info);
  }

  /** multiaddrs of the bootstrap node */
  get bootstrap(): string[] {
    return this.procs[0]?.info.addrs.slice(0, 1) ?? [];
  }

  static async start(opts: LocalSwarmOptions): Promise<LocalSwarm> {
    if (!opts.ranges.length) throw new Error('a swarm needs at least one node');
    const first = await startNode(opts, 0, []);
    const boot = first.info.addrs.slice(0, 1);
    const rest = await Promise.allSettled(opts.ranges.slice(1).map((_, i) => startNode(opts, i + 1, boot)));
    const started = [first, ...rest.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))];
    const failed = rest.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    const swarm = new LocalSwarm(started);
    if (failed) {
      await swarm.stop();
      throw failed.reason;
    }
    return swarm;
  }

  /** Kill one node (fault-injection in tests); resolves when it has exited. */
  async kill(index: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.procs[index]?.kill(signal);
  }

  /** Stop every node: SIGTERM, then SIGKILL after a grace period. Idempotent. */
  async stop(graceMs = 3_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(this.procs.map((p) => p.stop(graceMs)));
  }
}

function startNode(o: LocalSwarmOptions, index: number, bootstrap: string[]): Promise<NodeProcess> {
  return NodeProcess.start({
    model: o.model,
    range: o.ranges[index]!,
    bootstrap,
    modelId: o.modelId,
    engine: o.engine,
    announceIntervalMs: o.announceIntervalMs ?? 10_000,
    benchTokens: o.benchTokens ?? 8,
    readyTimeoutMs: o.readyTimeoutMs,
    logLevel: o.logLevel,
    inheritStderr: o.inheritStderr,
    identityFile: o.identityFile?.(index),
    extraArgs: [...(o.metrics ? ['--metrics-port', '0'] : []), ...(o.extraArgs ?? []), ...(o.nodeArgs?.(index) ?? [])],
  });
}
