// The gateway's end of the activation protocol: opens routes (RouteStage) from one libp2p host
// and receives their results. The last hop of every route dials back on RESULT_PROTOCOL; the
// client registers that handler once, at start, and hands each result stream to the route whose
// session it names — only if it comes from that route's last hop and starts with OPENED.

import type { Stream, Connection } from '@libp2p/interface';
import { Channel, type ChannelOptions } from '../p2p/channel.js';
import type { OdsiHost } from '../p2p/host.js';
import { MAX_SESSION_STREAMS, MsgType, RESULT_PROTOCOL } from '../protocol/messages.js';
import { RouteError, RouteStage, type OpenRouteOptions, type ResultSink } from './route-stage.js';

export class RouteClient {
  /** open routes of this host, by session id */
  private readonly sinks = new Map<string, ResultSink>();

  private constructor(
    readonly host: OdsiHost,
    private readonly limits: ChannelOptions,
  ) {}

  /**
   * Registers the result handler on `host` (one RouteClient per host). Anyone may dial it, so a
   * result stream buffers at most `maxResultBytes` of one message (the gateway: a whole
   * context's rows) and is closed after `idleMs` until it is bound to one of this host's routes.
   */
  static async start(host: OdsiHost, o: { maxResultBytes?: number; idleMs?: number } = {}): Promise<RouteClient> {
    const c = new RouteClient(host, { maxMessageBytes: o.maxResultBytes, idleMs: o.idleMs ?? 30_000 });
    await host.libp2p.handle(RESULT_PROTOCOL, (stream, conn) => c.onResultStream(stream, conn), {
      maxInboundStreams: MAX_SESSION_STREAMS,
      maxOutboundStreams: MAX_SESSION_STREAMS,
    });
    return c;
  }

  async stop(): Promise<void> {
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
    const stage = new RouteStage(this.host, opts, this.sinks);
    try {
      await stage.open();
    } catch (e) {
      stage.teardown();
      throw e;
    }
    return stage;
  }

  private onResultStream(stream: Stream, conn: Connection): void {
    const remote = conn.remotePeer.toString();
    let sink: ResultSink | undefined;
    const ch: Channel = new Channel(
      stream,
      remote,
      this.host.peerId,
      {
        onMessage: (msg) => {
          if (!sink) {
            const sid = (msg.header as { sessionId?: string }).sessionId;
            const s = sid ? this.sinks.get(sid) : undefined;
            if (msg.type === MsgType.ERROR) return void ch.close(); // never answer an error with an error
            if (msg.type !== MsgType.OPENED || !s || s.lastPeer !== remote) {
              void ch
                .sendError('unknown_session', `no route for session ${sid ?? '?'} ends at ${remote}`, { sessionId: sid })
                .then(() => ch.close());
              return;
            }
            sink = s;
            s.onResultChannel(ch);
          }
          sink.onMessage(msg);
        },
        onClose: (err) => sink?.onResultClosed(err),
      },
      { ...this.limits, keepAlive: () => sink !== undefined },
    );
  }
}
