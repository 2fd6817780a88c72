// A local swarm of `odsi node` processes on 127.0.0.1 (demo, tests): the first node is the
// bootstrap of the others. Every child is killed on stop(), on process exit and when a start
// fails, so nothing is left running.

import { killOnExit, odsiBin } from '../util/children.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface SwarmNodeInfo {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
  msPerToken: number;
  engine: string;
  pid: number;
}

export interface LocalSwarmOptions {
  model: string;
  /** decoder layers per node, [start, end) */
  ranges: [number, number][];
  engine?: 'ort' | 'reference';
  /** skip hashing the model in every node */
  modelId?: string;
  /** node advert refresh interval (default 10 s; adverts live 3 intervals) */
  announceIntervalMs?: number;
  /** how long one node may take to report ready (default 60 s) */
  readyTimeoutMs?: number;
  /** pino level for the nodes' stderr logs (default 'warn') */
  logLevel?: string;
  /** pass node stderr through to ours (default: only when ODSI_SWARM_STDERR is set; else the
   *  last lines are kept for error messages) */
  inheritStderr?: boolean;
  /** extra arguments for every node */
  extraArgs?: string[];
  /** fault-tolerance: extra arguments for node i only (e.g. --fault specs) */
  nodeArgs?: (index: number) => string[];
}

interface Child {
  proc: ChildProcess;
  info?: SwarmNodeInfo;
  stderrTail: string[];
}

export { odsiBin };

export class LocalSwarm {
  private children: Child[] = [];
  private stopped = false;

  private constructor(private readonly opts: LocalSwarmOptions) {}

  get nodes(): SwarmNodeInfo[] {
    return this.children.map((c) => c.info!).filter(Boolean);
  }

  /** multiaddrs of the bootstrap node */
  get bootstrap(): string[] {
    return this.nodes[0]?.addrs.slice(0, 1) ?? [];
  }

  static async start(opts: LocalSwarmOptions): Promise<LocalSwarm> {
    if (!opts.ranges.length) throw new Error('a swarm needs at least one node');
    const s = new LocalSwarm(opts);
    try {
      await s.spawnNode(opts.ranges[0]!, [], 0);
      const boot = s.bootstrap;
      await Promise.all(opts.ranges.slice(1).map((r, i) => s.spawnNode(r, boot, i + 1)));
    } catch (e) {
      await s.stop();
      throw e;
    }
    return s;
  }

  private spawnNode(range: [number, number], bootstrap: string[], index = 0 /* fault-tolerance */): Promise<SwarmNodeInfo> {
    const o = this.opts;
    const args = [
      odsiBin(),
      'node',
      '--model',
      o.model,
      '--layers',
      `${range[0]}:${range[1]}`,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--engine',
      o.engine ?? 'reference',
      '--announce-interval',
      String(o.announceIntervalMs ?? 10_000),
      '--log-level',
      o.logLevel ?? 'warn',
      ...(o.modelId ? ['--model-id', o.modelId] : []),
      ...bootstrap.flatMap((b) => ['--bootstrap', b]),
      ...(o.extraArgs ?? []),
      ...(o.nodeArgs?.(index) ?? []), // fault-tolerance
    ];
    // ODSI_SWARM_STDERR=1 shows the nodes' logs (debugging tests and the demo)
    const inherit = o.inheritStderr ?? !!process.env.ODSI_SWARM_STDERR;
    const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', inherit ? 'inherit' : 'pipe'] });
    killOnExit(proc);
    const child: Child = { proc, stderrTail: [] };
    this.children.push(child);
    if (proc.stderr) {
      createInterface({ input: proc.stderr }).on('line', (l) => {
        child.stderrTail.push(l);
        if (child.stderrTail.length > 20) child.stderrTail.shift();
      });
    }
    const label = `node ${range[0]}:${range[1]}`;
    return new Promise<SwarmNodeInfo>((resolveReady, reject) => {
      const timeoutMs = o.readyTimeoutMs ?? 60_000;
      const timer = setTimeout(() => fail(new Error(`${label} did not report ready within ${timeoutMs} ms${tail()}`)), timeoutMs);
      const tail = () => (child.stderrTail.length ? `:\n  ${child.stderrTail.slice(-8).join('\n  ')}` : '');
      let done = false;
      const fail = (e: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(e);
      };
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        if (done) return;
        let msg: { event?: string } & Partial<SwarmNodeInfo>;
        try {
          msg = JSON.parse(line);
        } catch {
          return; // not ours
        }
        if (msg.event !== 'ready' || !msg.peerId || !msg.addrs?.length) return;
        done = true;
        clearTimeout(timer);
        child.info = {
          peerId: msg.peerId,
          addrs: msg.addrs,
          start: msg.start ?? range[0],
          end: msg.end ?? range[1],
          msPerToken: msg.msPerToken ?? 0,
          engine: msg.engine ?? o.engine ?? 'reference',
          pid: proc.pid ?? -1,
        };
        resolveReady(child.info);
      });
      proc.once('error', (e) => fail(new Error(`${label} could not start: ${e.message}`)));
      proc.once('exit', (code, sig) => {
        // give the stderr reader a moment to collect the reason
        setTimeout(() => fail(new Error(`${label} exited (${sig ?? `code ${code}`}) before it was ready${tail()}`)), 50);
      });
    });
  }

  /** Kill one node (fault-injection in tests); resolves when it has exited. */
  async kill(index: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.children[index];
    if (c) await killAndWait(c.proc, signal, 5_000);
  }

  /** Stop every node: SIGTERM, then SIGKILL after a grace period. Idempotent. */
  async stop(graceMs = 3_000): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(this.children.map((c) => killAndWait(c.proc, 'SIGTERM', graceMs)));
  }
}

async function killAndWait(proc: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    return;
  }
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    proc.kill(signal);
  } catch {
    /* gone */
  }
  const timer = setTimeout(() => {
    try {
      proc.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }, graceMs);
  await exited;
  clearTimeout(timer);
}
