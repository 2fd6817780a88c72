// The execution side of the activation protocol: a node serving one contiguous layer range.
// Each session arrives as one long-lived inbound stream (OPEN first). The node opens one
// long-lived stream onward — to the next hop, or (last hop) a result stream to the gateway —
// and dispatches the session's messages: STEPs to the executor (executor.ts), TRUNCATE on,
// CLOSE to the session table (sessions.ts). KV hand-over on leave is kv-handover.ts; the
// accountability work per step is the stamper's (stamper.ts), and when the node is accountable
// it also re-executes other nodes' committed inputs for auditors, alone between scheduler iterations.
//
// Session ownership (docs/protocol.md §4.1): an OPEN must be signed by its gateway
// (reply.peerId) and come from the previous hop of the signed route (the gateway for hop 0);
// the session is then bound to that one stream (only it steps, truncates or closes it) and
// torn down when it closes. Ids in use are not re-opened; resumeFrom names only the same
// owner's sessions; the node dials only addresses of the signed route and says of a failed dial
// only that it was unreachable; an ERROR is never answered with an ERROR.

import type { Stream, Connection } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { Stage } from '../engine/types.js';
import { Channel } from '../p2p/channel.js';
import type { OdsiHost } from '../p2p/host.js';
import { StreamPool, type StreamPoolView } from '../p2p/stream-pool.js';
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
import { AuditExecServer, type ReexecLimits } from '../accountability/node/audit-exec.js';
import { StepExecutor, type NodeStats, type SendOnward } from './executor.js';
import { KvHandover } from './kv-handover.js';
import { NO_PEER_LIMITS, PeerLimits } from './peer-limits.js';
import type { PerfMeter } from './perf.js';
import { StepScheduler } from './scheduler.js';
import { MAX_QUEUED_PER_SESSION, SessionTable, type Session } from './sessions.js';
import { UsedOpens } from './used-opens.js';
import { LinkDelays } from './link-delays.js';
import { checkOpenSignature } from '../protocol/open-signature.js';
import { errorSigner, type ErrorSigner } from '../protocol/error-signature.js';
import { MAX_RELAYED_ERRORS, relayedError } from './error-relay.js';
import type { StepStamper } from './stamper.js';
import type { NodeMetrics } from './metrics.js';

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
  /** signs the ERRORs this node sends about a session (default: errorSigner(host.identity), protocol/error-signature.ts) */
  signError?: ErrorSigner;
  /** bounds of the audit re-execution service (default: DEFAULT_REEXEC_LIMITS) */
  reexecLimits?: Partial<ReexecLimits>;
  /** Prometheus metrics (odsi node --metrics-port) */
  metrics?: NodeMetrics;
  /** how steps' outputs and receipts go on to the next hop (default: onto its stream; executor.ts) */
  sendOnward?: SendOnward;
  /** continuous batching: tokens per scheduler iteration, and the longest prompt chunk in one */
  batching?: { tokenBudget?: number; chunkTokens?: number; maxBatch?: number };
  /** negotiated streams kept ready per next hop (and per gateway for results) just used (default 1; 0: none; stream-pool.ts) */
  streamSpares?: number;
  /** a spare kept unused this long is closed (default 20 s; keep it below the next hops' idle limit for silent streams) */
  streamSpareIdleMs?: number;
  log?: Logger;
}

/** how long a hop tries to reach the next one; a failure is reported exactly this long after the dial began */
export const DIAL_TIMEOUT_MS = 4_000;

/** What one inbound act stream carries: at most one session, bound by its first OPEN. */
interface StreamBinding {
  opened: boolean;
  session?: Session;
  upClosed: boolean;
}

export class NodeServer {
  /** counters for logs/metrics */
  readonly stats: NodeStats = { opened: 0, steps: 0, errors: 0, refused: 0 };
  private readonly self: string;
  private readonly sessions: SessionTable;
  private readonly scheduler: StepScheduler;
  private readonly executor: StepExecutor;
  private readonly handover: KvHandover;
  private auditExec?: AuditExecServer;
  private readonly limits: PeerLimits;
  private readonly usedOpens = new UsedOpens();
  private readonly links: LinkDelays;
  /** onward streams by protocol: to next hops (activations) and to gateways (results) */
  private readonly streams: Record<typeof ACT_PROTOCOL | typeof RESULT_PROTOCOL, StreamPool>;
  private readonly signError: ErrorSigner;

