// A libp2p host for odsi: TCP + Noise + Yamux, identify, ping, and a private Kademlia DHT.
// The libp2p key is the participant's secp256k1 identity key, so peer id = identity.
// Settings follow shared/notes/network.md: private DHT protocol, passthrough address mapper
// (loopback/LAN addresses must survive), raised inbound-connection rate, explicit stream
// limits and read buffers large enough for ≤1 MiB frames plus slack. A remote peer may hold at
// most maxConnectionsPerPeer connections to this host (the connection gater refuses more).
// Per-message transport cost (bench/transport.ts): yamux grants window at half a window, not
// per data frame (yamux-window.ts), and a tick's socket writes leave in one writev (socket-writes.ts).

import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { noise } from '@libp2p/noise';
import { yamux } from '@libp2p/yamux';
import { identify } from '@libp2p/identify';
import { ping } from '@libp2p/ping';
import { kadDHT, passthroughMapper, removePublicAddressesMapper, type KadDHT, type Validators, type Selectors } from '@libp2p/kad-dht';
import { multiaddr } from '@multiformats/multiaddr';
import { parsePeerId } from '../identity/peer-id.js';
import type { PeerId } from '@libp2p/interface';
import type { Identity } from '../identity/identity.js';
import { dhtSelectors, dhtValidators } from './advert-record.js';
import { lazyWindowUpdatesMuxer } from './yamux-window.js';
import { corkedWritesEncrypter } from './socket-writes.js';

export const DHT_PROTOCOL = '/odsi/kad/1.0.0';
/** per-stream read buffer: a 1 MiB frame plus headers must fit with room for a few in flight */
export const STREAM_READ_BUFFER = 16 * 1024 * 1024;
/** connections one remote peer may hold to this host (libp2p normally needs one, two while dialling both ways) */
export const DEFAULT_MAX_CONNECTIONS_PER_PEER = 4;
/** connections from all peers together */
export const DEFAULT_MAX_CONNECTIONS = 500;

export interface HostOptions {
  identity: Identity;
  /** multiaddrs to listen on; default /ip4/127.0.0.1/tcp/0 */
  listen?: string[];
  /** multiaddrs (with /p2p/<id>) to dial at start; the DHT fills its table from them */
  bootstrap?: string[];
  /** 'passthrough' keeps every address (loopback tests, LANs); 'lan' drops public ones */
  addressMapper?: 'passthrough' | 'lan';
  /** connections one remote peer may hold (default DEFAULT_MAX_CONNECTIONS_PER_PEER) */
  maxConnectionsPerPeer?: number;
  /** connections from all peers together (default DEFAULT_MAX_CONNECTIONS) */
  maxConnections?: number;
  /**
   * when yamux grants more receive window: 'half-window' (default; go-yamux's rule, see
   * yamux-window.ts) or 'every-frame' (@libp2p/yamux's own: one update per data frame received)
   */
  windowUpdates?: 'half-window' | 'every-frame';
  /**
   * gather the socket writes of one tick into one writev (see socket-writes.ts); default true,
   * false writes every buffer with its own socket.write (libp2p's own behaviour)
   */
  corkWrites?: boolean;
}

type Services = { identify: unknown; ping: { ping(peer: unknown, opts?: unknown): Promise<number> }; dht: KadDHT };

export interface OdsiHost {
  libp2p: Libp2p<Services>;
  /** base58 peer id string */
  peerId: string;
  identity: Identity;
  /** listen addresses with /p2p/<peerId> appended */
  addrs(): string[];
  /** round-trip time to a peer in ms (dials if needed) */
  ping(peerId: string, opts?: { addrs?: string[]; signal?: AbortSignal }): Promise<number>;
  /** dial a peer by id, using the given addresses if not yet known */
  dial(peerId: string, addrs?: string[], signal?: AbortSignal): Promise<void>;
  stop(): Promise<void>;
}

