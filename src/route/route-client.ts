// The gateway's end of the activation protocol: opens routes (RouteStage) from one libp2p host
// and receives their results. The last hop of every route dials back on RESULT_PROTOCOL; the
// client registers that handler once, at start, and hands each result stream to the route whose
// session it names — only if it comes from that route's last hop and starts with OPENED. A peer
// that is no route's last hop gets no stream at all; the others get one per route ending there.

import type { Stream, Connection } from '@libp2p/interface';
import { Channel, type ChannelOptions } from '../p2p/channel.js';
import type { OdsiHost } from '../p2p/host.js';
import { StreamPool, type StreamPoolView } from '../p2p/stream-pool.js';
import { ACT_PROTOCOL, MAX_SESSION_STREAMS, MsgType, RESULT_PROTOCOL, encodeMessage, type Message } from '../protocol/messages.js';
import { RouteError, RouteStage, type OpenRouteOptions, type ResultSink } from './route-stage.js';

export class RouteClient {
  /** open routes of this host, by session id */
  private readonly sinks = new Map<string, ResultSink>();
  /** open result streams per remote peer */
  private readonly streams = new Map<string, number>();

  /** activation streams to first hops, with spares negotiated ahead (stream-pool.ts) */
  private readonly actStreams: StreamPool;

  private constructor(
    readonly host: OdsiHost,
    private readonly limits: ChannelOptions,
    spares: number | undefined,
  ) {
    this.actStreams = new StreamPool({
      spares,
      libp2p: host.libp2p,
      protocol: ACT_PROTOCOL,
      maxOutboundStreams: MAX_SESSION_STREAMS,
    });
  }

  /**
   * Registers the result handler on `host` (one RouteClient per host). Anyone may dial it, so a
   * result stream buffers at most `maxResultBytes` of one message (the gateway: a whole
   * context's rows) and is closed after `idleMs` until it is bound to one of this host's routes.
   * `streamSpares`: negotiated activation streams kept ready per first hop just used (default 1; 0: none).
   */
  static async start(host: OdsiHost, o: { maxResultBytes?: number; idleMs?: number; streamSpares?: number } = {}): Promise<RouteClient> {
    const c = new RouteClient(host, { maxMessageBytes: o.maxResultBytes, idleMs: o.idleMs ?? 30_000 }, o.streamSpares);
    await host.libp2p.handle(RESULT_PROTOCOL, (stream, conn) => c.onResultStream(stream, conn), {
      maxInboundStreams: MAX_SESSION_STREAMS,
      maxOutboundStreams: MAX_SESSION_STREAMS,
    });
    return c;
  }

  /** the activation streams' pool (to first hops), read-only: its counters, and the spares ready to a peer */
  get actStreamPool(): StreamPoolView {
    return this.actStreams;
  }

  async stop(): Promise<void> {
    this.actStreams.close();
    await this.host.libp2p.unhandle(RESULT_PROTOCOL).catch(() => undefined);
  }

  /** Open a session along `opts.hops`; resolves once the last hop reported the chain is up. */
  async open(opts: OpenRouteOptions): Promise<RouteStage> {
    if (!opts.hops.length) throw new RouteError('route has no hops', 'bad_reply');
    for (let i = 1; i < opts.hops.length; i++) {
      if (opts.hops[i]!.start !== opts.hops[i - 1]!.end)
        throw new RouteError(`route has a gap or overlap between hop ${i - 1} and hop ${i}`, 'bad_reply');
    }
    if (this.sinks.has(opts.sessionId)) throw new RouteError(`session ${opts.sessionId} is already open on this host`, 'bad_reply');
    const stage = new RouteStage(this.host, opts, this.sinks, this.actStreams);
    try {
      await stage.open();
    } catch (e) {
      stage.teardown();
      throw e;
    }
    return stage;
  }

  /** result streams a peer may hold open: one per open route ending at it, plus this many (a route re-opened on it) */
  static readonly STREAM_SLACK = 2;

  /** open routes of this host whose last hop is `peer` */
  private routesEndingAt(peer: string): number {
    let n = 0;
    for (const s of this.sinks.values()) if (s.lastPeer === peer) n++;
    return n;
  }

  /**
   * A result stream from `remote`. Only the last hop of one of this host's open routes may open
   * one, at most one per such route (+ STREAM_SLACK); it is bound by its first message, an
   * OPENED of a session whose route ends at `remote`, and then carries that session only.
   * Refusals and bad messages are answered without detail (which sessions exist is not told).
   */
  private onResultStream(stream: Stream, conn: Connection): void {
    const remote = conn.remotePeer.toString();
    const expected = this.routesEndingAt(remote);
    const open = this.streams.get(remote) ?? 0;
    if (expected === 0 || open >= expected + RouteClient.STREAM_SLACK) {
      const code = expected === 0 ? 'forbidden' : 'limit';
      const refusal = { type: MsgType.ERROR, header: { code, reason: 'result stream refused', peerId: this.host.peerId } } as Message;
      try {
        for (const f of encodeMessage(refusal)) stream.send(f);
        void stream.close({ signal: AbortSignal.timeout(1000) }).catch(() => undefined);
      } finally {
        // a half-closed stream is not left to the peer: it is reset once the refusal went out
        setTimeout(() => stream.abort(new Error('result stream refused')), 200).unref?.();
      }
      return;
    }
    this.streams.set(remote, open + 1);
    stream.addEventListener('close', () => {
      const n = (this.streams.get(remote) ?? 1) - 1;
      if (n <= 0) this.streams.delete(remote);
      else this.streams.set(remote, n);
    });
    let sink: ResultSink | undefined;
    let bound: string | undefined;
    const ch: Channel = new Channel(
      stream,
      remote,
      this.host.peerId,
      {
        onMessage: (msg) => {
          const sid = (msg.header as { sessionId?: string }).sessionId;
          if (msg.type === MsgType.ERROR && !sink) return void ch.close(); // never answer an error with an error
          if (!sink) {
            const s = sid ? this.sinks.get(sid) : undefined;
            if (msg.type !== MsgType.OPENED || !s || s.lastPeer !== remote) {
              void ch.sendError('unknown_session', 'no such route').then(() => ch.close());
              return;
            }
            sink = s;
            bound = sid;
            s.onResultChannel(ch);
          } else if (sid !== bound) {
            // a bound stream carries its own session only
            if (msg.type !== MsgType.ERROR) void ch.sendError('unknown_session', 'no such route');
            return;
          }
          sink.onMessage(msg);
        },
        onMessageError: (e) => {
          if (e.msgType !== MsgType.ERROR) void ch.sendError('bad_message', 'bad message');
        },
        onClose: (err) => sink?.onResultClosed(err),
      },
      { ...this.limits, keepAlive: () => sink !== undefined },
    );
  }
}
