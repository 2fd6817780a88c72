// The execution side of the activation protocol: a node serving one contiguous layer range.
// Each session arrives as one long-lived inbound stream (OPEN first). The node opens one
// long-lived stream onward — to the next hop, or (last hop) a result stream to the gateway —
// runs every STEP through its stage and pushes the output on. KV caches live in the stage,
// keyed by session id (path affinity); sessions reserve KV tokens against a memory budget
// and are freed on CLOSE, when either stream goes away, or after an idle timeout.

import { peerIdFromString } from '@libp2p/peer-id';
import type { Stream, Connection } from '@libp2p/interface';
import type { Logger } from 'pino';
import { EngineError, type Stage } from '../engine/types.js';
import { Channel } from '../net/channel.js';
import type { OdsiHost } from '../net/host.js';
import {
  ACT_PROTOCOL,
  MAX_SESSION_STREAMS,
  MessageError,
  MsgType,
  RESULT_PROTOCOL,
  decodeTensor,
  encodeTensor,
  type ErrorCode,
  type Message,
  type OpenHeader,
  type StepHeader,
} from '../net/messages.js';
import { DEFAULT_MAX_TOKENS, type HopTiming } from '../net/route.js';
import { PerfMeter } from './perf.js';
import type { FaultInjector } from '../fault/inject.js'; // fault-tolerance: test-only fault hooks
import { checkCustody, stampStep } from '../control/stamp.js'; // accountability: receipts + custody checks

export interface NodeServerOptions {
  host: OdsiHost;
  stage: Stage;
  modelId: string;
  perf: PerfMeter;
  /** KV tokens this node may hold across all sessions */
  kvBudgetTokens: number;
  /** free a session after this long without a step (default 5 min) */
  idleTimeoutMs?: number;
  log?: Logger;
  /** fault-tolerance: injected faults (tests/demos only, ODSI_ALLOW_FAULTS=1) */
  faults?: FaultInjector;
}

interface Session {
  id: string;
  open: OpenHeader;
  upstream: Channel;
  downstream?: Channel;
  isLast: boolean;
  reserved: number;
  chain: Promise<void>;
  idle?: NodeJS.Timeout;
  /** half the measured RTT to the next hop, subtracted from the budget passed on */
  linkMs: number;
  closed: boolean;
  steps: number;
}

export class NodeServer {
  private sessions = new Map<string, Session>();
  private reservedTokens = 0;
  private computeLock: Promise<void> = Promise.resolve();
  private readonly self: string;
  private readonly idleTimeoutMs: number;
  /** counters for logs/metrics */
  stats = { opened: 0, steps: 0, errors: 0, refused: 0 };

  constructor(private readonly o: NodeServerOptions) {
    this.self = o.host.peerId;
    this.idleTimeoutMs = o.idleTimeoutMs ?? 5 * 60_000;
  }

  get load(): number {
    return this.sessions.size;
  }
  get freeKvTokens(): number {
    return Math.max(0, this.o.kvBudgetTokens - this.reservedTokens);
  }

  async start(): Promise<void> {
    await this.o.host.libp2p.handle(ACT_PROTOCOL, (stream, conn) => this.onStream(stream, conn), {
      maxInboundStreams: MAX_SESSION_STREAMS,
      maxOutboundStreams: MAX_SESSION_STREAMS,
    });
  }

  async stop(): Promise<void> {
    await this.o.host.libp2p.unhandle(ACT_PROTOCOL).catch(() => {});
    for (const s of [...this.sessions.values()]) this.teardown(s, 'node stopping', true);
  }