  constructor(private readonly o: NodeServerOptions) {
    this.self = o.host.peerId;
    this.signError = o.signError ?? errorSigner(o.host.identity);
    this.links = new LinkDelays(o.host);
    const pool = (protocol: string) =>
      new StreamPool({
        spares: o.streamSpares,
        maxIdleMs: o.streamSpareIdleMs,
        libp2p: o.host.libp2p,
        protocol,
        maxOutboundStreams: MAX_SESSION_STREAMS,
      });
    this.streams = { [ACT_PROTOCOL]: pool(ACT_PROTOCOL), [RESULT_PROTOCOL]: pool(RESULT_PROTOCOL) };
    const limits = (this.limits = o.limits ?? new PeerLimits(NO_PEER_LIMITS));
    this.sessions = new SessionTable({
      onTeardown: (s) => limits.release(s.owner, this.sessions.allocated(s.reserved)),
      stage: o.stage,
      kvBudgetTokens: o.kvBudgetTokens,
      idleTimeoutMs: o.idleTimeoutMs ?? 5 * 60_000,
      log: o.log,
    });
    const onIteration = o.metrics && ((n: number, t: number, ms: number) => o.metrics!.iteration(n, t, ms));
    this.scheduler = new StepScheduler({
      stage: o.stage,
      perf: o.perf,
      self: this.self,
      ...o.batching,
      onIteration,
      sessions: () => this.sessions.size,
    });
    this.executor = new StepExecutor(
      {
        self: this.self,
        stage: o.stage,
        modelId: o.modelId,
        stamper: o.stamper,
        scheduler: this.scheduler,
        metrics: o.metrics,
        send: o.sendOnward,
      },
      this.stats,
    );
    this.handover = new KvHandover({ host: o.host, stage: o.stage, modelId: o.modelId, sessions: this.sessions, limits, log: o.log });
  }

  get load(): number {
    return this.sessions.size;
  }
  get freeKvTokens(): number {
    return this.sessions.freeKvTokens;
  }
  get kvBudgetTokens(): number {
    return this.sessions.kvBudgetTokens;
  }
  /** audit re-executions served to auditors (none when the node is not accountable) */
  get auditStats(): { served: number; refused: number; tokens: number } {
    const s = this.auditExec?.stats;
    return { served: s?.served ?? 0, refused: s?.refused ?? 0, tokens: s?.tokens ?? 0 };
  }
  /** the step scheduler's counters (iterations, sessions and tokens summed over them, refusals) */
  get batching(): StepScheduler['stats'] {
    return this.scheduler.stats;
  }
  /** the onward activation streams' pool, read-only: its counters, and the spares ready to a next hop */
  get actStreamPool(): StreamPoolView {
    return this.streams[ACT_PROTOCOL];
  }

  async start(): Promise<void> {
    await this.o.host.libp2p.handle(
      ACT_PROTOCOL,
      this.limits.guard(this.self, ACT_PROTOCOL, (stream, conn) => this.onStream(stream, conn)),
      {
        maxInboundStreams: MAX_SESSION_STREAMS,
        maxOutboundStreams: MAX_SESSION_STREAMS,
      },
    );
    await this.handover.start();
    await this.o.stamper.start(); // crypto worker up before the first step
    if (this.o.stamper.accountable) {
      const stamper = this.o.stamper;
      this.auditExec = new AuditExecServer({
        host: this.o.host,
        stage: this.o.stage,
        modelId: this.o.modelId,
        exclusive: (fn) => this.scheduler.exclusive(fn),
        sign: (fields) => stamper.signReexecution(fields),
        domain: stamper.domain,
        limits: this.o.reexecLimits,
        log: this.o.log,
      });
      await this.auditExec.start();
    }
  }

