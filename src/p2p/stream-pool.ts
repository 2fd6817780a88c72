// Spare streams, already negotiated, for a protocol that opens one long-lived stream per
// session (the activation and result streams). Opening a libp2p stream costs one round trip
// of protocol negotiation (multistream-select: the dialer waits for the protocol's echo before
// it may write), so a session's route, which opens one stream per link, would pay one RTT per
// link before its OPEN could go on: on 20-ms links, 4 × 40 ms of a route's ~300 ms open
// (bench/wan). The pool keeps `spares` negotiated streams to each peer it has just used and hands
// one out on the next take(): that open costs no round trip.
//
// Bounds, towards the remote (which cannot tell a spare from a slow opener): a spare is opened
// only to a peer this side just opened a session stream to itself (after a take(), never ahead of
// a first use), at most `spares` per peer and `maxPeers` peers at once (the least recently used
// peer's spares are closed beyond), and each is closed after `maxIdleMs` unused — below the
// remote's own idle limit for streams that carry no message (nodes: --stream-idle-timeout,
// 30 s by default; gateways: 30 s for an unbound result stream), so the remote never has to close
// one. A spare the remote closed, reset or wrote on (it only does that to close it) is dropped
// (at once, or at take(), which then negotiates a fresh stream as if there had been none). A
// remote whose idle limit is shorter than `maxIdleMs` (a node run with a short
// --stream-idle-timeout) closes a spare under its holder, and a session OPEN sent on it as the
// close crosses fails; so when a remote gives up on a silent spare of ours, the pool learns how
// long it waited, and that peer's spares from then on live half as long (at least
// MIN_SPARE_LIFE_MS).

import type { Stream } from '@libp2p/interface';
import type { Libp2p } from 'libp2p';
import { parsePeerId } from '../identity/peer-id.js';

export interface StreamPoolOptions {
  libp2p: Pick<Libp2p, 'dialProtocol'>;
  protocol: string;
  /** negotiated streams kept per peer after a take (0: none; every take negotiates) */
  spares: number;
  /** a spare unused this long is closed; keep it below the remote's idle limit for silent streams */
  maxIdleMs: number;
  /** peers holding spares at once (least recently used beyond: closed) */
  maxPeers: number;
  /** passed to dialProtocol (libp2p's bound on this protocol's outbound streams per connection) */
  maxOutboundStreams: number;
}

/** Spares by default: one per peer, closed after 20 s unused, for at most 64 peers. */
export const DEFAULT_STREAM_SPARES: Pick<StreamPoolOptions, 'spares' | 'maxIdleMs' | 'maxPeers'> = {
  spares: 1,
  maxIdleMs: 20_000,
  maxPeers: 64,
};

export interface StreamPoolStats {
  /** takes answered with a spare (no negotiation round trip) */
  spareTaken: number;
  /** takes that negotiated a stream */
  negotiated: number;
  /** spares dropped: closed, reset or written on by the remote (seen at once, or at take()) */
  spareDropped: number;
  /** spares closed unused (idle, evicted, or the pool closed) */
  spareExpired: number;
}

interface Spare {
  stream: Stream;
  timer: NodeJS.Timeout;
  /** when it became ready (performance.now()) */
  since: number;
  /** removes the listeners that watch for the remote giving up on it */
  watch: AbortController;
}

/** the shortest life a learned remote limit leaves a spare */
export const MIN_SPARE_LIFE_MS = 250;

interface PeerSpares {
  ready: Spare[];
  /** spares being negotiated */
  opening: number;
  /** the shortest time this peer let a silent spare of ours live before closing it (learned) */
  remoteIdleMs?: number;
}

/** what a pool's holder shows others (tests, metrics): its counters and the spares ready per peer, not take() */
export interface StreamPoolView {
  readonly stats: Readonly<StreamPoolStats>;
  ready(peerId: string): number;
}

export class StreamPool {
  readonly stats: StreamPoolStats = { spareTaken: 0, negotiated: 0, spareDropped: 0, spareExpired: 0 };
  /** peers with spares, least recently used first (Map keeps insertion order) */
  private readonly peers = new Map<string, PeerSpares>();
  private closed = false;

  readonly o: StreamPoolOptions;

  /** unset spares, maxIdleMs and maxPeers: DEFAULT_STREAM_SPARES */
  constructor(o: Omit<StreamPoolOptions, 'spares' | 'maxIdleMs' | 'maxPeers'> & Partial<StreamPoolOptions>) {
    const d = DEFAULT_STREAM_SPARES;
    this.o = { ...o, spares: o.spares ?? d.spares, maxIdleMs: o.maxIdleMs ?? d.maxIdleMs, maxPeers: o.maxPeers ?? d.maxPeers };
  }