  private onStream(stream: Stream, conn: Connection): void {
    const remote = conn.remotePeer.toString();
    let session: Session | undefined;
    const ch: Channel = new Channel(stream, remote, this.self, {
      onMessage: (m) => {
        if (m.type === MsgType.OPEN) {
          if (session && !session.closed) {
            void ch.sendError('bad_message', 'this stream already carries a session', { sessionId: m.header.sessionId });
            return;
          }
          void this.onOpen(ch, m.header).then((s) => (session = s));
          return;
        }
        const sid = (m.header as { sessionId?: string }).sessionId;
        const rid = (m.header as { requestId?: number }).requestId;
        if (!session || session.closed || sid !== session.id) {
          this.stats.errors++;
          void ch.sendError('unknown_session', `no open session "${sid ?? ''}" on this stream`, { sessionId: sid, requestId: rid });
          return;
        }
        this.onSessionMessage(session, m);
      },
      onMessageError: (e: MessageError) => {
        this.stats.errors++;
        this.o.log?.warn({ remote, err: e.message }, 'bad message');
        if (e.msgType === MsgType.ERROR) return; // never answer an error with an error
        void ch.sendError(e.code, e.message, { sessionId: e.sessionId, requestId: e.requestId });
      },
      onClose: (err) => {
        if (err) this.o.log?.debug({ remote, err: err.message }, 'upstream stream closed');
        if (session && !session.closed) this.teardown(session, 'upstream closed', true);
      },
    });
  }

  private async onOpen(up: Channel, h: OpenHeader): Promise<Session | undefined> {
    const refuse = (code: ErrorCode, reason: string) => {
      this.stats.refused++;
      this.o.log?.info({ session: h.sessionId, code, reason }, 'refused session');
      void up.sendError(code, reason, { sessionId: h.sessionId, hop: h.hop });
      return undefined;
    };
    const me = h.route[h.hop];
    const r = this.o.stage.range;
    if (h.modelId !== this.o.modelId) return refuse('wrong_model', `this node serves model ${this.o.modelId}, not ${h.modelId}`);
    if (!me || me.peerId !== this.self) return refuse('bad_message', `route[${h.hop}] is not this node (${this.self})`);
    if (me.start !== r.start || me.end !== r.end) return refuse('wrong_layers', `this node serves layers ${r.start}:${r.end}, route asks for ${me.start}:${me.end}`);
    if (h.hidden !== undefined && h.hidden !== this.o.stage.config.dim) return refuse('wrong_model', `hidden size ${h.hidden} ≠ ${this.o.stage.config.dim}`);
    const old = this.sessions.get(h.sessionId);
    if (old) this.teardown(old, 'session re-opened', true); // failover: the new upstream wins
    const ctx = this.o.stage.config.contextLength;
    const want = Math.min(h.maxTokens ?? Math.min(ctx, DEFAULT_MAX_TOKENS), ctx);
    if (this.reservedTokens + want > this.o.kvBudgetTokens) {
      return refuse('busy', `KV memory full: ${this.freeKvTokens} of ${this.o.kvBudgetTokens} tokens free, session asks for ${want}`);
    }
    const s: Session = {
      id: h.sessionId,
      open: h,
      upstream: up,
      isLast: h.hop === h.route.length - 1,
      reserved: want,
      chain: Promise.resolve(),
      linkMs: 0,
      closed: false,
      steps: 0,
    };
    this.reservedTokens += want;
    this.sessions.set(s.id, s);
    this.touch(s);
    try {
      if (s.isLast) {
        const ch = await this.connect(h.reply.peerId, h.reply.addrs, RESULT_PROTOCOL, s);
        s.downstream = ch;
        await ch.send({ type: MsgType.OPENED, header: { sessionId: s.id, peers: h.route.map((x) => x.peerId) } });
      } else {
        const next = h.route[h.hop + 1]!;
        const ch = await this.connect(next.peerId, next.addrs, ACT_PROTOCOL, s);
        s.downstream = ch;
        await ch.send({ type: MsgType.OPEN, header: { ...h, hop: h.hop + 1 } });
        // measured once per session: the budget passed on accounts for the link to the next hop
        void this.o.host.ping(next.peerId).then((rtt) => (s.linkMs = rtt / 2), () => {});
      }
    } catch (e) {
      const target = s.isLast ? h.reply.peerId : h.route[h.hop + 1]!.peerId;
      void up.sendError('unreachable', `hop ${this.self} cannot reach ${target}: ${(e as Error).message}`, { sessionId: s.id, peerId: target, hop: s.isLast ? h.route.length : h.hop + 1 });
      this.teardown(s, 'downstream unreachable', false);
      return undefined;
    }
    if (s.closed) return undefined;
    this.stats.opened++;
    this.o.log?.info({ session: s.id, hop: h.hop, last: s.isLast }, 'session open');
    return s;
  }

