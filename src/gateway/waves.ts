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
// The rule, per route: a decode step waits while steps of its route are in flight. When the
// last of them is back, the waiting steps go together: at once if every session of the last
// wave is waiting again, else `waitMs` after the ring emptied (a session whose client reads
// slowly is not waited for longer, and drops out of the next wave's count). So a step waits at
// most for its route's steps in flight plus waitMs, and a lone session never waits. Prompt
// steps are not held.

/** one route's gate */
class WaveGate {
  /** steps waiting to enter, by session */
  private readonly queued = new Map<string, () => void>();
  /** sessions of the last wave still open: a new wave waits (up to waitMs) for them */
  private expected = new Set<string>();
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly waitMs: number,
    private readonly stats: WaveStats,
  ) {}

  get idle(): boolean {
    return this.inFlight === 0 && this.queued.size === 0 && this.expected.size === 0;
  }

  enter(sessionId: string): Promise<void> {
    // a session has one decode step at a time (generate.ts); a second one goes behind nobody
    if (this.queued.has(sessionId)) return Promise.resolve(void this.inFlight++);
    return new Promise((resolve) => {
      this.queued.set(sessionId, resolve);
      this.check();
    });
  }

  leave(): void {
    this.inFlight--;
    this.check();
  }

  /** the session ended (or moved to another route): no wave waits for it */
  forget(sessionId: string): void {
    this.expected.delete(sessionId);
    this.check();
  }

  private check(): void {
    if (this.inFlight > 0 || this.queued.size === 0) return;
    for (const id of this.expected)
      if (!this.queued.has(id)) {
        this.timer ??= setTimeout(() => this.release(true), this.waitMs);
        return;
      }
    this.release(false);
  }

  private release(timedOut: boolean): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const wave = [...this.queued];
    this.queued.clear();
    this.expected = new Set(wave.map(([id]) => id));
    this.inFlight += wave.length;
    this.stats.waves++;
    this.stats.steps += wave.length;
    if (timedOut) this.stats.timedOut++;
    for (const [, go] of wave) go();
  }
}

export interface WaveStats {
  /** waves sent (steps / waves = mean wave) */
  waves: number;
  steps: number;
  /** waves sent after waitMs without every session of the last wave */
  timedOut: number;
}

/** The gateway's gates, one per route (its hops' peer ids in order) in use. */
export class Waves {
  private readonly gates = new Map<string, WaveGate>();
  /** the route each session's last decode step took */
  private readonly routeOf = new Map<string, string>();
  readonly stats: WaveStats = { waves: 0, steps: 0, timedOut: 0 };

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
    await gate.enter(sessionId);
    try {
      return await run();
    } finally {
      gate.leave();
      if (gate.idle) this.gates.delete(route);
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
