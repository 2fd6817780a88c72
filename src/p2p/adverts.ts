// Signed node adverts in the private Kademlia DHT.
//
// A node stores one record per model under `/odsi-adv/<modelId>/<peerId>` and announces a
// provider record for the model's CID, so a gateway finds the peers serving a model with
// findProviders and then fetches each peer's advert. Every record is signed by the node's
// secp256k1 key (the key its peer id embeds) and expires after ttlMs unless re-announced;
// DHT validators reject unsigned, mismatched or expired records on put and on get, and
// findAdverts verifies again, so callers only ever see verified, live adverts.

import { parsePeerId } from '../identity/peer-id.js';
import { lpStream } from '@libp2p/utils';
import type { OdsiHost } from './host.js';
import { MAX_RECORD_BYTES, advertKey, modelCid, verifyAdvertRecord, type NodeAdvert } from './advert-record.js';

/** request/response: the owner of an advert serves its current signed record directly */
export const ADVERT_PROTOCOL = '/odsi/advert/1.0.0';

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

/** Store the advert record and announce this node as a provider of the model. */
export async function publishAdvert(
  host: OdsiHost,
  advert: NodeAdvert,
  record: Uint8Array,
  opts: { signal?: AbortSignal; provide?: boolean } = {},
): Promise<void> {
  const key = advertKey(advert.modelId, advert.peerId);
  await host.libp2p.contentRouting.put(key, record, { signal: opts.signal });
  // provider records live for hours; re-providing on every refresh only adds DHT traffic
  if (opts.provide ?? true) await host.libp2p.contentRouting.provide(modelCid(advert.modelId), { signal: opts.signal });
}

/**
 * Answer ADVERT_PROTOCOL requests: the request is one length-prefixed (unsigned varint)
 * UTF-8 model id, the reply one length-prefixed record (empty when this node has none).
 */
export async function serveAdverts(host: OdsiHost, current: (modelId: string) => Uint8Array | undefined): Promise<void> {
  await host.libp2p.handle(
    ADVERT_PROTOCOL,
    async (stream) => {
      try {
        const lp = lpStream(stream, { maxDataLength: 1024 });
        const modelId = dec.decode((await lp.read({ signal: AbortSignal.timeout(5000) })).subarray());
        await lp.write(current(modelId) ?? new Uint8Array(0));
        await stream.close();
      } catch (e) {
        stream.abort(e as Error);
      }
    },
    { maxInboundStreams: 256, maxOutboundStreams: 256 },
  );
}

async function fetchDirect(host: OdsiHost, modelId: string, pid: string, addrs: string[], signal: AbortSignal): Promise<Uint8Array> {
  await host.dial(pid, addrs, signal);
  const stream = await host.libp2p.dialProtocol(parsePeerId(pid), ADVERT_PROTOCOL, { signal, maxOutboundStreams: 256 });
  try {
    const lp = lpStream(stream, { maxDataLength: MAX_RECORD_BYTES });
    await lp.write(enc.encode(modelId), { signal });
    const rec = (await lp.read({ signal })).subarray();
    await stream.close().catch(() => {});
    return rec;
  } catch (e) {
    stream.abort(e as Error);
    throw e;
  }
}

/**
 * Verified, unexpired adverts of every peer serving `modelId` (best effort within timeoutMs).
 * Candidates: peers already known to this host that speak ADVERT_PROTOCOL, and the providers
 * of the model CID found through the DHT. Each candidate's signed advert is fetched from the
 * candidate itself (providers fall back to the DHT copy under their advert key). Whatever the
 * source, every record is verified here.
 */
export async function findAdverts(host: OdsiHost, modelId: string, opts: { timeoutMs?: number } = {}): Promise<NodeAdvert[]> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const signal = AbortSignal.timeout(timeoutMs);
  const dht = host.libp2p.services.dht;
  const fetches = new Map<string, Promise<NodeAdvert | undefined>>();
  const fetchOne = async (pid: string, addrs: string[], dhtFallback = true): Promise<NodeAdvert | undefined> => {
    const key = advertKey(modelId, pid);
    try {
      const rec = await fetchDirect(host, modelId, pid, addrs, signal);
      if (rec.length === 0) return undefined; // the peer serves no layers of this model
      return verifyAdvertRecord(rec, { key });
    } catch {
      /* owner unreachable or stale: try the DHT copy */
    }
    if (!dhtFallback) return undefined;
    try {
      for await (const ev of dht.get(key, { signal })) {
        if (ev.name !== 'VALUE') continue;
        try {
          return verifyAdvertRecord(ev.value, { key });
        } catch {
          /* stale or forged copy: keep looking */
        }
      }
    } catch {
      /* timeout */
    }
    return undefined;
  };
  // peers this host already knows (DHT routing table, identify) that serve adverts: ask them
  // directly while the provider query runs; the query finds the ones not known yet
  try {
    for (const p of await host.libp2p.peerStore.all({ signal })) {
      const pid = p.id.toString();
      if (pid === host.peerId || fetches.has(pid) || !p.protocols.includes(ADVERT_PROTOCOL)) continue;
      fetches.set(
        pid,
        fetchOne(
          pid,
          p.addresses.map((a) => a.multiaddr.toString()),
          false,
        ),
      );
    }
  } catch {
    /* peer store unavailable: the DHT query below still runs */
  }
  try {
    for await (const ev of dht.findProviders(modelCid(modelId), { signal })) {
      if (ev.name !== 'PROVIDER') continue;
      for (const p of ev.providers) {
        const pid = p.id.toString();
        if (pid === host.peerId || fetches.has(pid)) continue;
        fetches.set(
          pid,
          fetchOne(
            pid,
            p.multiaddrs.map((m) => m.toString()),
          ),
        );
      }
    }
  } catch {
    // timeout/abort: use what was found so far
  }
  const out = await Promise.all(fetches.values());
  return out.filter((a): a is NodeAdvert => a !== undefined).sort((a, b) => a.start - b.start || a.peerId.localeCompare(b.peerId));
}