  private async connect(peerId: string, addrs: string[], protocol: string, s: Session): Promise<Channel> {
    const signal = AbortSignal.timeout(10_000);
    await this.o.host.dial(peerId, addrs, signal);
    const stream = await this.o.host.libp2p.dialProtocol(peerIdFromString(peerId), protocol, { signal, maxOutboundStreams: MAX_SESSION_STREAMS });
    return new Channel(stream, peerId, this.self, {
      // errors (and anything else) coming back from downstream are relayed upstream unchanged
      onMessage: (m) => {
        if (m.type === MsgType.ERROR) void s.upstream.send(m).catch(() => {});
      },
      onClose: (err) => {
        if (s.closed) return;
        void s.upstream.sendError('unreachable', `stream from ${this.self} to ${peerId} closed${err ? `: ${err.message}` : ''}`, { sessionId: s.id, peerId });
        this.teardown(s, 'downstream closed', false);
      },
    });
  }

  private onSessionMessage(s: Session, m: Message): void {
    this.touch(s);
    switch (m.type) {
      case MsgType.STEP: {
        const recvAt = performance.now();
        s.chain = s.chain.then(() => this.runStep(s, m.header, m.payload, recvAt));
        return;
      }
      case MsgType.TRUNCATE: {
        const pos = m.header.pos;
        s.chain = s.chain.then(async () => {
          // the stage truncates on the next forward at pos; forward the hint downstream
          if (!s.isLast) await s.downstream?.send(m).catch(() => {});
          void pos;
        });
        return;
      }
      case MsgType.CLOSE:
        s.chain = s.chain.then(() => this.teardown(s, m.header.reason ?? 'closed by upstream', true));
        return;
      default:
        void s.upstream.sendError('bad_message', `unexpected ${MsgType[m.type]} on a session stream`, { sessionId: s.id });
    }
  }

