// KV hand-over for a graceful leave. A draining node sends each live session's KV cache to a
// node serving the same layers (KV_PROTOCOL), then answers the session's later steps with a
// 'draining' error naming the replacement; the receiving node imports the cache and keeps it
// for a while, until a route re-opens the session with `resumeFrom` (or the copy expires).
//
// Only by invitation: the first KV message carries the session's OPEN as its owner (the
// gateway) signed it, and that OPEN's spares must name the receiver for these layers and its
// route the sender. The receiver reserves the cache's tokens against its KV budget before it
// accepts any bytes (busy when they do not fit), and only the same owner may resume the copy.

import { parsePeerId } from '../identity/peer-id.js';
import type { Stream, StreamHandler } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { SessionState, Stage } from '../engine/types.js';
import { Channel } from '../p2p/channel.js';
import { findAdverts } from '../p2p/adverts.js';
import type { OdsiHost } from '../p2p/host.js';
import {
  KV_PROTOCOL,
  MsgType,
  decodeTensor,
  encodeTensor,
  hopSchema,
  type ErrorCode,
  type KvHeader,
  type OpenHeader,
} from '../protocol/messages.js';
import { checkOpenSignature } from '../protocol/open-signature.js';
import type { Session, SessionTable } from './sessions.js';
import type { PeerLimits } from './peer-limits.js';
import { allFinite } from '../util/all-finite.js';

const round = (x: number): number => Math.round(x * 1000) / 1000;

/** an imported session no route claims within this long is freed */
const IMPORT_TTL_MS = 60_000;

/** an imported cache waiting for its owner's route */
interface Imported {
  timer: NodeJS.Timeout;
  /** the gateway that owns the session (signed its OPEN) */
  owner: string;
  /** KV tokens it holds reserved (0 once a resuming session took the reservation over) */
  tokens: number;
}

/** a peer that can take over a session (same layer range) */
interface Spare {
  peerId: string;
  addrs: string[];
}

export interface KvHandoverOptions {
  host: OdsiHost;
  stage: Stage;
  modelId: string;
  sessions: SessionTable;
  /** per-peer bounds on inbound KV streams (open count and open rate) */
  limits?: PeerLimits;
  log?: Logger;
}

export class KvHandover {
  /** sessions imported from a draining node, waiting for a route to resume them */
  private readonly imported = new Map<string, Imported>();
  private leavingNow = false;
  private readonly self: string;

  constructor(private readonly o: KvHandoverOptions) {
    this.self = o.host.peerId;
  }

  /** the node is leaving: it opens no new sessions and imports no caches */
  get leaving(): boolean {
    return this.leavingNow;
  }

  async start(): Promise<void> {
    const handler: StreamHandler = (stream, conn) => this.receive(stream, conn.remotePeer.toString());
    await this.o.host.libp2p.handle(KV_PROTOCOL, this.o.limits ? this.o.limits.guard(this.self, KV_PROTOCOL, handler) : handler);
  }

  async stop(): Promise<void> {
    await this.o.host.libp2p.unhandle(KV_PROTOCOL).catch(() => {});
    for (const i of this.imported.values()) {
      clearTimeout(i.timer);
      this.o.sessions.release(i.tokens);
    }
    this.imported.clear();
  }

  /** The owner of an imported cache waiting to be resumed (undefined: none here). */
  ownerOf(sessionId: string): string | undefined {
    return this.imported.get(sessionId)?.owner;
  }

  /** A session is about to resume from this import: hands back its reservation (returns the tokens). */
  releaseImport(sessionId: string): number {
    const i = this.imported.get(sessionId);
    if (!i) return 0;
    const n = i.tokens;
    this.o.sessions.release(n);
    i.tokens = 0;
    return n;
  }

  /** The resuming session was refused: the import takes its reservation back. */
  keepImport(sessionId: string, tokens: number): void {
    const i = this.imported.get(sessionId);
    if (i && this.o.sessions.reserve(tokens)) i.tokens = tokens;
  }

