// Shared bits of the accountability wire protocol: the records' domain, protocol ids derived
// from the activation protocol's session ids, peer id → address, and the small request/
// response codec of the audit protocol (one request and one response per stream).

import { peerIdFromString } from '@libp2p/peer-id';
import type { Stream } from '@libp2p/interface';
import { addressFromPublicKey } from '../../identity/identity.js';
import { DEV_CHAIN_ID, toBytes32, type Hex, type OdsiDomain } from './eip712.js';

/** stream protocol: an auditor fetches a node's committed inputs/outputs of one session */
export const AUDIT_PROTOCOL = '/odsi/audit/1.0.0';

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

/** request id of a route session: replacement routes `<sid>.r1`, `<sid>.1` belong to the same request */
export function requestIdOf(sessionId: string): Hex {
  return toBytes32(sessionId.split('.')[0]!);
}
export function sessionIdOf(sessionId: string): Hex {
  return toBytes32(sessionId);
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

// ---- audit protocol messages: [u32 header length][u32 payload length][JSON header][payload] ----

export const MAX_AUDIT_HEADER = 4 * 1024 * 1024;
export const MAX_AUDIT_PAYLOAD = 256 * 1024 * 1024;

export function encodeAuditMessage(header: unknown, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, h.length, true);
  dv.setUint32(4, payload.length, true);
  out.set(h, 8);
  out.set(payload, 8 + h.length);
  return out;
}

/** Reads one audit message from a stream (bounded in size and time). */
export function readAuditMessage(stream: Stream, timeoutMs: number): Promise<{ header: Record<string, unknown>; payload: Uint8Array }> {
  return new Promise((resolve, reject) => {
    const parts: Uint8Array[] = [];
    let size = 0;
    let done = false;
    const finish = (err?: Error, v?: { header: Record<string, unknown>; payload: Uint8Array }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(v!);
    };
    const timer = setTimeout(() => finish(new Error(`no complete audit message within ${timeoutMs} ms`)), timeoutMs);
    const tryParse = () => {
      if (size < 8) return;
      const all = parts.length === 1 ? parts[0]! : concat(parts, size);
      parts.length = 0;
      parts.push(all);
      const dv = new DataView(all.buffer, all.byteOffset, all.byteLength);
      const hl = dv.getUint32(0, true);
      const pl = dv.getUint32(4, true);
      if (hl > MAX_AUDIT_HEADER || pl > MAX_AUDIT_PAYLOAD) return finish(new Error(`audit message too large (${hl} + ${pl} bytes)`));
      if (size < 8 + hl + pl) return;
      let header: Record<string, unknown>;
      try {
        header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(all.subarray(8, 8 + hl)));
      } catch {
        return finish(new Error('audit message header is not UTF-8 JSON'));
      }
      if (!header || typeof header !== 'object') return finish(new Error('audit message header is not an object'));
      finish(undefined, { header, payload: all.slice(8 + hl, 8 + hl + pl) });
    };
    stream.addEventListener('message', (evt) => {
      const d = evt.data;
      const b = d instanceof Uint8Array ? d : d.subarray();
      parts.push(b);
      size += b.length;
      tryParse();
    });
    stream.addEventListener('close', () => finish(new Error('audit stream closed before a complete message')));
  });
}

export async function sendAuditMessage(stream: Stream, header: unknown, payload?: Uint8Array): Promise<void> {
  const bytes = encodeAuditMessage(header, payload);
  // chunk: a single send of hundreds of MB would sit in the muxer's buffer at once
  for (let off = 0; off < bytes.length; off += 256 * 1024) {
    if (!stream.send(bytes.subarray(off, Math.min(bytes.length, off + 256 * 1024)))) await stream.onDrain();
  }
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