  private async runStep(s: Session, h: StepHeader, payload: Uint8Array, recvAt: number): Promise<void> {
    if (s.closed) return;
    // fault-tolerance: injected crash/stall/delay (a 'drop' step is never answered)
    const faultCtx = { sessionId: s.id, step: h.step, pos: h.pos, nTokens: h.nTokens };
    if (this.o.faults && (await this.o.faults.beforeStep(faultCtx)) === 'drop') return;
    const stage = this.o.stage;
    const dim = stage.config.dim;
    const fail = (code: ErrorCode, reason: string) => {
      this.stats.errors++;
      void s.upstream.sendError(code, reason, { sessionId: s.id, requestId: h.requestId, hop: s.open.hop });
    };
    if (h.shape[0] !== h.nTokens || h.shape[1] !== dim) return fail('bad_message', `shape [${h.shape.join(',')}] ≠ [${h.nTokens},${dim}]`);
    if (h.pos + h.nTokens > s.reserved) return fail('busy', `session reserved ${s.reserved} KV tokens, step needs ${h.pos + h.nTokens}`);
    let hidden: Float32Array;
    try {
      hidden = decodeTensor(payload, h.dtype, h.nTokens * dim);
    } catch (e) {
      return fail('bad_message', (e as Error).message);
    }
    // accountability: the upstream hop's signed receipt must cover exactly these bytes
    const custody = checkCustody(this.o.host, s.open, h, payload, hidden);
    if (custody) {
      this.stats.errors++;
      void s.upstream.sendError(custody.code, custody.reason, { sessionId: s.id, requestId: h.requestId, peerId: custody.peerId, hop: s.open.hop });
      return;
    }
    // one forward at a time per node: honest timings, and the engine is CPU-bound anyway
    const prev = this.computeLock;
    let release!: () => void;
    this.computeLock = new Promise<void>((r) => (release = r));
    await prev;
    let out: { hidden?: Float32Array; computeMs: number };
    const startAt = performance.now();
    const queueMs = startAt - recvAt;
    try {
      if (h.budgetMs !== undefined) {
        const expected = this.o.perf.expectedMs(h.nTokens);
        if (h.budgetMs - queueMs - s.linkMs < expected) {
          return fail('deadline', `remaining budget ${(h.budgetMs - queueMs).toFixed(1)} ms < expected ${expected.toFixed(1)} ms on ${this.self}`);
        }
      }
      try {
        out = await stage.forward({ sessionId: s.id, pos: h.pos, nTokens: h.nTokens, hidden });
      } catch (e) {
        const code: ErrorCode = e instanceof EngineError ? (e.code === 'capacity' ? 'busy' : e.code === 'internal' ? 'engine' : 'bad_message') : 'engine';
        return fail(code, (e as Error).message);
      }
    } finally {
      release();
    }
    const computeMs = out.computeMs ?? performance.now() - startAt;
    this.o.perf.record(h.nTokens, computeMs);
    if (!out.hidden) return fail('engine', 'stage returned no hidden states');
    if (this.o.faults) out.hidden = this.o.faults.transformOutput(out.hidden, faultCtx); // fault-tolerance: output hook
    const t = performance.now();
    const bytes = encodeTensor(out.hidden, h.dtype);
    const sendMs = performance.now() - t;
    const spent = performance.now() - recvAt;
    const timing: HopTiming = {
      peerId: this.self,
      start: stage.range.start,
      end: stage.range.end,
      queueMs: round(queueMs),
      computeMs: round(computeMs),
      sendMs: round(sendMs),
      budgetInMs: h.budgetMs !== undefined ? round(h.budgetMs) : -1,
      slackMs: h.budgetMs !== undefined ? round(h.budgetMs - spent - s.linkMs) : -1,
    };
    const header: StepHeader = { ...h, timeline: [...h.timeline, timing] };
    // accountability: sign this hop's receipt (input as received, output as sent) and pass the chain on
    stampStep(this.o.host, { open: s.open, header, input: payload, output: bytes, range: stage.range, profile: stage.profile, modelId: this.o.modelId, timing, faults: this.o.faults });
    if (h.budgetMs !== undefined) header.budgetMs = timing.slackMs;
    s.steps++;
    this.stats.steps++;
    try {
      await s.downstream!.send({ type: s.isLast ? MsgType.RESULT : MsgType.STEP, header, payload: bytes });
    } catch (e) {
      const target = s.downstream?.remotePeer;
      fail('unreachable', `send from ${this.self} to ${target} failed: ${(e as Error).message}`);
    }
  }

  private touch(s: Session): void {
    if (s.idle) clearTimeout(s.idle);
    // the gateway may ask for a shorter idle timeout, never a longer one than the node allows
    const ms = Math.min(s.open.idleTimeoutMs ?? this.idleTimeoutMs, this.idleTimeoutMs);
    s.idle = setTimeout(() => {
      void s.upstream.sendError('timeout', `session idle for ${ms} ms; freed`, { sessionId: s.id });
      this.teardown(s, 'idle timeout', true);
    }, ms);
    s.idle.unref?.();
  }

  private teardown(s: Session, why: string, closeDownstream: boolean): void {
    if (s.closed) return;
    s.closed = true;
    if (s.idle) clearTimeout(s.idle);
    if (this.sessions.get(s.id) === s) this.sessions.delete(s.id);
    this.reservedTokens -= s.reserved;
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
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
