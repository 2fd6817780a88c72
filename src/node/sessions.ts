// The node's session table: one entry per open route session, with its streams, the KV tokens
// it reserved against the node's memory budget, its idle timer and its teardown. KV caches
// themselves live in the stage, keyed by session id; teardown frees them.

import type { Logger } from 'pino';
import type { Stage } from '../engine/types.js';
import type { Channel } from '../p2p/channel.js';
import { MsgType, type OpenHeader } from '../protocol/messages.js';
import { ReceiptInbox } from './receipt-inbox.js';

export interface Session {
  id: string;
  /** the gateway that signed the OPEN (its reply.peerId): only its route steps, resumes or hands over this session */
  owner: string;
  open: OpenHeader;
  upstream: Channel;
  downstream?: Channel;
  isLast: boolean;
  /** KV tokens reserved for this session */
  reserved: number;
  /** the session's messages run one after another on this chain */
  chain: Promise<void>;
  /**
   * accountability: the receipt work (wait for the upstream chain, verify, sign, send RECEIPTS)
   * of the steps whose output went on and whose receipt is not out yet, oldest first; each runs
   * after the one before it and settles (never rejects) when done
   */
  stamping: Promise<void>[];
  /** the upstream hop's RECEIPTS, by step */
  inbox: ReceiptInbox;
  /** STEP/TRUNCATE messages on the chain not yet finished (at most MAX_QUEUED_PER_SESSION) */
  queued: number;
  /** ERRORs the next hop sent back so far (at most MAX_RELAYED_ERRORS are looked at: error-relay.ts) */
  relayedErrors: number;
  idle?: NodeJS.Timeout;
  /** performance.now() of the session's last message (the idle timer re-arms itself from it: no timer work per step) */
  lastActive: number;
  /** half the measured RTT to the next hop, subtracted from the budget passed on */
  linkMs: number;
  closed: boolean;
  steps: number;
  /** the node is leaving; steps are answered with a 'draining' error */
  draining?: boolean;
  /** where this session's KV cache went when the node left */
  handedTo?: { peerId: string; addrs: string[] };
}

/**
 * STEP and TRUNCATE messages of one session that may wait on its chain: a gateway sends the next
 * step after the last one's result, so a few cover any honest pipelining; a peer sending steps
 * faster than they run gets ERROR `limit` for the excess instead of a queue without bound.
 */
export const MAX_QUEUED_PER_SESSION = 8;

export interface SessionTableOptions {
  stage: Stage;
  /** KV tokens this node may hold across all sessions (the stage's own capacity, if less, bounds it too) */
  kvBudgetTokens: number;
  /** free a session after this long without a step */
  idleTimeoutMs: number;
  /** called once per session when it is torn down (after it was created) */
  onTeardown?(s: Session): void;
  log?: Logger;
}

export class SessionTable {
  private readonly sessions = new Map<string, Session>();
  private reservedTokens = 0;
  /** KV tokens: the node's budget, or what the stage can hold if less */
  readonly kvBudgetTokens: number;
  /** sessions at once: what the stage can hold (unbounded when it does not say) */
  readonly maxSessions: number;
  /** the stage allocates caches in steps of this many positions; reservations count rounded up to it */
  private readonly chunk: number;

  constructor(private readonly o: SessionTableOptions) {
    const cap = o.stage.capacity;
    this.kvBudgetTokens = Math.min(o.kvBudgetTokens, cap?.kvTokens ?? Infinity);
    this.maxSessions = cap?.sessions ?? Infinity;
    this.chunk = Math.max(1, cap?.chunkTokens ?? 1);
  }

  /** KV tokens a reservation of `tokens` takes of the budget (and of its owner's share): as the stage allocates them */
  allocated(tokens: number): number {
    return Math.ceil(tokens / this.chunk) * this.chunk;
  }

  get size(): number {
    return this.sessions.size;
  }
  get freeKvTokens(): number {
    return Math.max(0, this.kvBudgetTokens - this.reservedTokens);
  }