  async stop(): Promise<void> {
    await this.o.host.libp2p.unhandle(ACT_PROTOCOL).catch(() => {});
    for (const pool of Object.values(this.streams)) pool.close();
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
    // one stream carries one session: the first OPEN binds it (synchronously, so a second OPEN
    // racing the first is refused) and the session lives only as long as this stream
    const bound: StreamBinding = { opened: false, upClosed: false };
    const ch: Channel = new Channel(
      stream,
      remote,
      this.self,
      {
        onMessage: (m) => {
          if (m.type === MsgType.ERROR) {
            // never answer an error with an error (docs/protocol.md §3); upstream sends none
            this.o.log?.debug({ remote, code: m.header.code }, 'ERROR from upstream ignored');
            return;
          }
          if (m.type === MsgType.OPEN) {
            if (bound.opened) {
              this.stats.refused++;
              void ch.sendError('bad_message', 'this stream already carries a session', { sessionId: m.header.sessionId });
              return;
            }
            bound.opened = true;
            void this.onOpen(ch, m.header, remote, bound);
            return;
          }
          const session = bound.session;
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
          bound.upClosed = true;
          const s = bound.session;
          if (s && !s.closed) this.sessions.teardown(s, 'upstream closed', true);
        },
      },
      {
        ...this.limits.channelOptions(this.o.stage.config.dim, () => bound.session !== undefined && !bound.session.closed),
        onBytes: this.o.metrics?.meter(ACT_PROTOCOL),
        // every ERROR about a session this node sends upstream is signed (protocol/error-signature.ts)
        signError: (h) => this.signError(h, bound.session?.open),
      },
    );
  }

  /** Why this OPEN may not open a session for `remote` (undefined: it may). See docs/protocol.md §4.1. */
  private checkOwner(h: OpenHeader, remote: string): [ErrorCode, string] | undefined {
    const now = Date.now();
    // the cheap checks first: a stranger's OPEN costs a signature check only once nothing else refuses it
    const from = h.hop === 0 ? h.reply.peerId : h.route[h.hop - 1]?.peerId;
    if (from !== remote)
      return ['forbidden', `OPEN for hop ${h.hop} must come from ${h.hop === 0 ? 'its gateway' : `route[${h.hop - 1}]`}, not ${remote}`];
    if (typeof h.signature === 'string' && this.usedOpens.has(h.signature, now))
      return ['bad_message', 'this signed OPEN was used already: a new session needs a new OPEN'];
    if (!this.usedOpens.hasRoom(now)) return ['busy', 'too many sessions opened in the last minute; try again later'];
    const bad = checkOpenSignature(h, now);
    if (bad) return ['forbidden', bad];
    // an imported cache waiting for its owner holds its id too (a new session would compute on it)
    if (this.sessions.has(h.sessionId) || this.handover.ownerOf(h.sessionId) !== undefined)
      return ['bad_message', `session id in use: ${h.sessionId}`];
    const resume = h.resumeFrom;
    if (resume !== undefined) {
      if (typeof resume !== 'string' || resume === h.sessionId) return ['bad_message', 'resumeFrom must name another session'];
      const owner = this.sessions.get(resume)?.owner ?? this.handover.ownerOf(resume);
      if (owner !== h.reply.peerId) return ['forbidden', `cannot resume from session "${resume}": no session of yours by that id here`];
    }
    return undefined;
  }

