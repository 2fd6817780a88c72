// The execution side of the activation protocol: a node serving one contiguous layer range.
// Each session arrives as one long-lived inbound stream (OPEN first). The node opens one
// long-lived stream onward — to the next hop, or (last hop) a result stream to the gateway —
// and dispatches the session's messages: STEPs to the executor (executor.ts), TRUNCATE on,
// CLOSE to the session table (sessions.ts). KV hand-over on leave is kv-handover.ts; the
// accountability work per step is the stamper's (stamper.ts), and when the node is accountable
// it also re-executes other nodes' committed inputs for auditors under the same compute lock.

import { peerIdFromString } from '@libp2p/peer-id';
import type { Stream, Connection } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { Stage } from '../engine/types.js';
import { Channel } from '../p2p/channel.js';
import type { OdsiHost } from '../p2p/host.js';
import {
  ACT_PROTOCOL,
  MAX_SESSION_STREAMS,
  MessageError,
  MsgType,
  RESULT_PROTOCOL,
  type ErrorCode,
  type Message,
  type OpenHeader,
} from '../protocol/messages.js';
import { DEFAULT_MAX_TOKENS } from '../route/route-stage.js';
import { AuditExecServer } from '../accountability/node/audit-exec.js';
import { ComputeLock } from './compute-lock.js';
import { StepExecutor, type NodeStats } from './executor.js';
import { KvHandover } from './kv-handover.js';
import { NO_PEER_LIMITS, PeerLimits } from './peer-limits.js';
import type { PerfMeter } from './perf.js';
import { SessionTable, type Session } from './sessions.js';
import type { StepStamper } from './stamper.js';

export interface NodeServerOptions {
  host: OdsiHost;
  stage: Stage;
  modelId: string;
  perf: PerfMeter;
  /** accountability per step (NO_STAMPER when it is off) */
  stamper: StepStamper;
  /** KV tokens this node may hold across all sessions */
  kvBudgetTokens: number;
  /** free a session after this long without a step (default 5 min) */
  idleTimeoutMs?: number;
  /** per remote peer bounds (default: none) */
  limits?: PeerLimits;
  log?: Logger;
}

export class NodeServer {
  /** counters for logs/metrics */
  readonly stats: NodeStats = { opened: 0, steps: 0, errors: 0, refused: 0 };
  private readonly self: string;
  private readonly sessions: SessionTable;
  private readonly lock = new ComputeLock();
  private readonly executor: StepExecutor;
  private readonly handover: KvHandover;
  private auditExec?: AuditExecServer;
  private readonly limits: PeerLimits;

  constructor(private readonly o: NodeServerOptions) {
    this.self = o.host.peerId;
    const limits = (this.limits = o.limits ?? new PeerLimits(NO_PEER_LIMITS));
    this.sessions = new SessionTable({
      onTeardown: (s) => limits.release(s.upstream.remotePeer, s.reserved),
      stage: o.stage,
      kvBudgetTokens: o.kvBudgetTokens,
      idleTimeoutMs: o.idleTimeoutMs ?? 5 * 60_000,
      log: o.log,
    });
    this.executor = new StepExecutor(
      { self: this.self, stage: o.stage, modelId: o.modelId, perf: o.perf, stamper: o.stamper, lock: this.lock },
      this.stats,
    );
    this.handover = new KvHandover({ host: o.host, stage: o.stage, modelId: o.modelId, sessions: this.sessions, log: o.log });
  }

  get load(): number {
    return this.sessions.size;
  }
  get freeKvTokens(): number {
    return this.sessions.freeKvTokens;
  }

  async start(): Promise<void> {
    await this.o.host.libp2p.handle(ACT_PROTOCOL, this.limits.guard(this.self, ACT_PROTOCOL, (stream, conn) => this.onStream(stream, conn)), {
      maxInboundStreams: MAX_SESSION_STREAMS,
      maxOutboundStreams: MAX_SESSION_STREAMS,
    });
    await this.handover.start();
    await this.o.stamper.start(); // crypto worker up before the first step
    if (this.o.stamper.accountable) {
      const stamper = this.o.stamper;
      this.auditExec = new AuditExecServer({
        host: this.o.host,
        stage: this.o.stage,
        modelId: this.o.modelId,
        exclusive: (fn) => this.lock.run(fn),
        sign: (fields) => stamper.signReexecution(fields),
        log: this.o.log,
      });
      await this.auditExec.start();
    }
  }

