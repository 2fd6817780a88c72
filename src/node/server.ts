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
import { Channel } from '../p2p/channel.js';
import type { OdsiHost } from '../p2p/host.js';
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
} from '../protocol/messages.js';
import { DEFAULT_MAX_TOKENS, type HopTiming } from '../route/route-stage.js';
import { PerfMeter } from './perf.js';
import type { FaultInjector } from '../testing/inject.js'; // fault-tolerance: test-only fault hooks
import { checkCustody, commitStep, prepareAccountability, stampStep } from '../accountability/node/stamp.js'; // accountability: receipts + custody checks
import { KV_PROTOCOL, hopSchema, type KvHeader } from '../protocol/messages.js'; // kv-transfer
import { findAdverts } from '../p2p/adverts.js'; // kv-transfer
import type { SessionState } from '../engine/types.js'; // kv-transfer
import { AuditExecServer } from '../accountability/node/audit-exec.js'; // accountability: re-execution for auditors

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
  /** kv-transfer: the node is leaving; steps are answered with a 'draining' error */
  draining?: boolean;
  /** kv-transfer: where this session's KV cache went */
  handedTo?: { peerId: string; addrs: string[] };
}

// kv-transfer: a peer that can take over a session (same layer range)
interface Spare {
  peerId: string;
  addrs: string[];
}
/** kv-transfer: an imported session no route claims within this long is freed */
const IMPORT_TTL_MS = 60_000;

