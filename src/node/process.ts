// `odsi node` child processes on 127.0.0.1: the one way this code base spawns nodes (the demo's
// LocalSwarm, tests, benchmarks). A start waits, bounded, for the node's `ready` JSON line and
// keeps the last stderr lines for error messages; a node can be killed and brought back, and
// keeps its identity file and TCP port across restarts, so a restarted node is the same peer
// at the same address, as after a real reboot. Children die with this process (killOnExit).

import type { NodeAdvert } from '../p2p/advert-record.js';
import type { RouteCandidate } from '../routing/router.js';
import type { ComputeThread } from '../engine/types.js';
import { killOnExit, odsiBin } from '../util/children.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';

export interface NodeProcessOptions {
  model: string;
  range: [number, number];
  /** file for the node key (created on first start, reused on restart); without it every start is a new peer */
  identityFile?: string;
  /** TCP port on 127.0.0.1 (default: a free one, kept across restarts) */
  port?: number;
  bootstrap?: string[];
  modelId?: string;
  engine?: 'reference' | 'ort' | 'llama';
  announceIntervalMs?: number;
  /** --fault specs (sets ODSI_ALLOW_FAULTS=1 for this child) */
  faults?: string[];
  extraArgs?: string[];
  /** start-up benchmark tokens (default 0: skip; >0 also warms the engine up) */
  benchTokens?: number;
  readyTimeoutMs?: number;
  logLevel?: string;
  /** run at this CPU niceness (via nice(1), all threads): e.g. an auditor that stands in for another machine in a one-box benchmark */
  nice?: number;
  /** run on these CPUs only (taskset(1) -c, e.g. '2-3'; all threads, set before any starts): nodes that must not share cores in a one-box benchmark */
  cpus?: string;
  /** pass the node's stderr through to ours (default: keep its last lines for error messages) */
  inheritStderr?: boolean;
  /** variables set (or, when undefined, removed) in the child's environment, over ours */
  env?: Record<string, string | undefined>;
  /** flags for the node runtime itself, before the script (e.g. --cpu-prof for a benchmark's profile) */
  nodeArgs?: string[];
}

/** what the node reported in its `ready` line: its advert's fields (msPerToken is 0 when benchTokens is 0) and its pid */
export type NodeProcessInfo = Pick<NodeAdvert, 'peerId' | 'addrs' | 'modelId' | 'start' | 'end' | 'msPerToken' | 'engine'> & {
  pid: number;
  /** Prometheus metrics URL, when the node serves metrics */
  metrics?: string;
  /** where its engine computes, for engines that can choose (Stage.computeThread) */
  computeThread?: ComputeThread;
};

