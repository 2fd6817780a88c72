// What one remote peer may make this node hold: sessions, reserved KV tokens, open inbound
// streams per protocol, the rate at which it opens streams, bytes buffered per stream and the
// idle lifetime of a stream. Built
// once at start-up (run.ts, from the `odsi node` flags) and shared by the node's handlers:
//   admit()/release()    a session's slot and KV reservation, counted per opening peer
//   guard()              wraps a protocol's stream handler: open inbound streams per peer, and
//                        stream opens per second (a token bucket per peer, all protocols)
//   channelOptions()     the byte and idle bounds of one inbound activation stream
// A peer over a limit gets a clear refusal (code `busy` for sessions/KV, `limit` for streams)
// while other peers keep being served. Limits scale with weight(peer) (default 1): the hook by
// which stake can raise or lower a peer's share later.
// (Not libp2p's stream middleware: in libp2p 3.3.11 every inbound stream appends its handler
// to the protocol's stored middleware list, so handlers would run once more per stream.)

import type { Connection, Stream, StreamHandler } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { ChannelOptions } from '../p2p/channel.js';
import { DTYPE_BYTES, MsgType, encodeMessage, type Message } from '../protocol/messages.js';

export interface PeerLimitsOptions {
  /** sessions one peer may hold open at a time */
  maxSessionsPerPeer: number;
  /** fraction (0, 1] of the node's KV budget one peer may hold reserved (its first session is always admitted when the node has room) */
  maxKvShare: number;
  /** open inbound streams one peer may hold per protocol */
  maxStreamsPerPeer: number;
  /** an inbound activation stream with no complete message for this long, and no live session, is closed */
  streamIdleMs: number;
  /** the most tokens one STEP may carry: an activation stream buffers at most this × hidden × 4 bytes per message */
  maxStepTokens: number;
  /** inbound streams one peer may open per second, all protocols together (a token bucket holding 4 s worth) */
  streamOpensPerSec: number;
  /** stake hook: a peer's limits are multiplied by weight(peer) (default 1 for everyone) */
  weight?: (peer: string) => number;
  log?: Logger;
}

export const DEFAULT_PEER_LIMITS: PeerLimitsOptions = {
  maxSessionsPerPeer: 128,
  maxKvShare: 0.25,
  maxStreamsPerPeer: 256,
  streamIdleMs: 30_000,
  // twice the gateway's prefill and replay chunk (64 tokens)
  maxStepTokens: 128,
  // a gateway opens one stream per session and hop, and one per audit
  streamOpensPerSec: 64,
};

/** no per-peer bounds at all (library users and unit tests that construct a NodeServer themselves) */
export const NO_PEER_LIMITS: PeerLimitsOptions = {
  maxSessionsPerPeer: Number.MAX_SAFE_INTEGER,
  maxKvShare: 1,
  maxStreamsPerPeer: Number.MAX_SAFE_INTEGER,
  streamIdleMs: 0,
  maxStepTokens: 0,
  streamOpensPerSec: Number.MAX_SAFE_INTEGER,
};

/** seconds of stream opens a peer may burst */
const OPEN_BURST_S = 4;
/** buckets kept before full ones (peers that stopped opening) are forgotten */
const MAX_IDLE_BUCKETS = 1024;

/** smallest per-message cap of an activation stream (OPEN headers and tiny models) */
const MIN_MESSAGE_BYTES = 64 * 1024;

export interface PeerLimitStats {
  /** sessions refused for the peer's session count */
  sessions: number;
  /** sessions refused for the peer's KV share */
  kv: number;
  /** inbound streams refused for the peer's stream count */
  streams: number;
  /** inbound streams refused for the peer's rate of opening them */
  opens: number;
}

interface Held {
  sessions: number;
  kvTokens: number;
}

export class PeerLimits {
  readonly stats: PeerLimitStats = { sessions: 0, kv: 0, streams: 0, opens: 0 };
  private readonly held = new Map<string, Held>();
  private readonly streams = new Map<string, number>();
  /** per peer: stream opens it may still make now, and when that was computed */
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  /** bucket count at which full buckets are next swept (doubles with the live ones: amortised O(1)) */
  private sweepAt = MAX_IDLE_BUCKETS;
  readonly o: PeerLimitsOptions;

  constructor(o: Partial<PeerLimitsOptions> = {}) {
    this.o = { ...DEFAULT_PEER_LIMITS, ...o };
    if (!(this.o.maxKvShare > 0 && this.o.maxKvShare <= 1)) throw new Error(`maxKvShare must be in (0, 1], got ${this.o.maxKvShare}`);
  }

  private weight(peer: string): number {
    const w = this.o.weight?.(peer) ?? 1;
    return Number.isFinite(w) && w > 0 ? w : 0;
  }

  /**
   * A session of `kvTokens` for `peer`: undefined when admitted (counted until release()),
   * else why not. The node's own budget is checked separately (sessions.ts).
   */
  admit(peer: string, kvTokens: number, kvBudgetTokens: number): string | undefined {
    const why = this.wouldRefuse(peer, kvTokens, kvBudgetTokens);
    if (why) return why;
    const h = this.held.get(peer) ?? { sessions: 0, kvTokens: 0 };
    this.held.set(peer, { sessions: h.sessions + 1, kvTokens: h.kvTokens + kvTokens });
    return undefined;
  }

