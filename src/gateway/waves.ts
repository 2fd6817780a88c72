// Waves: the decode steps of the sessions that share a route enter it together, one wave per
// round (GatewayOptions.waves).
//
// Nodes batch the steps that reach them together (node/scheduler.ts). Left alone, the sessions
// on a route spread round its ring (the gateway's head and embedding, then each hop) in about as
// many waves as the ring has stages, and each node runs one small batch per wave. Where the
// stages share cores (the demo: every node on one machine), a node's batch of 14 sessions costs
// little more than one of 4, so one large wave costs far less CPU per token than four small
// ones (bench/README, session 15). Where every node has its own machine the waves keep every
// stage busy instead, so gateways leave this off unless told.
//
// The rule, per route: a decode step waits while the route's last wave is in flight. When the
// last of its steps is back, the waiting steps go together: at once if every session of the
// last wave is waiting again, else `waitMs` after the route emptied (a session whose client
// reads slowly is not waited for longer, and drops out of the next wave's count). A wave still
// in flight OVERDUE_ROUNDS times as long as the last whole round took (plus waitMs) no longer
// holds the next one back: a step stuck in a re-route does not stall its neighbours. A lone
// session never waits, and prompt steps are not held.

import { performance } from 'node:perf_hooks';

/** a wave still in flight this many times as long as the last round took no longer holds the next one back */
export const OVERDUE_ROUNDS = 3;

/** steps sent together; `left` of them are still in flight */
interface Wave {
  left: number;
  at: number;
}

/** one route's gate */
class WaveGate {
  /** steps waiting to enter, by session */
  private readonly queued = new Map<string, () => void>();
  /** sessions of the last wave still open: a new wave waits (up to waitMs) for them */
  private expected = new Set<string>();
  /** the wave in the route, until its last step is back (or it is overdue) */
  private wave: Wave | undefined;
  /** when the route last emptied */
  private emptiedAt = 0;
  /** how long the last wave took, sent to its last step back */
  private roundMs = Infinity;
  private timer: NodeJS.Timeout | undefined;
  private timerDue = 0;

  constructor(
    private readonly waitMs: number,
    private readonly stats: WaveStats,
  ) {}

  get idle(): boolean {
    return this.wave === undefined && this.queued.size === 0 && this.expected.size === 0;
  }

  /** resolves with the wave the step goes in, once it goes */
  enter(sessionId: string): Promise<Wave> {
    return new Promise((resolve) => {
      // a session has one decode step at a time (generate.ts): a second one would replace the first's turn
      const first = this.queued.get(sessionId);
      this.queued.set(sessionId, () => {
        first?.();
        resolve(this.wave!);
      });
      this.check();
    });
  }

  leave(wave: Wave): void {
    wave.left--;
    if (wave === this.wave && wave.left === 0) {
      const now = performance.now();
      this.roundMs = now - wave.at;
      this.emptiedAt = now;
      this.wave = undefined;
    }
    this.check();
  }

  /** the session ended (or moved to another route): no wave waits for it */
  forget(sessionId: string): void {
    this.expected.delete(sessionId);
    this.check();
  }

  private check(): void {
    if (this.queued.size === 0) return this.arm(0);
    const now = performance.now();
    if (this.wave) {
      const due = this.wave.at + OVERDUE_ROUNDS * this.roundMs + this.waitMs;
      if (now < due) return this.arm(due);
      this.stats.overdue++;
      return this.release();
    }
    let all = true;
    for (const id of this.expected) if (!this.queued.has(id)) all = false;
    if (all) return this.release();
    const due = this.emptiedAt + this.waitMs;
    if (now < due) return this.arm(due);
    this.stats.timedOut++;
    this.release();
  }

  /** one timer, for the next moment check() may decide otherwise (0: none) */
  private arm(due: number): void {
    if (due === this.timerDue) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDue = due;
    if (due === 0 || due === Infinity) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerDue = 0;
      this.check();
    }, due - performance.now());
  }

  private release(): void {
    this.arm(0);
    const go = [...this.queued];
    this.queued.clear();
    this.expected = new Set(go.map(([id]) => id));
    this.wave = { left: go.length, at: performance.now() };
    this.stats.waves++;
    this.stats.steps += go.length;
    for (const [, f] of go) f();
  }
}

export interface WaveStats {
  /** waves sent (steps / waves = mean wave) */
  waves: number;
  steps: number;
  /** waves sent after waitMs without every session of the last wave */
  timedOut: number;
  /** waves sent while the one before was still in flight, overdue */
  overdue: number;
}

/** The gateway's gates, one per route (its hops' peer ids in order) in use. */
export class Waves {
  private readonly gates = new Map<string, WaveGate>();
  /** the route each session's last decode step took */
  private readonly routeOf = new Map<string, string>();
  readonly stats: WaveStats = { waves: 0, steps: 0, timedOut: 0, overdue: 0 };

  constructor(
    /** longest wait for the last wave's stragglers once the route is empty (ms) */
    readonly waitMs: number,
  ) {}

  /** Runs one decode step of `sessionId` on the route `route` once its wave goes. */
  async step<T>(sessionId: string, route: string, run: () => Promise<T>): Promise<T> {
    const before = this.routeOf.get(sessionId);
    if (before !== route) {
      if (before !== undefined) this.forgetOn(before, sessionId); // re-routed
      this.routeOf.set(sessionId, route);
    }
    let gate = this.gates.get(route);
    if (!gate) this.gates.set(route, (gate = new WaveGate(this.waitMs, this.stats)));
    const wave = await gate.enter(sessionId);
    try {
      return await run();
    } finally {
      gate.leave(wave);
      // (a step of an overdue wave may come back after its gate was dropped and another made)
      if (gate.idle && this.gates.get(route) === gate) this.gates.delete(route);
    }
  }

  /** The session ended: no wave waits for it. */
  close(sessionId: string): void {
    const route = this.routeOf.get(sessionId);
    if (route === undefined) return;
    this.routeOf.delete(sessionId);
    this.forgetOn(route, sessionId);
  }

  /** routes with a gate now (bounded by the sessions open) */
  get routes(): number {
    return this.gates.size;
  }

  private forgetOn(route: string, sessionId: string): void {
    const gate = this.gates.get(route);
    if (!gate) return;
    gate.forget(sessionId);
    if (gate.idle) this.gates.delete(route);
  }
}