  /**
   * Hand every session's KV cache to a node serving the same layers, then wait (bounded) for
   * the gateways to move their routes. Each session's step in flight finishes first: the
   * hand-over is queued behind it on the session's chain; later steps get a 'draining' error
   * naming the replacement.
   */
  async drain(opts: { waitMs?: number } = {}): Promise<void> {
    if (this.leavingNow) return;
    this.leavingNow = true;
    const live = this.o.sessions.live();
    if (!live.length) return;
    const r = this.o.stage.range;
    let adverts: Promise<Spare[]> | undefined;
    const fromAdverts = () =>
      (adverts ??= findAdverts(this.o.host, this.o.modelId, { timeoutMs: 2000 }).then(
        (as) => as.filter((a) => a.start === r.start && a.end === r.end && a.peerId !== this.self),
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
    while (Date.now() < until && this.o.sessions.live().some((s) => s.handedTo)) await new Promise((res) => setTimeout(res, 20));
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
            await this.send(to, s.id, st, s.open);
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

  private async send(to: Spare, sessionId: string, st: SessionState, invitation: OpenHeader): Promise<void> {
    const signal = AbortSignal.timeout(10_000);
    await this.o.host.dial(to.peerId, to.addrs, signal);
    const stream = await this.o.host.libp2p.dialProtocol(parsePeerId(to.peerId), KV_PROTOCOL, { signal });
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
          header: {
            sessionId,
            modelId: this.o.modelId,
            start: r.start,
            end: r.end,
            length: st.length,
            layer: r.start + i,
            kvDim,
            ...(i === 0 ? { open: invitation } : {}), // the owner's signed OPEN: the invitation
          },
          payload,
        });
      }
      await acked;
    } finally {
      clearTimeout(timer);
      void ch.close();
    }
  }

  /** Why `open` does not invite this node to take `sessionId` from `remote` (undefined: it does). */
  private checkInvitation(open: OpenHeader | undefined, sessionId: string, remote: string): string | undefined {
    if (!open) return "a KV hand-over must present the session owner's signed OPEN";
    const bad = checkOpenSignature(open);
    if (bad) return bad;
    const r = this.o.stage.range;
    const sameLayers = (h: { peerId: string; start: number; end: number }, peerId: string) =>
      h.peerId === peerId && h.start === r.start && h.end === r.end;
    if (open.sessionId !== sessionId) return 'the signed OPEN is for another session';
    if (!open.route.some((h) => sameLayers(h, remote))) return "the sender does not serve these layers in the owner's route";
    const spares = hopSchema.array().safeParse(open.spares);
    if (!spares.success || !spares.data.some((h) => sameLayers(h, this.self))) return 'the session owner did not name this node as a spare';
    return undefined;
  }

  /** Receive one session's KV cache from a draining node; check the invitation, reserve, import. */
  private receive(stream: Stream, remote: string): void {
    const layers = new Map<number, { k: Float32Array; v: Float32Array }>();
    let first: (KvHeader & { owner: string }) | undefined;
    let reserved = 0;
    const { stage, sessions } = this.o;
    const r = stage.range;
    const kvDim = stage.config.nKvHeads * stage.config.headDim;
    const giveBack = () => {
      sessions.release(reserved);
      reserved = 0;
    };
    const ch: Channel = new Channel(
      stream,
      remote,
      this.self,
      {
        onMessage: async (m) => {
          if (m.type === MsgType.ERROR) return; // never answer an error with an error
          if (m.type !== MsgType.KV) return void ch.sendError('bad_message', `expected KV, got ${MsgType[m.type]}`);
          const h = m.header;
          const bad = (code: ErrorCode, reason: string) => {
            giveBack();
            layers.clear();
            void ch.sendError(code, reason, { sessionId: h.sessionId }).then(() => ch.close());
          };
          if (h.modelId !== this.o.modelId) return bad('wrong_model', `this node serves model ${this.o.modelId}, not ${h.modelId}`);
          if (h.start !== r.start || h.end !== r.end)
            return bad('wrong_layers', `this node serves layers ${r.start}:${r.end}, KV is for ${h.start}:${h.end}`);
          if (h.kvDim !== kvDim || h.layer < r.start || h.layer >= r.end)
            return bad('bad_message', `KV layer ${h.layer} × ${h.kvDim} does not fit layers ${r.start}:${r.end} × ${kvDim}`);
          if (first && (h.sessionId !== first.sessionId || h.length !== first.length))
            return bad('bad_message', 'KV messages of one stream must be for one session and length');
          if (!stage.importSession) return bad('engine', `engine ${stage.profile} cannot import KV caches`);
          if (!first) {
            const denied = this.checkInvitation(h.open, h.sessionId, remote);
            if (denied) return bad('forbidden', denied);
            if (sessions.has(h.sessionId) || this.imported.has(h.sessionId))
              return bad('bad_message', `session ${h.sessionId} is already held here`);
            if (this.leavingNow) return bad('busy', `node ${this.self} is leaving`);
            // checked before anything is reserved: a cache no session could have, or over its owner's share
            const ctx = stage.config.contextLength;
            if (h.length < 1 || h.length > ctx) return bad('bad_message', `KV length ${h.length} is not in 1..${ctx} (the context length)`);
            const owner = h.open!.reply.peerId;
            const overShare = this.o.limits?.wouldRefuse(owner, sessions.allocated(h.length), sessions.kvBudgetTokens);
            if (overShare) return bad('limit', overShare);
            // reserved before any bytes are kept
            if (!sessions.reserve(h.length))
              return bad('busy', `KV memory full: ${sessions.freeKvTokens} tokens free, session has ${h.length}`);
            reserved = h.length;
            first = { ...h, owner: h.open!.reply.peerId };
          }
          const n = h.length * kvDim;
          let kv: Float32Array;
          try {
            kv = decodeTensor(m.payload, 'f32', 2 * n);
          } catch (e) {
            return bad('bad_message', (e as Error).message);
          }
          // a poisoned cache would have this node sign non-finite outputs that no audit reproduces
          if (!allFinite(kv)) return bad('bad_message', `KV layer ${h.layer} holds a non-finite value`);
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
          const sid = h.sessionId;
          const timer = setTimeout(() => {
            const i = this.imported.get(sid);
            this.imported.delete(sid);
            if (i) sessions.release(i.tokens);
            if (!sessions.has(sid)) stage.closeSession(sid);
          }, IMPORT_TTL_MS);
          timer.unref?.();
          this.imported.set(sid, { timer, owner: first.owner, tokens: reserved });
          reserved = 0; // the import holds it now
          this.o.log?.info({ session: sid, from: remote, tokens: h.length }, 'session KV imported');
          void ch.send({ type: MsgType.KV_ACK, header: { sessionId: sid, length: h.length } }).catch(() => {});
        },
        onClose: () => giveBack(),
      },
      // one KV message carries one layer's K and V for the whole context; nothing larger is buffered
      { maxMessageBytes: 2 * stage.config.contextLength * kvDim * 4 + 64 * 1024, idleMs: 30_000 },
    );
  }

  /** An OPEN naming `resumeFrom`: start the new session from that session's KV cache. */
  async resume(h: OpenHeader): Promise<void> {
    const from = h.resumeFrom;
    if (typeof from !== 'string' || from === h.sessionId) return;
    const { stage } = this.o;
    try {
      const st = await stage.exportSession?.(from);
      if (st && stage.importSession) await stage.importSession(h.sessionId, st);
    } catch (e) {
      // the route then finds the session short and falls back to a replay
      this.o.log?.warn({ session: h.sessionId, from, err: (e as Error).message }, 'cannot resume session');
    }
    const i = this.imported.get(from);
    if (i !== undefined) {
      // a hand-over copy is used once: the resumed session owns the cache (and its reservation) now
      clearTimeout(i.timer);
      this.o.sessions.release(i.tokens);
      this.imported.delete(from);
      if (!this.o.sessions.has(from)) stage.closeSession(from);
    }
  }
}
