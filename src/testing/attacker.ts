// A hostile libp2p peer for tests and the hostile-peer soak (bench/hostile-soak.ts): its own
// host and key, speaking the node protocols as an attacker would. Every attack is bounded in
// count and time by its arguments and reports what the node answered (refusal codes, closed
// streams), never throws for a refusal. Only tests, benchmarks and the CLI import src/testing.

import { randomBytes, randomUUID } from 'node:crypto';
import type { Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../identity/identity.js';
import { createHost, type OdsiHost } from '../p2p/host.js';
import { OPEN_TTL_MS, signOpen, type OpenToSign } from '../protocol/open-signature.js';
import { Channel } from '../p2p/channel.js';
import { FLAG_MORE, FRAME_MAGIC, FRAME_VERSION, PREAMBLE_BYTES, encodeFrame } from '../protocol/frame.js';
import { ACT_PROTOCOL, MAX_SESSION_STREAMS, MsgType, RESULT_PROTOCOL, type Message } from '../protocol/messages.js';
import { AUDIT_EXEC_PROTOCOL, readAuditMessage, sendAuditMessage } from '../protocol/audit-messages.js';

/** A node as the attacker sees it (its advert's fields). */
export interface AttackTarget {
  peerId: string;
  addrs: string[];
  start: number;
  end: number;
}

export interface AttackerOptions {
  modelId: string;
  /** the model's hidden size */
  hidden: number;
}

/** What the node answered to one attack: how often each ERROR code came back, and how it went. */
export interface AttackReport {
  attack: string;
  /** attempts made */
  tried: number;
  /** attempts the node accepted (sessions opened, streams kept, requests served) */
  accepted: number;
  /** ERROR codes (or refusal texts) the node answered, counted */
  refusals: Record<string, number>;
  /** streams the node closed or reset */
  closedByNode: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const report = (attack: string): AttackReport => ({ attack, tried: 0, accepted: 0, refusals: {}, closedByNode: 0 });
const count = (r: AttackReport, code: string) => (r.refusals[code] = (r.refusals[code] ?? 0) + 1);

export class Attacker {
  /** streams and channels this attacker holds open, closed by stop() */
  private readonly held: { close(): void }[] = [];
  /** sessions of this attacker waiting for OPENED on a result stream */
  private readonly opening = new Map<string, () => void>();

  private constructor(
    readonly host: OdsiHost,
    private readonly o: AttackerOptions,
  ) {}

  static async start(o: AttackerOptions): Promise<Attacker> {
    const host = await createHost({ identity: generateIdentity() });
    const a = new Attacker(host, o);
    // as a session's reply peer: accept result streams and hold them, ignoring RESULTs
    await host.libp2p.handle(
      RESULT_PROTOCOL,
      (stream, conn) => {
        const ch = new Channel(stream, conn.remotePeer.toString(), host.peerId, {
          onMessage: (m) => {
            if (m.type === MsgType.OPENED) a.opening.get(m.header.sessionId)?.();
          },
        });
        a.held.push({ close: () => ch.abort(new Error('attacker leaving')) });
      },
      { maxInboundStreams: MAX_SESSION_STREAMS },
    );
    return a;
  }

  get peerId(): string {
    return this.host.peerId;
  }

  private async stream(t: AttackTarget, protocol: string): Promise<Stream> {
    const signal = AbortSignal.timeout(10_000);
    await this.host.dial(t.peerId, t.addrs, signal);
    return this.host.libp2p.dialProtocol(peerIdFromString(t.peerId), protocol, { signal, maxOutboundStreams: MAX_SESSION_STREAMS });
  }

  /** A channel on a fresh activation stream; ERROR codes go to `onError`, closes are counted. */
  private async channel(t: AttackTarget, r: AttackReport, onError?: (code: string) => void): Promise<Channel> {
    const s = await this.stream(t, ACT_PROTOCOL);
    const ch: Channel = new Channel(s, t.peerId, this.peerId, {
      onMessage: (m) => {
        if (m.type !== MsgType.ERROR) return;
        count(r, m.header.code);
        onError?.(m.header.code);
      },
      onClose: () => r.closedByNode++,
    });
    this.held.push({ close: () => ch.abort(new Error('attacker leaving')) });
    return ch;
  }

  /** An OPEN the attacker signs as its own gateway: valid, so only per-peer limits stop it. */
  private openHeader(t: AttackTarget, sessionId: string, maxTokens: number): Message {
    const issuedAt = Date.now();
    const body: OpenToSign = {
      sessionId,
      modelId: this.o.modelId,
      route: [{ peerId: t.peerId, addrs: t.addrs, start: t.start, end: t.end }],
      reply: { peerId: this.peerId, addrs: this.host.addrs() },
      dtype: 'f32',
      hidden: this.o.hidden,
      maxTokens,
      issuedAt,
      expiresAt: issuedAt + OPEN_TTL_MS,
    };
    return { type: MsgType.OPEN, header: { ...body, hop: 0, signature: signOpen(this.host.identity, body) } } as Message;
  }

  /** Opens up to n sessions (one stream each) reserving maxTokens KV tokens, and holds them. */
  async openSessions(t: AttackTarget, n: number, maxTokens: number, timeoutMs = 10_000): Promise<AttackReport & { sessions: string[] }> {
    const r = { ...report('open sessions'), sessions: [] as string[] };
    for (let i = 0; i < n; i++) {
      r.tried++;
      const sessionId = `attack-${randomUUID()}`;
      const outcome = await new Promise<'opened' | 'refused' | 'timeout'>((resolve) => {
        const timer = setTimeout(() => resolve('timeout'), timeoutMs);
        const done = (v: 'opened' | 'refused') => {
          clearTimeout(timer);
          resolve(v);
        };
        this.opening.set(sessionId, () => done('opened'));
        this.channel(t, r, () => done('refused')).then(
          (ch) => ch.send(this.openHeader(t, sessionId, maxTokens)).catch(() => done('refused')),
          () => done('refused'),
        );
      });
      this.opening.delete(sessionId);
      if (outcome === 'opened') {
        r.accepted++;
        r.sessions.push(sessionId);
      } else if (outcome === 'timeout') count(r, 'no answer');
    }
    return r;
  }

  /** Opens n activation streams and sends nothing on them; after holdMs, counts those the node closed. */
  async holdIdleStreams(t: AttackTarget, n: number, holdMs: number): Promise<AttackReport> {
    const r = report('idle streams');
    for (let i = 0; i < n; i++) {
      r.tried++;
      try {
        await this.channel(t, r);
        r.accepted++;
      } catch (e) {
        count(r, `dial: ${(e as Error).message.slice(0, 60)}`);
      }
    }
    await sleep(holdMs);
    return r;
  }

  /** Opens n streams of `protocol` at once (a bulk open): how many the node let through. */
  async openStreamsBulk(t: AttackTarget, n: number, protocol = ACT_PROTOCOL, settleMs = 1000): Promise<AttackReport> {
    const r = report(`bulk streams ${protocol}`);
    const streams = await Promise.allSettled(Array.from({ length: n }, () => this.stream(t, protocol)));
    /** streams the node refused with `limit`, and those it ended otherwise (its side closed, a reset, the idle timeout) */
    const refused = new Set<Stream>();
    const ended = new Set<Stream>();
    for (const s of streams) {
      r.tried++;
      if (s.status === 'rejected') {
        count(r, 'refused at open');
        continue;
      }
      const st = s.value;
      this.held.push({ close: () => st.abort(new Error('attacker leaving')) });
      st.addEventListener('message', (evt) => {
        const d = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray();
        const text = new TextDecoder().decode(d);
        if (!text.includes('"code":"limit"')) return;
        count(r, 'limit');
        if (text.includes('faster than')) count(r, 'limit: open rate');
        refused.add(st);
      });
      st.addEventListener('remoteCloseWrite', () => ended.add(st));
      st.addEventListener('close', () => ended.add(st));
    }
    await sleep(settleMs);
    // accepted: not refused (a stream the node accepted may have been idle-closed since)
    for (const s of streams) {
      if (s.status !== 'fulfilled' || refused.has(s.value)) continue;
      r.accepted++;
      if (ended.has(s.value)) r.closedByNode++;
    }
    return r;
  }

  /**
   * Starts a STEP message and keeps sending MORE continuation frames of frameBytes each, never
   * finishing it, up to totalBytes or until the node closes the stream.
   */
  async unfinishedMessage(t: AttackTarget, totalBytes: number, frameBytes = 64 * 1024): Promise<AttackReport> {
    const r = report('unfinished chunked message');
    r.tried++;
    const ch = await this.channel(t, r);
    const header = new TextEncoder().encode(JSON.stringify({ sessionId: 'attack-unfinished', requestId: 0, step: 0, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, this.o.hidden], timeline: [] }));
    const body = new Uint8Array(frameBytes);
    for (let sent = 0, first = true; sent < totalBytes && ch.isOpen; sent += frameBytes, first = false) {
      const f = encodeFrame({ type: MsgType.STEP, flags: FLAG_MORE, header: first ? header : new Uint8Array(0), payload: body });
      try {
        if (!ch.stream.send(f)) await ch.stream.onDrain({ signal: AbortSignal.timeout(2000) });
      } catch {
        break;
      }
    }
    await sleep(300);
    if (ch.isOpen) r.accepted++;
    return r;
  }

  /** A frame whose preamble announces a payload of `length` bytes (default: 4 GiB − 1), then a little of it. */
  async oversizeLength(t: AttackTarget, length = 0xffffffff): Promise<AttackReport> {
    const r = report('oversize length');
    r.tried++;
    const ch = await this.channel(t, r);
    const pre = new Uint8Array(PREAMBLE_BYTES + 16);
    const dv = new DataView(pre.buffer);
    pre.set(FRAME_MAGIC, 0);
    pre[4] = FRAME_VERSION;
    pre[5] = MsgType.STEP;
    dv.setUint32(8, 2, true);
    dv.setUint32(12, length, true);
    ch.stream.send(pre);
    await sleep(300);
    if (ch.isOpen) r.accepted++;
    return r;
  }

  /** n STEP messages on one stream without an open session (or on `sessionId`), sent as fast as the stream takes them. */
  async floodSteps(t: AttackTarget, n: number, sessionId = 'attack-no-session', timeoutMs = 10_000): Promise<AttackReport> {
    const r = report('step flood');
    const ch = await this.channel(t, r);
    const payload = new Uint8Array(this.o.hidden * 4);
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < n && ch.isOpen && Date.now() < deadline; i++) {
      r.tried++;
      const header = { sessionId, requestId: i, step: i, pos: i, nTokens: 1, dtype: 'f32', shape: [1, this.o.hidden], timeline: [] };
      await ch.send({ type: MsgType.STEP, header, payload } as Message).catch(() => undefined);
    }
    await sleep(200);
    return r;
  }

  /** n re-execution requests (one stream each, `parallel` at a time) for a prefix of `tokens` random inputs. */
  async reexecRequests(t: AttackTarget, n: number, tokens: number, parallel = 4, timeoutMs = 10_000): Promise<AttackReport> {
    const r = report('re-execution requests');
    const one = async () => {
      r.tried++;
      try {
        const s = await this.stream(t, AUDIT_EXEC_PROTOCOL);
        const header = {
          routeSessionId: `attack-${randomUUID()}`,
          step: 0,
          layers: [t.start, t.end],
          modelId: this.o.modelId,
          auditedReceiptHash: `0x${'00'.repeat(32)}`,
          steps: [{ step: 0, pos: 0, nTokens: tokens, dtype: 'f32', bytes: tokens * this.o.hidden * 4 }],
        };
        await sendAuditMessage(s, header, new Uint8Array(randomBytes(tokens * this.o.hidden * 4)));
        const reply = await readAuditMessage(s, timeoutMs);
        if (reply.header.ok === true) r.accepted++;
        else count(r, String(reply.header.reason ?? 'refused').slice(0, 48));
        s.abort(new Error('done'));
      } catch (e) {
        count(r, (e as Error).message.slice(0, 48));
      }
    };
    for (let i = 0; i < n; i += parallel) await Promise.all(Array.from({ length: Math.min(parallel, n - i) }, one));
    return r;
  }

  /** Drops every stream and the host: the attacker leaves. */
  async stop(): Promise<void> {
    for (const h of this.held.splice(0)) h.close();
    await this.host.stop();
  }
}
