// A star of Linux network namespaces for WAN-shaped benchmarks: one hub namespace and one
// namespace per endpoint, each endpoint joined to the hub by a veth pair. Nothing is routed
// between endpoints (the hub does not forward IP), so every byte between two endpoints goes
// through a user-space process in the hub (bench/lib/wan-relay.ts), which adds delay, jitter
// and loss; rate is shaped by `tbf` on both ends of every veth (this kernel has no netem).
//
// Addresses: endpoint i has 10.213.i.2/24, its hub side is 10.213.i.1/24, and the endpoint's
// default route points at the hub. Namespaces are private, so these addresses never meet the
// host's own. Everything is named `<prefix>-...` with the creating process's pid in the prefix;
// destroy() kills what runs inside (processes this benchmark started there) and deletes the
// namespaces, which also removes their veths. Needs root (CAP_NET_ADMIN).

import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { killOnExit } from '../../src/util/children.js';

export interface ShapeOptions {
  /** link rate in Mbit/s, per direction (tbf on each veth end); undefined: unshaped */
  rateMbit?: number;
  /**
   * net.ipv4.tcp_slow_start_after_idle in every namespace made (default true, the kernel's):
   * false keeps a connection's congestion window across idle periods
   */
  slowStartAfterIdle?: boolean;
}

/** true when this process may create namespaces (root) */
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function ip(args: string[], ns?: string): string {
  const full = ns ? ['netns', 'exec', ns, 'ip', ...args] : args;
  return execFileSync('ip', full, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function tc(ns: string, args: string[]): void {
  execFileSync('ip', ['netns', 'exec', ns, 'tc', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** namespaces that exist now (names only) */
export function listNamespaces(): string[] {
  try {
    return readdirSync('/run/netns');
  } catch {
    return [];
  }
}

export class NetnsStar {
  readonly hub: string;
  private readonly created: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(
    readonly prefix: string,
    readonly endpoints: readonly string[],
  ) {
    this.hub = `${prefix}-hub`;
  }

  /** namespace name of endpoint i */
  ns(i: number): string {
    return `${this.prefix}-${this.endpoints[i]}`;
  }

  /** endpoint i's own address */
  addr(i: number): string {
    return `10.213.${i + 1}.2`;
  }

  /** the hub's address on endpoint i's link (where a relay for endpoint i listens) */
  hubAddr(i: number): string {
    return `10.213.${i + 1}.1`;
  }

  /** every namespace this star made (hub first) */
  get namespaces(): string[] {
    return [...this.created];
  }

  /**
   * Builds the star. On any failure what was made so far is removed before the error is thrown.
   * `prefix` must be unique to this run (e.g. odsi-wan-<pid>); endpoint names are short words.
   */
  static create(prefix: string, endpoints: string[], shape: ShapeOptions = {}): NetnsStar {
    if (!isRoot()) throw new Error('network namespaces need root');
    if (endpoints.length > 9) throw new Error('at most 9 endpoints');
    const s = new NetnsStar(prefix, endpoints);
    try {
      s.build(shape);
    } catch (e) {
      s.destroySync(); // nothing runs inside yet
      throw e;
    }
    return s;
  }

  private addNs(name: string, shape: ShapeOptions): void {
    ip(['netns', 'add', name]);
    this.created.push(name);
    ip(['link', 'set', 'lo', 'up'], name);
    // a new namespace starts from the kernel's defaults, whatever the host has set
    const idle = shape.slowStartAfterIdle === false ? '0' : '1';
    execFileSync('ip', ['netns', 'exec', name, 'sysctl', '-qw', `net.ipv4.tcp_slow_start_after_idle=${idle}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  private build(shape: ShapeOptions): void {
    this.addNs(this.hub, shape);
    // veth names are at most 15 characters: 'ow' + pid + endpoint index + side
    const tag = `ow${process.pid}`;
    for (let i = 0; i < this.endpoints.length; i++) {
      const ns = this.ns(i);
      this.addNs(ns, shape);
      const h = `${tag}${i}h`;
      const e = `${tag}${i}e`;
      // created inside the hub, then one end moved: no interface ever lives in the host namespace
      ip(['link', 'add', h, 'type', 'veth', 'peer', 'name', e], this.hub);
      ip(['link', 'set', e, 'netns', ns], this.hub);
      ip(['addr', 'add', `${this.hubAddr(i)}/24`, 'dev', h], this.hub);
      ip(['link', 'set', h, 'up'], this.hub);
      ip(['addr', 'add', `${this.addr(i)}/24`, 'dev', e], ns);
      ip(['link', 'set', e, 'up'], ns);
      ip(['route', 'add', 'default', 'via', this.hubAddr(i)], ns);
      if (shape.rateMbit) {
        // burst ≥ one 64 KiB GSO segment, or 1 ms at line rate when that is larger
        const burst = Math.max(65536 + 1514, Math.ceil((shape.rateMbit * 1e6) / 8 / 1000));
        for (const [where, dev] of [
          [this.hub, h],
          [ns, e],
        ] as const) {
          tc(where, [
            'qdisc',
            'add',
            'dev',
            dev,
            'root',
            'tbf',
            'rate',
            `${shape.rateMbit}mbit`,
            'burst',
            String(burst),
            'latency',
            '200ms',
          ]);
        }
      }
    }
  }

  /** Spawns `cmd args` inside namespace `ns`; the child is killed on destroy() and on our exit. */
  spawn(ns: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    if (this.destroyed) throw new Error('star already destroyed');
    // `ip netns exec` execs the command: the child's pid is the command's own
    const p = spawn('ip', ['netns', 'exec', ns, cmd, ...args], opts);
    killOnExit(p);
    this.children.add(p);
    p.once('exit', () => this.children.delete(p));
    return p;
  }

  /**
   * Kills every process this star started (SIGTERM, SIGKILL after graceMs) and any process left
   * inside its namespaces, then deletes the namespaces. Idempotent; never throws.
   */
  async destroy(graceMs = 2_000): Promise<void> {
    this.destroyed = true;
    const live = [...this.children].filter((p) => p.exitCode === null && p.signalCode === null);
    for (const p of live) p.kill('SIGTERM');
    await Promise.race([
      Promise.all(
        live.map((p) => new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once('exit', () => r())))),
      ),
      new Promise<void>((r) => setTimeout(r, graceMs).unref()),
    ]);
    for (const p of live) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    this.destroySync();
  }

  /** The synchronous part of destroy(): for exit and signal handlers. */
  destroySync(): void {
    this.destroyed = true;
    for (const p of this.children) {
      try {
        p.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const ns of [...this.created].reverse()) {
      // processes still inside one of our namespaces were started by this benchmark (or its children)
      try {
        for (const pid of ip(['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            /* gone */
          }
        }
      } catch {
        /* namespace already gone */
      }
      try {
        ip(['netns', 'del', ns]);
      } catch {
        /* already gone */
      }
    }
    this.created.length = 0;
  }
}