/** A TCP port free right now on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => res(port));
    });
  });
}

export class NodeProcess {
  private proc?: ChildProcess;
  private exited?: Promise<void>;
  info!: NodeProcessInfo;
  readonly stderrTail: string[] = [];

  private constructor(
    private readonly o: NodeProcessOptions,
    readonly port: number,
  ) {}

  static async start(o: NodeProcessOptions): Promise<NodeProcess> {
    const n = new NodeProcess(o, o.port ?? (await freePort()));
    await n.spawn(o.faults);
    return n;
  }

  get alive(): boolean {
    return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get peerId(): string {
    return this.info.peerId;
  }

  /** This node as a route candidate at the given speed (tests and benchmarks plan with it). */
  candidate(msPerToken = 1): RouteCandidate {
    return {
      peerId: this.peerId,
      addrs: this.info.addrs,
      start: this.info.start,
      end: this.info.end,
      msPerToken,
      load: 0,
      freeKvTokens: 1e6,
    };
  }

  /** Start again after a kill (same key, same port); `faults` replaces the fault specs. */
  async restart(faults?: string[]): Promise<void> {
    if (this.alive) throw new Error(`node ${this.info.peerId} is still running`);
    await this.spawn(faults ?? []);
  }

  /** Send a signal and wait for the exit (SIGKILL after graceMs if it lingers). */
  async kill(signal: NodeJS.Signals = 'SIGKILL', graceMs = 5_000): Promise<void> {
    const p = this.proc;
    if (!p || !this.alive) return;
    const timer = setTimeout(() => p.kill('SIGKILL'), graceMs);
    p.kill(signal);
    await this.exited;
    clearTimeout(timer);
  }

  /** Shut down cleanly: SIGTERM, SIGKILL after graceMs. */
  stop(graceMs = 5_000): Promise<void> {
    return this.kill('SIGTERM', graceMs);
  }

  private spawn(faults: string[] | undefined): Promise<void> {
    const o = this.o;
    const args = [
      ...(o.nodeArgs ?? []),
      odsiBin(),
      'node',
      '--model',
      o.model,
      '--layers',
      `${o.range[0]}:${o.range[1]}`,
      '--listen',
      `/ip4/127.0.0.1/tcp/${this.port}`,
      '--engine',
      o.engine ?? 'reference',
      '--announce-interval',
      String(o.announceIntervalMs ?? 2000),
      '--bench-tokens',
      String(o.benchTokens ?? 0),
      '--log-level',
      o.logLevel ?? 'warn',
      // one machine: the OS keeps a killed node's last writes, so its slashing protection need not fsync each step
      ...(o.identityFile ? ['--identity', o.identityFile, '--protection-sync', 'normal'] : []),
      ...(o.modelId ? ['--model-id', o.modelId] : []),
      ...(o.bootstrap ?? []).flatMap((b) => ['--bootstrap', b]),
      ...(faults ?? []).flatMap((f) => ['--fault', f]),
      ...(o.extraArgs ?? []),
    ];
    const env = { ...process.env, ...o.env, ...(faults?.length ? { ODSI_ALLOW_FAULTS: '1' } : {}) };
    const stdio: ['ignore', 'pipe', 'pipe' | 'inherit'] = ['ignore', 'pipe', o.inheritStderr ? 'inherit' : 'pipe'];
    // nice(1) and taskset(1) each exec the next program: nice → taskset → node
    const argv = [
      ...(o.nice !== undefined ? ['nice', '-n', String(o.nice)] : []),
      ...(o.cpus !== undefined ? ['taskset', '-c', o.cpus] : []),
      process.execPath,
      ...args,
    ];
    const proc = spawn(argv[0]!, argv.slice(1), { stdio, env });
    this.proc = proc;
    killOnExit(proc);
    this.exited = new Promise<void>((r) =>
      proc.once('exit', () => {
        r();
      }),
    );
    if (proc.stderr) {
      createInterface({ input: proc.stderr }).on('line', (l) => {
        this.stderrTail.push(l);
        if (this.stderrTail.length > 20) this.stderrTail.shift();
      });
    }
    const label = `node ${o.range[0]}:${o.range[1]} (port ${this.port})`;
    return new Promise<void>((resolveReady, reject) => {
      const ms = o.readyTimeoutMs ?? 60_000;
      let done = false;
      const tail = () => (this.stderrTail.length ? `:\n  ${this.stderrTail.slice(-8).join('\n  ')}` : '');
      const fail = (e: Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        try {
          proc.kill('SIGKILL');
        } catch {
          /* gone */
        }
        reject(e);
      };
      const timer = setTimeout(() => fail(new Error(`${label} not ready within ${ms} ms${tail()}`)), ms);
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        if (done) return;
        let m: { event?: string } & Partial<NodeProcessInfo>;
        try {
          m = JSON.parse(line);
        } catch {
          return;
        }
        if (m.event !== 'ready' || !m.peerId || !m.addrs?.length) return;
        done = true;
        clearTimeout(timer);
        this.info = {
          peerId: m.peerId,
          addrs: m.addrs,
          modelId: m.modelId ?? o.modelId ?? '',
          start: m.start ?? o.range[0],
          end: m.end ?? o.range[1],
          msPerToken: m.msPerToken ?? 0,
          engine: m.engine ?? o.engine ?? 'reference',
          pid: proc.pid ?? -1,
          ...(typeof m.metrics === 'string' ? { metrics: m.metrics } : {}),
          ...(m.computeThread === 'worker' || m.computeThread === 'main' ? { computeThread: m.computeThread } : {}),
        };
        resolveReady();
      });
      proc.once('error', (e) => fail(new Error(`${label} could not start: ${e.message}`)));
      proc.once('exit', (code, sig) =>
        setTimeout(() => fail(new Error(`${label} exited (${sig ?? `code ${code}`}) before it was ready${tail()}`)), 50),
      );
    });
  }
}