  /** why a new session reserving `reserved` KV tokens cannot be created now (undefined: it can) */
  noRoom(reserved: number): string | undefined {
    if (this.sessions.size >= this.maxSessions) return `the stage holds at most ${this.maxSessions} sessions at once`;
    const held = this.allocated(reserved);
    if (this.reservedTokens + held > this.kvBudgetTokens) {
      const asks = held === reserved ? `${reserved}` : `${reserved} (${held} as the engine allocates)`;
      return `KV memory full: ${this.freeKvTokens} of ${this.kvBudgetTokens} tokens free, session asks for ${asks}`;
    }
    return undefined;
  }

  get(id: string): Session | undefined {
    return this.sessions.get(id);
  }
  has(id: string): boolean {
    return this.sessions.has(id);
  }
  live(): Session[] {
    return [...this.sessions.values()].filter((s) => !s.closed);
  }

  /** A new session reserving `reserved` KV tokens; undefined when the budget has no room. */
  create(open: OpenHeader, upstream: Channel, reserved: number): Session | undefined {
    if (this.noRoom(reserved)) return undefined;
    this.reservedTokens += this.allocated(reserved);
    return {
      id: open.sessionId,
      owner: open.reply.peerId,
      open,
      upstream,
      isLast: open.hop === open.route.length - 1,
      reserved,
      chain: Promise.resolve(),
      stamping: [],
      inbox: new ReceiptInbox(),
      queued: 0,
      relayedErrors: 0,
      lastActive: performance.now(),
      linkMs: 0,
      closed: false,
      steps: 0,
    };
  }

  /** Reserves KV tokens outside any session (an imported cache); false when the budget has no room. */
  reserve(tokens: number): boolean {
    if (this.reservedTokens + this.allocated(tokens) > this.kvBudgetTokens) return false;
    this.reservedTokens += this.allocated(tokens);
    return true;
  }

  /** Gives back a reserve()d amount. */
  release(tokens: number): void {
    this.reservedTokens -= this.allocated(tokens);
  }

  /** Enters a created session into the table and starts its idle timer. */
  add(s: Session): void {
    this.sessions.set(s.id, s);
    this.touch(s);
  }

  /** The session is in use: its idle time starts again (a timestamp; the timer is armed once and re-arms itself). */
  touch(s: Session): void {
    s.lastActive = performance.now();
    if (s.idle) return;
    // the gateway may ask for a shorter idle timeout, never a longer one than the node allows
    const ms = Math.min(s.open.idleTimeoutMs ?? this.o.idleTimeoutMs, this.o.idleTimeoutMs);
    const check = (): void => {
      const left = ms - (performance.now() - s.lastActive);
      if (left > 0) {
        s.idle = setTimeout(check, left);
        s.idle.unref?.();
        return;
      }
      void s.upstream.sendError('timeout', `session idle for ${ms} ms; freed`, { sessionId: s.id });
      this.teardown(s, 'idle timeout', true);
    };
    s.idle = setTimeout(check, ms);
    s.idle.unref?.();
  }

  /** Closes a session: frees its reservation and KV cache, closes its streams (CLOSE downstream first when asked). */
  teardown(s: Session, why: string, closeDownstream: boolean): void {
    if (s.closed) return;
    s.closed = true;
    s.inbox.close();
    if (s.idle) clearTimeout(s.idle);
    if (this.sessions.get(s.id) === s) this.sessions.delete(s.id);
    this.reservedTokens -= this.allocated(s.reserved);
    this.o.onTeardown?.(s);
    try {
      this.o.stage.closeSession(s.id);
    } catch {
      /* nothing cached */
    }
    if (s.downstream?.isOpen && closeDownstream && !s.isLast) {
      void s.downstream.send({ type: MsgType.CLOSE, header: { sessionId: s.id, reason: why } }).catch(() => {});
    }
    void s.downstream?.close();
    void s.upstream.close();
    this.o.log?.info({ session: s.id, why, steps: s.steps }, 'session closed');
  }

  /** Tears down every session (the node is stopping). */
  closeAll(why: string): void {
    for (const s of [...this.sessions.values()]) this.teardown(s, why, true);
  }
}