  private async onOpen(up: Channel, h: OpenHeader, remote: string, bound: StreamBinding): Promise<void> {
    const refuse = (code: ErrorCode, reason: string): void => {
      this.stats.refused++;
      this.o.metrics?.sessionRefused(code);
      this.o.log?.info({ session: h.sessionId, code, reason }, 'refused session');
      void up.sendError(code, reason, { sessionId: h.sessionId, hop: h.hop });
    };
    const me = h.route[h.hop];
    const r = this.o.stage.range;
    if (h.modelId !== this.o.modelId) return refuse('wrong_model', `this node serves model ${this.o.modelId}, not ${h.modelId}`);
    if (!me || me.peerId !== this.self) return refuse('bad_message', `route[${h.hop}] is not this node (${this.self})`);
    if (me.start !== r.start || me.end !== r.end)
      return refuse('wrong_layers', `this node serves layers ${r.start}:${r.end}, route asks for ${me.start}:${me.end}`);
    if (h.hidden !== undefined && h.hidden !== this.o.stage.config.dim)
      return refuse('wrong_model', `hidden size ${h.hidden} ≠ ${this.o.stage.config.dim}`);
    const denied = this.checkOwner(h, remote);
    if (denied) return refuse(...denied);
    if (this.handover.leaving) return refuse('busy', `node ${this.self} is leaving`);
    const ctx = this.o.stage.config.contextLength;
    const want = Math.min(h.maxTokens ?? Math.min(ctx, DEFAULT_MAX_TOKENS), ctx);
    // per-peer share, counted per owner (the gateway that signed the OPEN), not per relaying upstream
    // the owner's share counts the reservation as the engine allocates it, as the node's budget does
    const cost = this.sessions.allocated(want);
    const overShare = this.limits.admit(h.reply.peerId, cost, this.sessions.kvBudgetTokens);
    if (overShare) return refuse('busy', overShare);
    // an imported cache this session resumes gives its reservation to the session
    const imported = typeof h.resumeFrom === 'string' ? this.handover.releaseImport(h.resumeFrom) : 0;
    const s = this.sessions.create(h, up, want);
    if (!s) {
      const why = this.sessions.noRoom(want);
      this.limits.release(h.reply.peerId, cost);
      if (imported) this.handover.keepImport(h.resumeFrom as string, imported);
      return refuse('busy', why ?? 'no room for the session');
    }
    this.sessions.add(s); // the id is taken from now on
    this.usedOpens.add(h.signature!, h.expiresAt!); // and this OPEN is spent
    bound.session = s;
    if (bound.upClosed) return this.sessions.teardown(s, 'upstream closed', false);
    // slashing protection: the session is on file (written off the main thread) before it takes
    // a step and before the OPEN goes on; steps arriving meanwhile (a gateway may send the first
    // right behind its OPEN) wait behind the write and behind the onward stream's OPEN
    const onFile = this.o.stamper.openSession(h);
    let onward!: () => void;
    const passedOn = new Promise<void>((resolve) => (onward = resolve));
    s.chain = Promise.all([onFile, passedOn]).then(
      () => {},
      () => {},
    );
    try {
      try {
        await onFile;
      } catch (e) {
        this.o.log?.error({ session: s.id, err: (e as Error).message }, 'slashing protection: cannot record the session');
        void up.sendError('internal', `node ${this.self} cannot take sessions now`, { sessionId: s.id, hop: h.hop });
        return this.sessions.teardown(s, 'slashing protection unavailable', false);
      }
      if (s.closed) return;
      await this.handover.resume(h);
      const dialStart = performance.now();
      try {
        // dialing policy: only the addresses the owner signed (next hop, or its own reply address)
        if (s.isLast) {
          const ch = await this.connect(h.reply.peerId, h.reply.addrs, RESULT_PROTOCOL, s);
          s.downstream = ch;
          await ch.send({ type: MsgType.OPENED, header: { sessionId: s.id, peers: h.route.map((x) => x.peerId) } });
        } else {
          const next = h.route[h.hop + 1]!;
          const ch = await this.connect(next.peerId, next.addrs, ACT_PROTOCOL, s);
          s.downstream = ch;
          await ch.send({ type: MsgType.OPEN, header: { ...h, hop: h.hop + 1 } });
          // the budget passed on accounts for the link to the next hop (measured per peer, not per session)
          this.links.apply(next.peerId, (ms) => (s.linkMs = ms));
        }
      } catch (e) {
        const target = s.isLast ? h.reply.peerId : h.route[h.hop + 1]!.peerId;
        this.o.log?.debug({ session: s.id, target, err: (e as Error).message }, 'downstream unreachable');
        // only that it failed: why (refused, timed out, wrong peer) is not told to strangers, nor
        // when: every failure is answered DIAL_TIMEOUT_MS after the dial began, so a closed port, a
        // filtered one and a host that is not the named peer look alike (no port scanner)
        const wait = DIAL_TIMEOUT_MS - (performance.now() - dialStart);
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (s.closed) return;
        void up.sendError('unreachable', `hop ${this.self} cannot reach ${target}`, {
          sessionId: s.id,
          peerId: target,
          hop: s.isLast ? h.route.length : h.hop + 1,
        });
        this.sessions.teardown(s, 'downstream unreachable', false);
        return;
      }
      if (s.closed) return;
      this.stats.opened++;
      this.o.log?.info({ session: s.id, hop: h.hop, last: s.isLast }, 'session open');
    } finally {
      onward(); // the steps waiting behind the OPEN go on (or find the session closed)
    }
  }

