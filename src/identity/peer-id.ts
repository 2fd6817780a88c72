// Peer ids as strings (in OPENs, routes, adverts, receipts) parsed once. Parsing a secp256k1
// peer id decompresses its public key twice in pure JS (~0.4–0.8 ms); every session open parsed
// the same few peers' ids again at each hop. A parsed id is immutable, so the parsed object is
// kept: bounded, oldest dropped first; a malformed id throws as before and is not kept.

import { peerIdFromString } from '@libp2p/peer-id';
import type { PeerId } from '@libp2p/interface';

/** how many distinct peer ids a process keeps parsed */
export const MAX_PARSED_PEER_IDS = 4096;

const parsed = new Map<string, PeerId>();

/** peerIdFromString, remembered. */
export function parsePeerId(id: string): PeerId {
  let p = parsed.get(id);
  if (p) return p;
  p = peerIdFromString(id);
  if (parsed.size >= MAX_PARSED_PEER_IDS) parsed.delete(parsed.keys().next().value!);
  parsed.set(id, p);
  return p;
}