  /** Why admit() would refuse `kvTokens` more for `peer` (undefined: it would not); counts nothing. */
  wouldRefuse(peer: string, kvTokens: number, kvBudgetTokens: number): string | undefined {
    const h = this.held.get(peer) ?? { sessions: 0, kvTokens: 0 };
    const w = this.weight(peer);
    const maxSessions = Math.floor(this.o.maxSessionsPerPeer * w);
    if (h.sessions + 1 > maxSessions) {
      this.stats.sessions++;
      return `per-peer limit: peer ${peer} holds ${h.sessions} sessions, at most ${maxSessions} per peer`;
    }
    const maxKv = Math.floor(kvBudgetTokens * Math.min(1, this.o.maxKvShare * w));
    // a share of the whole budget is the node's own check (sessions.ts): its refusal says so
    if (maxKv < kvBudgetTokens && h.sessions > 0 && h.kvTokens + kvTokens > maxKv) {
      this.stats.kv++;
      return `per-peer limit: peer ${peer} holds ${h.kvTokens} KV tokens, session asks for ${kvTokens}, at most ${maxKv} per peer`;
    }
    return undefined;
  }

  /** The end of a session admit() counted. */
  release(peer: string, kvTokens: number): void {
    const h = this.held.get(peer);
    if (!h) return;
    if (h.sessions <= 1) this.held.delete(peer);
    else this.held.set(peer, { sessions: h.sessions - 1, kvTokens: Math.max(0, h.kvTokens - kvTokens) });
  }

  /** sessions and KV tokens a peer holds now */
  heldBy(peer: string): Held {
    return this.held.get(peer) ?? { sessions: 0, kvTokens: 0 };
  }

  /** `handler` for `protocol`, behind a cap on open inbound streams per remote peer. */
  guard(self: string, protocol: string, handler: StreamHandler): StreamHandler {
    return (stream: Stream, conn: Connection) => {
      const peer = conn.remotePeer.toString();
      const key = `${peer} ${protocol}`;
      const rate = this.o.streamOpensPerSec * this.weight(peer);
      if (!this.takeOpen(peer, rate, performance.now())) {
        this.stats.opens++;
        return this.refuseStream(self, peer, protocol, `per-peer limit: ${peer} opens streams faster than ${rate} per second`, stream);
      }
      const open = this.streams.get(key) ?? 0;
      const max = Math.floor(this.o.maxStreamsPerPeer * this.weight(peer));
      if (open >= max) {
        this.stats.streams++;
        return this.refuseStream(self, peer, protocol, `per-peer limit: ${open} open ${protocol} streams from ${peer}, at most ${max}`, stream);
      }
      this.streams.set(key, open + 1);
      stream.addEventListener('close', () => {
        const n = (this.streams.get(key) ?? 1) - 1;
        if (n <= 0) this.streams.delete(key);
        else this.streams.set(key, n);
      });
      return handler(stream, conn);
    };
  }

  /** One stream open from `peer` out of its token bucket (refilled at `rate` per second, holding OPEN_BURST_S seconds' worth). */
  private takeOpen(peer: string, rate: number, now: number): boolean {
    if (!(rate < Number.MAX_SAFE_INTEGER)) return true;
    const cap = Math.max(1, rate * OPEN_BURST_S);
    const b = this.buckets.get(peer) ?? { tokens: cap, at: now };
    b.tokens = Math.min(cap, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    this.buckets.set(peer, b);
    if (this.buckets.size > this.sweepAt) {
      this.forgetFullBuckets(now);
      this.sweepAt = Math.max(MAX_IDLE_BUCKETS, 2 * this.buckets.size);
    }
    return true;
  }

  /** A full bucket is the same as none: drop those so the map holds only recently active peers. */
  private forgetFullBuckets(now: number): void {
    for (const [peer, b] of this.buckets) {
      const rate = this.o.streamOpensPerSec * this.weight(peer);
      if (b.tokens + ((now - b.at) / 1000) * rate >= rate * OPEN_BURST_S) this.buckets.delete(peer);
    }
  }

  /** Tells the peer why (an ERROR with code `limit`), then closes the stream. */
  private async refuseStream(self: string, peer: string, protocol: string, reason: string, stream: Stream): Promise<void> {
    this.o.log?.info({ peer, protocol, reason }, 'stream refused: per-peer limit');
    const refusal = { type: MsgType.ERROR, header: { code: 'limit', reason, peerId: self } } as Message;
    try {
      for (const f of encodeMessage(refusal)) stream.send(f);
      await stream.close({ signal: AbortSignal.timeout(1000) });
    } catch {
      stream.abort(new Error(reason));
    }
  }

  /** Bounds of one inbound activation stream of a node with this hidden size; keepAlive: it carries a live session. */
  channelOptions(hidden: number, keepAlive: () => boolean): ChannelOptions {
    const opts: ChannelOptions = {};
    if (this.o.maxStepTokens > 0) opts.maxMessageBytes = Math.max(MIN_MESSAGE_BYTES, this.o.maxStepTokens * hidden * DTYPE_BYTES.f32);
    if (this.o.streamIdleMs > 0) {
      opts.idleMs = this.o.streamIdleMs;
      opts.keepAlive = keepAlive;
    }
    return opts;
  }
}
