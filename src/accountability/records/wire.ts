// Shared bits of the accountability wire protocol: the records' domain, record ids derived
// from the activation protocol's session ids, peer id → address. (The audit protocols'
// messages are in protocol/audit-messages.ts.)

import { peerIdFromString } from '@libp2p/peer-id';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { addressFromPublicKey } from '../../identity/identity.js';
import { DEV_CHAIN_ID, toBytes32, type Hex, type OdsiDomain } from './eip712.js';

/** Environment variables as read once at start-up (by the CLI) and handed down. */
export type EnvVars = Readonly<Record<string, string | undefined>>;

/** Accountability is on unless ODSI_ACCOUNTABILITY=0 (nodes and gateway must agree). */
export function accountabilityEnabled(env: EnvVars): boolean {
  return env.ODSI_ACCOUNTABILITY !== '0';
}

/** The EIP-712 domain of this deployment: ODSI_CHAIN_ID (default anvil's 31337), no contract. */
export function deploymentDomain(env: EnvVars): OdsiDomain {
  const id = env.ODSI_CHAIN_ID ? Number(env.ODSI_CHAIN_ID) : DEV_CHAIN_ID;
  return { chainId: Number.isSafeInteger(id) && id > 0 ? id : DEV_CHAIN_ID };
}

const utf8 = new TextEncoder();
// A node and a gateway derive the same few sessions' ids on every step (claim, commitment,
// custody check, receipt): the last MAX_ID_HASHES are remembered (a pure function's results,
// so a miss only costs the keccak again).
const ID_HASHES = new Map<string, Hex>();
const MAX_ID_HASHES = 1024;
/** keccak256 of the id's UTF-8, always: ids that look like hex are hashed too, so no two session ids share a record id */
function idHash(id: string): Hex {
  let h = ID_HASHES.get(id);
  if (h === undefined) {
    h = `0x${bytesToHex(keccak_256(utf8.encode(id)))}`;
    if (ID_HASHES.size >= MAX_ID_HASHES) ID_HASHES.delete(ID_HASHES.keys().next().value as string);
    ID_HASHES.set(id, h);
  }
  return h;
}

/** request id of a route session: replacement routes `<sid>.r1`, `<sid>.1` belong to the same request */
export function requestIdOf(sessionId: string): Hex {
  return idHash(sessionId.split('.')[0]!);
}
export function sessionIdOf(sessionId: string): Hex {
  return idHash(sessionId);
}

const addrCache = new Map<string, Hex>();
/** EVM address behind a secp256k1 libp2p peer id (throws for other key types). */
export function addressOfPeer(peerId: string): Hex {
  let a = addrCache.get(peerId);
  if (a) return a;
  const pk = peerIdFromString(peerId).publicKey;
  if (!pk || pk.type !== 'secp256k1') throw new Error(`peer ${peerId} has no secp256k1 key: it cannot sign odsi records`);
  a = addressFromPublicKey(pk.raw);
  if (addrCache.size > 10_000) addrCache.clear();
  addrCache.set(peerId, a);
  return a;
}

/** model ids are hex digests; anything else is hashed into bytes32 */
export function toModelId(modelId: string): Hex {
  // a node serves one model: the last answer is the answer
  if (modelId === lastModel.id) return lastModel.hex;
  const m = modelId.replace(/^0x/, '');
  const hex: Hex = /^[0-9a-fA-F]{64}$/.test(m) ? `0x${m.toLowerCase()}` : toBytes32(modelId);
  lastModel = { id: modelId, hex };
  return hex;
}
let lastModel: { id?: string; hex: Hex } = { hex: '0x' };