  async stop(): Promise<void> {
    await this.o.host.libp2p.unhandle(ACT_PROTOCOL).catch(() => {});
    await this.handover.stop();
    await this.auditExec?.stop();
    await this.o.stamper.stop();
    this.sessions.closeAll('node stopping');
  }

  /** Hand every session's KV cache to a node serving the same layers, then wait (bounded) for routes to move. */
  drain(opts: { waitMs?: number } = {}): Promise<void> {
    return this.handover.drain(opts);
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
        if (session && !session.closed) this.sessions.teardown(session, 'upstream closed', true);
      },
    }, this.limits.channelOptions(this.o.stage.config.dim, () => session !== undefined && !session.closed));
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
    if (me.start !== r.start || me.end !== r.end)
      return refuse('wrong_layers', `this node serves layers ${r.start}:${r.end}, route asks for ${me.start}:${me.end}`);
    if (h.hidden !== undefined && h.hidden !== this.o.stage.config.dim)
      return refuse('wrong_model', `hidden size ${h.hidden} ≠ ${this.o.stage.config.dim}`);
    if (this.handover.leaving) return refuse('busy', `node ${this.self} is leaving`);
    const old = this.sessions.get(h.sessionId);
    if (old) this.sessions.teardown(old, 'session re-opened', true); // failover: the new upstream wins
    const ctx = this.o.stage.config.contextLength;
    const want = Math.min(h.maxTokens ?? Math.min(ctx, DEFAULT_MAX_TOKENS), ctx);
    const overShare = this.limits.admit(up.remotePeer, want, this.sessions.kvBudgetTokens);
    if (overShare) return refuse('busy', overShare);
    const s = this.sessions.create(h, up, want);
    if (!s) {
      this.limits.release(up.remotePeer, want);
      const { freeKvTokens, kvBudgetTokens } = this.sessions;
      return refuse('busy', `KV memory full: ${freeKvTokens} of ${kvBudgetTokens} tokens free, session asks for ${want}`);
    }
    await this.handover.resume(h);
    this.sessions.add(s);
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
        void this.o.host.ping(next.peerId).then(
          (rtt) => (s.linkMs = rtt / 2),
          () => {},
        );
      }
    } catch (e) {
      const target = s.isLast ? h.reply.peerId : h.route[h.hop + 1]!.peerId;
      void up.sendError('unreachable', `hop ${this.self} cannot reach ${target}: ${(e as Error).message}`, {
        sessionId: s.id,
        peerId: target,
        hop: s.isLast ? h.route.length : h.hop + 1,
      });
      this.sessions.teardown(s, 'downstream unreachable', false);
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
    const stream = await this.o.host.libp2p.dialProtocol(peerIdFromString(peerId), protocol, {
      signal,
      maxOutboundStreams: MAX_SESSION_STREAMS,
    });
    return new Channel(stream, peerId, this.self, {
      // errors (and anything else) coming back from downstream are relayed upstream unchanged
      onMessage: (m) => {
        if (m.type === MsgType.ERROR) void s.upstream.send(m).catch(() => {});
      },
      onClose: (err) => {
        if (s.closed) return;
        void s.upstream.sendError('unreachable', `stream from ${this.self} to ${peerId} closed${err ? `: ${err.message}` : ''}`, {
          sessionId: s.id,
          peerId,
        });
        this.sessions.teardown(s, 'downstream closed', false);
      },
    });
  }

  private onSessionMessage(s: Session, m: Message): void {
    this.sessions.touch(s);
    switch (m.type) {
      case MsgType.STEP: {
        const recvAt = performance.now();
        s.chain = s.chain.then(() => this.executor.run(s, m.header, m.payload, recvAt));
        return;
      }
      case MsgType.TRUNCATE:
        // the stage truncates on the next forward at pos; forward the hint downstream
        s.chain = s.chain.then(async () => {
          if (!s.isLast) await s.downstream?.send(m).catch(() => {});
        });
        return;
      case MsgType.CLOSE:
        s.chain = s.chain.then(() => this.sessions.teardown(s, m.header.reason ?? 'closed by upstream', true));
        return;
      default:
        void s.upstream.sendError('bad_message', `unexpected ${MsgType[m.type]} on a session stream`, { sessionId: s.id });
    }
  }
}