export class NodeServer {
  private sessions = new Map<string, Session>();
  private reservedTokens = 0;
  private computeLock: Promise<void> = Promise.resolve();
  private readonly self: string;
  private readonly idleTimeoutMs: number;
  /** counters for logs/metrics */
  stats = { opened: 0, steps: 0, errors: 0, refused: 0 };
  // kv-transfer: sessions imported from a draining node, waiting for a route to resume them
  private imported = new Map<string, NodeJS.Timeout>();
  private leaving = false;
  // accountability: re-executes other nodes' committed inputs for auditors (selective redundancy)
  private auditExec?: AuditExecServer;

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
    await this.o.host.libp2p.handle(KV_PROTOCOL, (stream, conn) => this.onKvStream(stream, conn.remotePeer.toString())); // kv-transfer
    await prepareAccountability(this.o.host); // accountability: crypto worker up before the first step
    // accountability: audit re-execution, under the same compute lock as the token path
    this.auditExec = new AuditExecServer({
      host: this.o.host,
      stage: this.o.stage,
      modelId: this.o.modelId,
      exclusive: (fn) => this.exclusive(fn),
      faults: this.o.faults,
      nodeSteps: () => this.stats.steps,
      log: this.o.log,
    });
    await this.auditExec.start();
  }

  async stop(): Promise<void> {
    await this.o.host.libp2p.unhandle(ACT_PROTOCOL).catch(() => {});
    await this.o.host.libp2p.unhandle(KV_PROTOCOL).catch(() => {}); // kv-transfer
    await this.auditExec?.stop(); // accountability
    for (const t of this.imported.values()) clearTimeout(t); // kv-transfer
    this.imported.clear(); // kv-transfer
    for (const s of [...this.sessions.values()]) this.teardown(s, 'node stopping', true);
  }

  /** accountability: run `fn` under the compute lock (the same one runStep takes), in arrival order */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.computeLock;
    let release!: () => void;
    this.computeLock = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
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
    if (me.start !== r.start || me.end !== r.end)
      return refuse('wrong_layers', `this node serves layers ${r.start}:${r.end}, route asks for ${me.start}:${me.end}`);
    if (h.hidden !== undefined && h.hidden !== this.o.stage.config.dim)
      return refuse('wrong_model', `hidden size ${h.hidden} ≠ ${this.o.stage.config.dim}`);
    if (this.leaving) return refuse('busy', `node ${this.self} is leaving`); // kv-transfer
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
    await this.resume(h); // kv-transfer
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
    if (s.draining) {
      // kv-transfer: tell the gateway where the session's KV cache went (or that it must replay)
      this.stats.errors++;
      const reason = s.handedTo ? `node ${this.self} is leaving; session handed to ${s.handedTo.peerId}` : `node ${this.self} is leaving`;
      const header = {
        code: 'draining',
        reason,
        peerId: this.self,
        sessionId: s.id,
        requestId: h.requestId,
        hop: s.open.hop,
        ...(s.handedTo ? { replacement: s.handedTo, resumeFrom: s.id } : {}),
      };
      void s.upstream.send({ type: MsgType.ERROR, header } as Message).catch(() => {});
      return;
    }
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
    // accountability: the upstream hop's signed receipt must cover exactly these bytes, and this
    // hop commits to its input before the output exists. Both signatures run on the crypto
    // worker while the stage computes; nothing is released before they are settled.
    const custodyCheck = checkCustody(this.o.host, s.open, h, payload, hidden);
    const committed = commitStep(this.o.host, {
      open: s.open,
      header: h,
      input: payload,
      range: stage.range,
      profile: stage.profile,
      modelId: this.o.modelId,
    });
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
          return fail(
            'deadline',
            `remaining budget ${(h.budgetMs - queueMs).toFixed(1)} ms < expected ${expected.toFixed(1)} ms on ${this.self}`,
          );
        }
      }
      try {
        out = await stage.forward({ sessionId: s.id, pos: h.pos, nTokens: h.nTokens, hidden });
      } catch (e) {
        const code: ErrorCode =
          e instanceof EngineError ? (e.code === 'capacity' ? 'busy' : e.code === 'internal' ? 'engine' : 'bad_message') : 'engine';
        return fail(code, (e as Error).message);
      }
    } finally {
      release();
    }
    const computeMs = out.computeMs ?? performance.now() - startAt;
    this.o.perf.record(h.nTokens, computeMs);
    const custody = await custodyCheck;
    if (custody) {
      // computed from an input its upstream did not sign for: the output is never released
      this.stats.errors++;
      void s.upstream.sendError(custody.code, custody.reason, {
        sessionId: s.id,
        requestId: h.requestId,
        peerId: custody.peerId,
        hop: s.open.hop,
      });
      return;
    }
    await committed;
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
    stampStep(this.o.host, {
      open: s.open,
      header,
      input: payload,
      output: bytes,
      range: stage.range,
      profile: stage.profile,
      modelId: this.o.modelId,
      timing,
      faults: this.o.faults,
    });
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

  // ---- kv-transfer: graceful leave ----

  /**
   * Hand every session's KV cache to a node serving the same layers, then wait (bounded) for
   * the gateways to move their routes. Each session's step in flight finishes first: the
   * hand-over is queued behind it on the session's chain; later steps get a 'draining' error
   * naming the replacement.
   */
  async drain(opts: { waitMs?: number } = {}): Promise<void> {
    if (this.leaving) return;
    this.leaving = true;
    const live = [...this.sessions.values()].filter((s) => !s.closed);
    if (!live.length) return;
    let adverts: Promise<Spare[]> | undefined;
    const fromAdverts = () =>
      (adverts ??= findAdverts(this.o.host, this.o.modelId, { timeoutMs: 2000 }).then(
        (as) => as.filter((a) => a.start === this.o.stage.range.start && a.end === this.o.stage.range.end && a.peerId !== this.self),
        () => [],
      ));
    await Promise.all(
      live.map((s) => {
        const done = s.chain.then(() => this.handOver(s, fromAdverts));
        s.chain = done;
        return done;
      }),
    );
    const until = Date.now() + (opts.waitMs ?? 3000);
    while (Date.now() < until && [...this.sessions.values()].some((s) => s.handedTo && !s.closed))
      await new Promise((r) => setTimeout(r, 20));
  }

  private async handOver(s: Session, fromAdverts: () => Promise<Spare[]>): Promise<void> {
    if (s.closed) return;
    try {
      const st = await this.o.stage.exportSession?.(s.id);
      if (!st || st.length === 0) return;
      const r = this.o.stage.range;
      const given = hopSchema.array().safeParse(s.open.spares);
      const spares: Spare[] = (given.success ? given.data : []).filter(
        (h) => h.start === r.start && h.end === r.end && h.peerId !== this.self,
      );
      for (const list of [spares, await fromAdverts()]) {
        for (const to of list) {
          try {
            const t0 = performance.now();
            await this.sendKv(to, s.id, st);
            s.handedTo = { peerId: to.peerId, addrs: to.addrs };
            this.o.log?.info(
              { session: s.id, to: to.peerId, tokens: st.length, ms: round(performance.now() - t0) },
              'session KV handed over',
            );
            return;
          } catch (e) {
            this.o.log?.warn({ session: s.id, to: to.peerId, err: (e as Error).message }, 'KV hand-over failed');
          }
        }
      }
    } finally {
      s.draining = true;
    }
  }

  private async sendKv(to: Spare, sessionId: string, st: SessionState): Promise<void> {
    const signal = AbortSignal.timeout(10_000);
    await this.o.host.dial(to.peerId, to.addrs, signal);
    const stream = await this.o.host.libp2p.dialProtocol(peerIdFromString(to.peerId), KV_PROTOCOL, { signal });
    let settle!: { resolve(): void; reject(e: Error): void };
    const acked = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    const ch = new Channel(stream, to.peerId, this.self, {
      onMessage: (m) => {
        if (m.type === MsgType.KV_ACK && m.header.length === st.length) settle.resolve();
        else if (m.type === MsgType.ERROR) settle.reject(new Error(`${m.header.code}: ${m.header.reason}`));
        else settle.reject(new Error(`unexpected ${MsgType[m.type]} in a KV hand-over`));
      },
      onClose: (err) => settle.reject(new Error(`KV stream closed${err ? `: ${err.message}` : ''}`)),
    });
    const timer = setTimeout(() => settle.reject(new Error('no KV_ACK within 10 s')), 10_000);
    try {
      const r = this.o.stage.range;
      const kvDim = this.o.stage.config.nKvHeads * this.o.stage.config.headDim;
      for (let i = 0; i < st.layers.length; i++) {
        const l = st.layers[i]!;
        const payload = new Uint8Array(2 * l.k.byteLength);
        payload.set(encodeTensor(l.k, 'f32'));
        payload.set(encodeTensor(l.v, 'f32'), l.k.byteLength);
        // encodeMessage splits the payload into ≤1 MB frames
        await ch.send({
          type: MsgType.KV,
          header: { sessionId, modelId: this.o.modelId, start: r.start, end: r.end, length: st.length, layer: r.start + i, kvDim },
          payload,
        });
      }
      await acked;
    } finally {
      clearTimeout(timer);
      void ch.close();
    }
  }

  /** Receive one session's KV cache from a draining node; check it fits this node, import it. */
  private onKvStream(stream: Stream, remote: string): void {
    const layers = new Map<number, { k: Float32Array; v: Float32Array }>();
    let first: KvHeader | undefined;
    const stage = this.o.stage;
    const r = stage.range;
    const kvDim = stage.config.nKvHeads * stage.config.headDim;
    const ch: Channel = new Channel(stream, remote, this.self, {
      onMessage: async (m) => {
        if (m.type !== MsgType.KV) return void ch.sendError('bad_message', `expected KV, got ${MsgType[m.type]}`);
        const h = m.header;
        const bad = (code: ErrorCode, reason: string) => void ch.sendError(code, reason, { sessionId: h.sessionId }).then(() => ch.close());
        if (h.modelId !== this.o.modelId) return bad('wrong_model', `this node serves model ${this.o.modelId}, not ${h.modelId}`);
        if (h.start !== r.start || h.end !== r.end)
          return bad('wrong_layers', `this node serves layers ${r.start}:${r.end}, KV is for ${h.start}:${h.end}`);
        if (h.kvDim !== kvDim || h.layer < r.start || h.layer >= r.end)
          return bad('bad_message', `KV layer ${h.layer} × ${h.kvDim} does not fit layers ${r.start}:${r.end} × ${kvDim}`);
        if (first && (h.sessionId !== first.sessionId || h.length !== first.length))
          return bad('bad_message', 'KV messages of one stream must be for one session and length');
        if (!stage.importSession) return bad('engine', `engine ${stage.profile} cannot import KV caches`);
        if (this.sessions.has(h.sessionId)) return bad('bad_message', `session ${h.sessionId} is already open here`);
        if (this.leaving) return bad('busy', `node ${this.self} is leaving`);
        if (h.length > this.freeKvTokens) return bad('busy', `KV memory full: ${this.freeKvTokens} tokens free, session has ${h.length}`);
        first ??= h;
        const n = h.length * kvDim;
        let kv: Float32Array;
        try {
          kv = decodeTensor(m.payload, 'f32', 2 * n);
        } catch (e) {
          return bad('bad_message', (e as Error).message);
        }
        layers.set(h.layer, { k: kv.subarray(0, n), v: kv.subarray(n) });
        if (layers.size < r.end - r.start) return;
        try {
          await stage.importSession(h.sessionId, {
            length: h.length,
            layers: [...layers.keys()].sort((a, b) => a - b).map((l) => layers.get(l)!),
          });
        } catch (e) {
          return bad('engine', (e as Error).message);
        }
        const old = this.imported.get(h.sessionId);
        if (old) clearTimeout(old);
        const t = setTimeout(() => {
          this.imported.delete(h.sessionId);
          if (!this.sessions.has(h.sessionId)) stage.closeSession(h.sessionId);
        }, IMPORT_TTL_MS);
        t.unref?.();
        this.imported.set(h.sessionId, t);
        this.o.log?.info({ session: h.sessionId, from: remote, tokens: h.length }, 'session KV imported');
        void ch.send({ type: MsgType.KV_ACK, header: { sessionId: h.sessionId, length: h.length } }).catch(() => {});
      },
    });
  }

  /** An OPEN naming `resumeFrom`: start the new session from that session's KV cache. */
  private async resume(h: OpenHeader): Promise<void> {
    const from = h.resumeFrom;
    if (typeof from !== 'string' || from === h.sessionId) return;
    const stage = this.o.stage;
    try {
      const st = await stage.exportSession?.(from);
      if (st && stage.importSession) await stage.importSession(h.sessionId, st);
    } catch (e) {
      // the route then finds the session short and falls back to a replay
      this.o.log?.warn({ session: h.sessionId, from, err: (e as Error).message }, 'cannot resume session');
    }
    const t = this.imported.get(from);
    if (t !== undefined) {
      // a hand-over copy is used once: the resumed session owns the cache now
      clearTimeout(t);
      this.imported.delete(from);
      if (!this.sessions.has(from)) stage.closeSession(from);
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