  /**
   * A negotiated stream of the pool's protocol to `peerId`: a spare when one is ready (and still
   * open and silent), otherwise a fresh one (one negotiation round trip). Either way the peer's
   * spares are topped up in the background.
   */
  async take(peerId: string, signal: AbortSignal): Promise<Stream> {
    const p = this.peers.get(peerId);
    let stream: Stream | undefined;
    while (p?.ready.length && !stream) {
      const s = p.ready.shift()!;
      clearTimeout(s.timer);
      s.watch.abort();
      if (!usable(s.stream)) {
        this.stats.spareDropped++;
        s.stream.abort(new Error('spare stream no longer usable'));
      } else if (performance.now() - s.since >= this.lifeMs(p)) {
        // older than this peer lets a silent stream live (learned after the spare was made)
        this.stats.spareExpired++;
        closeQuietly(s.stream);
      } else stream = s.stream;
    }
    if (stream) this.stats.spareTaken++;
    else {
      stream = await this.o.libp2p.dialProtocol(parsePeerId(peerId), this.o.protocol, {
        signal,
        maxOutboundStreams: this.o.maxOutboundStreams,
      });
      this.stats.negotiated++;
    }
    this.refill(peerId);
    return stream;
  }

  /** Closes every spare; takes after this negotiate and keep no spares. */
  close(): void {
    this.closed = true;
    for (const peer of [...this.peers.keys()]) this.evict(peer);
  }

  /** spares ready per peer (tests, metrics) */
  ready(peerId: string): number {
    return this.peers.get(peerId)?.ready.length ?? 0;
  }

  private refill(peerId: string): void {
    if (this.closed || this.o.spares <= 0) return;
    const p = this.peers.get(peerId) ?? { ready: [], opening: 0 };
    // most recently used last; the least recently used peer beyond maxPeers gives up its spares
    this.peers.delete(peerId);
    this.peers.set(peerId, p);
    while (this.peers.size > this.o.maxPeers) this.evict(this.peers.keys().next().value!);
    while (p.ready.length + p.opening < this.o.spares) {
      p.opening++;
      this.o.libp2p
        .dialProtocol(parsePeerId(peerId), this.o.protocol, {
          signal: AbortSignal.timeout(this.o.maxIdleMs),
          maxOutboundStreams: this.o.maxOutboundStreams,
        })
        .then(
          (stream) => {
            p.opening--;
            // the pool closed, or the peer was evicted, while this one was being negotiated
            if (this.closed || this.peers.get(peerId) !== p) return void stream.abort(new Error('stream pool closed'));
            const spare: Spare = {
              stream,
              since: performance.now(),
              watch: new AbortController(),
              timer: setTimeout(() => this.expire(p, spare), this.lifeMs(p)),
            };
            spare.timer.unref?.();
            // the remote writes on a spare or closes its side only to give up on it: learn how long it waited
            const gaveUp = () => this.remoteGaveUp(p, spare, true);
            stream.addEventListener('message', gaveUp, { signal: spare.watch.signal });
            stream.addEventListener('remoteCloseWrite', gaveUp, { signal: spare.watch.signal });
            stream.addEventListener('close', () => this.remoteGaveUp(p, spare, false), { signal: spare.watch.signal });
            p.ready.push(spare);
          },
          () => void p.opening--, // the next take negotiates, as without a pool
        );
    }
  }

  /** how long a spare to this peer is kept: maxIdleMs, or half what the peer was seen to allow */
  private lifeMs(p: PeerSpares): number {
    if (p.remoteIdleMs === undefined) return this.o.maxIdleMs;
    return Math.min(this.o.maxIdleMs, Math.max(MIN_SPARE_LIFE_MS, p.remoteIdleMs / 2));
  }

  private expire(p: PeerSpares, spare: Spare): void {
    const i = p.ready.indexOf(spare);
    if (i < 0) return;
    p.ready.splice(i, 1);
    spare.watch.abort();
    this.stats.spareExpired++;
    closeQuietly(spare.stream);
  }

  /** A ready spare the remote wrote on, closed or reset: dropped; its age is that peer's idle limit (not for a reset, which may be the connection's end). */
  private remoteGaveUp(p: PeerSpares, spare: Spare, learn: boolean): void {
    const i = p.ready.indexOf(spare);
    if (i < 0) return;
    p.ready.splice(i, 1);
    clearTimeout(spare.timer);
    spare.watch.abort();
    if (learn) p.remoteIdleMs = Math.min(p.remoteIdleMs ?? Infinity, performance.now() - spare.since);
    this.stats.spareDropped++;
    spare.stream.abort(new Error('the remote gave up on this spare stream'));
  }

  private evict(peerId: string): void {
    const p = this.peers.get(peerId);
    if (!p) return;
    this.peers.delete(peerId);
    for (const s of p.ready.splice(0)) {
      clearTimeout(s.timer);
      s.watch.abort();
      this.stats.spareExpired++;
      closeQuietly(s.stream);
    }
  }
}

/** open both ways, and nothing arrived on it (a remote writes on a spare only to close it) */
function usable(s: Stream): boolean {
  return (
    s.status === 'open' &&
    s.writeStatus === 'writable' &&
    s.readStatus === 'readable' &&
    s.remoteWriteStatus === 'writable' &&
    s.readBufferLength === 0
  );
}

function closeQuietly(s: Stream): void {
  s.close({ signal: AbortSignal.timeout(2000) }).catch(() => s.abort(new Error('close timed out')));
}
