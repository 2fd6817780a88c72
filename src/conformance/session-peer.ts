// The conformance kit's side of the wire: one libp2p host playing a gateway (and, for the
// custody rules, the hop before the target), with a result-stream endpoint that sorts what the
// target sends back by session id, and raw act streams whose replies are collected. Everything
// is bounded in time: every wait names what it waits for and gives up after its timeout.

import { peerIdFromString } from '@libp2p/peer-id';
import type { Identity } from '../identity/identity.js';
import { Channel } from '../p2p/channel.js';
import { createHost, type OdsiHost } from '../p2p/host.js';
import { ACT_PROTOCOL, MsgType, RESULT_PROTOCOL, encodeTensor, type Dtype, type Message, type OpenHeader, type StepHeader } from '../protocol/messages.js';
import { OPEN_TTL_MS, signOpen, type OpenToSign } from '../protocol/open-signature.js';

/** A failed expectation of the kit: the rule it belongs to fails with this text. */
export class RuleFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RuleFailure';
  }
}

/** Polls `get` every 10 ms until it yields a value; throws RuleFailure naming `what` after `ms`. */
export async function waitFor<T>(what: string, get: () => T | undefined, ms: number): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new RuleFailure(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Polls `cond` every 10 ms until it holds; throws RuleFailure naming `what` after `ms`. */
export function waitUntil(what: string, cond: () => boolean, ms: number): Promise<void> {
  return waitFor(what, () => (cond() ? true : undefined), ms).then(() => undefined);
}

/** Resolves after `ms` (used to check that nothing arrives). */
export const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One stream to the target with everything it answered. */
export interface RawStream {
  ch: Channel;
  got: Message[];
  closed(): boolean;
  /** the first message matching `pred` (searching from the start), within ms */
  next(what: string, pred: (m: Message) => boolean, ms?: number): Promise<Message>;
}

/** What an OPEN must name; the rest defaults (f32, 64 tokens, valid for OPEN_TTL_MS from now, hop 0). */
export type OpenFields = Pick<OpenToSign, 'sessionId' | 'modelId' | 'route' | 'hidden'> & Partial<Omit<OpenToSign, 'reply'>> & { hop?: number };

/** A deterministic input of `nTokens` rows of `dim` (distinct per seed), encoded as `dtype`. */
export function stepInput(nTokens: number, dim: number, seed: number, dtype: Dtype = 'f32'): Uint8Array {
  const x = new Float32Array(nTokens * dim);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(seed * 7.31 + i * 0.37) * 0.5;
  return encodeTensor(x, dtype);
}

/** A STEP of session `sessionId` carrying stepInput(…, seed) (default seed: step + 1; one token at position 0). */
export function stepMessage(o: {
  sessionId: string;
  step: number;
  dim: number;
  seed?: number;
  requestId?: number;
  pos?: number;
  nTokens?: number;
  dtype?: Dtype;
}): Message {
  const [nTokens, dtype] = [o.nTokens ?? 1, o.dtype ?? 'f32'];
  const header: StepHeader = {
    sessionId: o.sessionId,
    requestId: o.requestId ?? 1000 + o.step,
    step: o.step,
    pos: o.pos ?? 0,
    nTokens,
    dtype,
    shape: [nTokens, o.dim],
    timeline: [],
  };
  return { type: MsgType.STEP, header, payload: stepInput(nTokens, o.dim, o.seed ?? o.step + 1, dtype) };
}

/** What arrived on result streams for one session id. */
interface Inbox {
  got: Message[];
  closed: boolean;
}

export class SessionPeer {
  private readonly inboxes = new Map<string, Inbox>();

  private constructor(
    readonly host: OdsiHost,
    readonly waitMs: number,
  ) {}

  static async start(identity: Identity, waitMs: number): Promise<SessionPeer> {
    const host = await createHost({ identity });
    const peer = new SessionPeer(host, waitMs);
    await host.libp2p.handle(
      RESULT_PROTOCOL,
      (stream, conn) => {
        const seen = new Set<string>();
        new Channel(stream, conn.remotePeer.toString(), host.peerId, {
          onMessage: (m) => {
            const sid = (m.header as { sessionId?: unknown }).sessionId;
            if (typeof sid !== 'string') return;
            seen.add(sid);
            peer.inbox(sid).got.push(m);
          },
          onClose: () => {
            for (const sid of seen) peer.inbox(sid).closed = true;
          },
        });
      },
      { maxInboundStreams: 1024, maxOutboundStreams: 1024 },
    );
    return peer;
  }

  get peerId(): string {
    return this.host.peerId;
  }
  get identity(): Identity {
    return this.host.identity;
  }

  private inbox(sid: string): Inbox {
    let i = this.inboxes.get(sid);
    if (!i) this.inboxes.set(sid, (i = { got: [], closed: false }));
    return i;
  }

  /** Messages that arrived on result streams for session `sid`. */
  results(sid: string): Message[] {
    return this.inbox(sid).got;
  }
  resultClosed(sid: string): boolean {
    return this.inbox(sid).closed;
  }

  /** The first result-stream message of `sid` matching `pred`, within the wait limit. */
  result(sid: string, what: string, pred: (m: Message) => boolean, ms = this.waitMs): Promise<Message> {
    return waitFor(what, () => this.inbox(sid).got.find(pred), ms);
  }

  /** An OPEN signed by this peer as the session's gateway (results come back here). */
  open(fields: OpenFields): OpenHeader {
    const issuedAt = Date.now();
    const { hop, ...rest } = fields;
    const body: OpenToSign = {
      reply: { peerId: this.peerId, addrs: this.host.addrs() },
      dtype: 'f32',
      maxTokens: 64,
      issuedAt,
      expiresAt: issuedAt + OPEN_TTL_MS,
      ...rest,
    };
    return { ...body, hop: hop ?? 0, signature: signOpen(this.identity, body) };
  }

  /** Opens a stream of `protocol` to the target and collects its replies. */
  async stream(target: { peerId: string; addrs: string[] }, protocol = ACT_PROTOCOL): Promise<RawStream> {
    await this.host.dial(target.peerId, target.addrs, AbortSignal.timeout(this.waitMs));
    const stream = await this.host.libp2p.dialProtocol(peerIdFromString(target.peerId), protocol, {
      signal: AbortSignal.timeout(this.waitMs),
      maxOutboundStreams: 1024,
    });
    const got: Message[] = [];
    let isClosed = false;
    const ch = new Channel(stream, target.peerId, this.host.peerId, {
      onMessage: (m) => got.push(m),
      onMessageError: () => {},
      onClose: () => (isClosed = true),
    });
    const waitMs = this.waitMs;
    return {
      ch,
      got,
      closed: () => isClosed,
      next: (what, pred, ms = waitMs) => waitFor(what, () => got.find(pred), ms),
    };
  }

  async stop(): Promise<void> {
    await this.host.stop();
  }
}