  private async connect(
    peerId: string,
    addrs: string[],
    protocol: typeof ACT_PROTOCOL | typeof RESULT_PROTOCOL,
    s: Session,
  ): Promise<Channel> {
    const signal = AbortSignal.timeout(DIAL_TIMEOUT_MS);
    await this.o.host.dial(peerId, addrs, signal);
    const stream = await this.streams[protocol].take(peerId, signal);
    return new Channel(
      stream,
      peerId,
      this.self,
      {
        // errors coming back from downstream go upstream: as they are when verifiably a later
        // hop's, else as this hop's own account naming the next hop (error-relay.ts); nothing else comes back
        onMessage: (m) => {
          if (m.type !== MsgType.ERROR || ++s.relayedErrors > MAX_RELAYED_ERRORS) return;
          const header = relayedError(m.header, s.id, s.open, peerId);
          this.o.metrics?.relayedError(header === m.header);
          void s.upstream.send({ type: MsgType.ERROR, header }).catch(() => {});
        },
        onClose: (err) => {
          if (s.closed) return;
          if (err) this.o.log?.debug({ session: s.id, peerId, err: err.message }, 'downstream stream closed');
          void s.upstream.sendError('unreachable', `stream from ${this.self} to ${peerId} closed`, {
            sessionId: s.id,
            peerId,
          });
          this.sessions.teardown(s, 'downstream closed', false);
        },
      },
      { onBytes: this.o.metrics?.meter(protocol) },
    );
  }

  /** A session with MAX_QUEUED_PER_SESSION messages waiting takes no more: ERROR `limit` (true: refused). */
  private overQueued(s: Session, requestId?: number): boolean {
    if (s.queued < MAX_QUEUED_PER_SESSION) {
      s.queued++;
      return false;
    }
    this.stats.refused++;
    void s.upstream.sendError(
      'limit',
      `at most ${MAX_QUEUED_PER_SESSION} messages of a session may wait; send the next step after a result`,
      {
        sessionId: s.id,
        requestId,
      },
    );
    return true;
  }

  private onSessionMessage(s: Session, m: Message): void {
    const done = (): void => void s.queued--;
    this.sessions.touch(s);
    switch (m.type) {
      case MsgType.STEP: {
        const recvAt = performance.now();
        if (this.overQueued(s, m.header.requestId)) return;
        s.chain = s.chain.then(() => this.executor.run(s, m.header, m.payload, recvAt)).then(done, done);
        return;
      }
      case MsgType.TRUNCATE:
        if (this.overQueued(s)) return;
        // the stage truncates on the next forward at pos; forward the hint downstream
        s.chain = s.chain
          .then(async () => {
            if (!s.isLast) await s.downstream?.send(m).catch(() => {});
          })
          .then(done, done);
        return;
      case MsgType.CLOSE:
        s.chain = s.chain.then(() => this.sessions.teardown(s, m.header.reason ?? 'closed by upstream', true));
        return;
      case MsgType.RECEIPTS: {
        // the upstream chain of a step, after its STEP: not queued behind compute (executor.ts takes it)
        const refuse = (code: ErrorCode | 'custody', why: string, peerId?: string): void => {
          this.stats.errors++;
          void s.upstream.sendError(code, why, {
            sessionId: s.id,
            requestId: m.header.requestId,
            hop: s.open.hop,
            ...(peerId ? { peerId } : {}),
          });
        };
        if (!this.o.stamper.accountable) return refuse('bad_message', 'this node is not accountable: it takes no receipts');
        // at hop 0 (the gateway signs nothing) it is refused and otherwise ignored
        if (s.open.hop === 0)
          return refuse('custody', 'chain of custody: malformed: the first hop expects no receipts from the gateway', s.owner);
        if (!s.inbox.put(m.header.step, m.payload))
          return refuse('limit', `receipts for step ${m.header.step} refused: sent twice, or too many steps ahead`);
        return;
      }
      default:
        if (m.type === MsgType.ERROR) return; // never answer an error with an error
        void s.upstream.sendError('bad_message', `unexpected ${MsgType[m.type]} on a session stream`, { sessionId: s.id });
    }
  }
}
