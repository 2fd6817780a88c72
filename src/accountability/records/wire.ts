// Shared bits of the accountability wire protocol: the records' domain, record ids derived
// from the activation protocol's session ids, peer id → address. (The audit protocols'
// messages are in protocol/audit-messages.ts.)

import { parsePeerId } from '../../identity/peer-id.js';
import { keccak256 } from '../../util/keccak.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { addressFromPublicKey } from '../../identity/identity.js';
import { DEV_CHAIN_ID, toBytes32, type Hex, type OdsiDomain } from './eip712.js';

/** Environment variables as read once at start-up (by the CLI) and handed down. */
export type EnvVars = Readonly<Record<string, string | undefined>>;

/**
 * Accountability is on unless ODSI_ACCOUNTABILITY=0 (nodes and gateway must agree); 1 or unset
 * is on. Any other value ('false', 'off') is refused rather than read as on.
 */
export function accountabilityEnabled(env: EnvVars): boolean {
  const v = env.ODSI_ACCOUNTABILITY;
  if (v === '0') return false;
  if (v === undefined || v === '' || v === '1') return true;
  throw new Error(`ODSI_ACCOUNTABILITY must be 1 (on, the default) or 0 (off), got "${v}"`);
}

/**
 * The EIP-712 domain of this deployment: ODSI_CHAIN_ID (default anvil's 31337), no contract. A
 * value that is not a positive decimal integer is refused: signing under another chain's domain
 * than the rest of the deployment would fail every custody check this node's receipts meet.
 */
export function deploymentDomain(env: EnvVars): OdsiDomain {
  const v = env.ODSI_CHAIN_ID;
  if (v === undefined || v === '') return { chainId: DEV_CHAIN_ID };
  const id = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(id) || id < 1) throw new Error(`ODSI_CHAIN_ID must be a positive integer, got "${v}"`);
  return { chainId: id };
}

const utf8 = new TextEncoder();

/**
 * A pure function of a string with its last `max` answers remembered. A node and a gateway
 * derive the same few sessions' ids, peers' addresses and one model id on every step (claim,
 * commitment, custody check, receipt); a miss only costs the work again.
 */
function remembered(max: number, f: (k: string) => Hex): (k: string) => Hex {
  const seen = new Map<string, Hex>();
  return (k) => {
    let v = seen.get(k);
    if (v === undefined) {
      v = f(k);
      if (seen.size >= max) seen.delete(seen.keys().next().value as string);
      seen.set(k, v);
    }
    return v;
  };
}

/** keccak256 of the id's UTF-8, always: ids that look like hex are hashed too, so no two session ids share a record id */
const idHash = remembered(1024, (id) => `0x${bytesToHex(keccak256(utf8.encode(id)))}`);

/** request id of a route session: replacement routes `<sid>.r1`, `<sid>.1` belong to the same request */
export function requestIdOf(sessionId: string): Hex {
  return idHash(sessionId.split('.')[0]!);
}
export function sessionIdOf(sessionId: string): Hex {
  return idHash(sessionId);
}

/** EVM address behind a secp256k1 libp2p peer id (throws for other key types). */
export const addressOfPeer = remembered(10_000, (peerId) => {
  const pk = parsePeerId(peerId).publicKey;
  if (!pk || pk.type !== 'secp256k1') throw new Error(`peer ${peerId} has no secp256k1 key: it cannot sign odsi records`);
  return addressFromPublicKey(pk.raw);
});

/** model ids are hex digests; anything else is hashed into bytes32 (a node serves one model: one answer kept) */
export const toModelId = remembered(1, (modelId) => {
  const m = modelId.replace(/^0x/, '');
  return /^[0-9a-fA-F]{64}$/.test(m) ? `0x${m.toLowerCase()}` : toBytes32(modelId);
});