export async function createHost(opts: HostOptions): Promise<OdsiHost> {
  const validators: Validators = dhtValidators;
  const selectors: Selectors = dhtSelectors;
  const perPeer = opts.maxConnectionsPerPeer ?? DEFAULT_MAX_CONNECTIONS_PER_PEER;
  // set once libp2p exists; the gater only runs for connections made after that
  let connectionsOf: (peer: PeerId) => number = () => 0;
  const muxer = yamux({
    maxInboundStreams: 4096,
    maxOutboundStreams: 4096,
    // streams a peer opens before the upgrade hands the connection its 'stream' listener are held
    // as "early" streams, and one over yamux's default 10 aborts the whole connection (every stream
    // reset). They can only come in the bytes read together with the handshake's last message (the
    // upgrade adds the listener in the same tick), which a dialer opening many streams at once sends
    // in one write (socket-writes.ts) or TCP joins on a busy receiver: bound them as any inbound
    // stream is (maxInboundStreams, then odsi's per-peer limits) instead
    maxEarlyStreams: 4096,
    streamOptions: { maxReadBufferLength: STREAM_READ_BUFFER },
  });
  const libp2p = await createLibp2p({
    privateKey: opts.identity.libp2pKey,
    addresses: { listen: opts.listen?.length ? opts.listen : ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [opts.corkWrites === false ? noise() : (components) => corkedWritesEncrypter(noise()(components))],
    streamMuxers: [opts.windowUpdates === 'every-frame' ? muxer : () => lazyWindowUpdatesMuxer(muxer())],
    connectionManager: {
      // many nodes behind one address (tests, NAT, one host running several nodes)
      inboundConnectionThreshold: 100,
      maxIncomingPendingConnections: 100,
      maxConnections: opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    },
    connectionGater: {
      // one peer cannot fill the connection table: refused once encrypted (its peer id is known)
      denyInboundEncryptedConnection: (peer: PeerId) => connectionsOf(peer) >= perPeer,
    },
    services: {
      identify: identify(),
      ping: ping({ maxInboundStreams: 64, maxOutboundStreams: 64 }),
      dht: kadDHT({
        protocol: DHT_PROTOCOL,
        clientMode: false,
        peerInfoMapper: opts.addressMapper === 'lan' ? removePublicAddressesMapper : passthroughMapper,
        validators,
        selectors,
        allowQueryWithZeroPeers: true,
        // a private swarm is small: fewer parallel query paths cost far less CPU (Noise dials)
        alpha: 3,
        disjointPaths: 2,
        initialQuerySelfInterval: 500,
        maxInboundStreams: 128,
        maxOutboundStreams: 128,
      }),
    },
  });
  connectionsOf = (peer) => libp2p.getConnections(peer).length;
  const self = libp2p.peerId.toString();
  const host: OdsiHost = {
    libp2p: libp2p as unknown as Libp2p<Services>,
    peerId: self,
    identity: opts.identity,
    addrs: () => libp2p.getMultiaddrs().map((a) => a.toString()),
    async dial(peerId, addrs, signal) {
      if (peerId === self) return;
      const pid = parsePeerId(peerId);
      if (libp2p.getConnections(pid).length > 0) return;
      if (addrs?.length) {
        const mas = addrs.map((a) => (a.includes('/p2p/') ? multiaddr(a) : multiaddr(`${a}/p2p/${peerId}`)));
        await libp2p.dial(mas, { signal });
      } else {
        await libp2p.dial(pid, { signal });
      }
    },
    async ping(peerId, o) {
      await host.dial(peerId, o?.addrs, o?.signal);
      return libp2p.services.ping.ping(parsePeerId(peerId), { signal: o?.signal });
    },
    async stop() {
      await libp2p.stop();
    },
  };
  for (const b of opts.bootstrap ?? []) {
    try {
      await libp2p.dial(multiaddr(b), { signal: AbortSignal.timeout(10_000) });
    } catch (e) {
      // one unreachable bootstrap peer must not stop the node; the caller sees no peers
      libp2p.logger.forComponent('odsi:host').error('bootstrap dial %s failed: %s', b, (e as Error).message);
    }
  }
  return host;
}
