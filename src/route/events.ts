// What fault handling records: each detected failure and each re-route, with how the new
// route got its state back. The gateway keeps a bounded log; `odsi demo --json` lists it.

export type RecoveryMethod = 'replay' | 'transfer';

export interface RouteHopRef {
  peerId: string;
  start: number;
  end: number;
}

/** A step (or an open) failed, or a hop kept missing its deadline. */
export interface FailureEvent {
  type: 'failure';
  at: number; // unix ms, diagnosis done
  /** unix ms when the failure was noticed (error, lost result, or slack verdict) */
  detectedAt: number;
  sessionId: string;
  /** position of the step that failed (tokens already processed before it) */
  pos: number;
  /** RouteError code, or 'slow' for a hop that kept missing deadlines */
  code: string;
  message: string;
  /** the peer the error named, if any */
  reportedPeer?: string;
  /** peers found at fault (ping / probe / error reply / disputes); banned unless only busy */
  culprits: string[];
  /** how culprits were found: 'error_reply' | 'ping' | 'probe' | 'slack' | 'dispute' | 'stale_spare' | 'unknown' */
  diagnosis: string;
  /**
   * diagnosis 'dispute': the hop that signed the accusation and the peer it named, in that
   * order; both are avoided, neither is found at fault on this alone (routing/disputes.ts)
   */
  disputed?: [accuser: string, accused: string];
  /**
   * the route did not come up (its OPEN was refused, or the step sent right behind it failed
   * before OPENED): its peers were excluded as this event says and the next route was tried; no
   * re-route event of its own follows
   */
  open?: true;
  route: RouteHopRef[];
}

/** The session continued on a new route. */
export interface RerouteEvent {
  type: 'reroute';
  at: number;
  sessionId: string;
  /** session id on the new route's nodes */
  routeSessionId: string;
  from: RouteHopRef[];
  to: RouteHopRef[];
  method: RecoveryMethod;
  /** tokens whose KV state the new route rebuilt */
  replayedTokens: number;
  /** failure detected → new route ready to take the failed step, ms */
  recoveryMs: number;
  /** of which: diagnosing, opening the new route, replaying */
  diagnoseMs: number;
  /** until the new route came up (OPENED), failed attempts included; with eagerOpen the replay
   *  started behind the OPEN, and only its part after OPENED counts as replayMs */
  openMs: number;
  replayMs: number;
}

/** Recovery gave up: the error that reached the caller. */
export interface GiveUpEvent {
  type: 'gave_up';
  at: number;
  sessionId: string;
  pos: number;
  message: string;
}

export type FaultEvent = FailureEvent | RerouteEvent | GiveUpEvent;

/** Bounded in-memory log of recent fault events (newest last). */
export class FaultLog {
  private items: FaultEvent[] = [];
  constructor(private readonly capacity = 1000) {}

  push(e: FaultEvent): void {
    this.items.push(e);
    if (this.items.length > this.capacity) this.items.splice(0, this.items.length - this.capacity);
  }

  /** events, optionally only those since a unix ms time */
  events(since = 0): FaultEvent[] {
    return this.items.filter((e) => e.at >= since);
  }

  counts(): { failures: number; reroutes: number; gaveUp: number } {
    let failures = 0;
    let reroutes = 0;
    let gaveUp = 0;
    for (const e of this.items) {
      if (e.type === 'failure') failures++;
      else if (e.type === 'reroute') reroutes++;
      else gaveUp++;
    }
    return { failures, reroutes, gaveUp };
  }
}
