// Messages of the audit protocols (AUDIT_PROTOCOL, AUDIT_EXEC_PROTOCOL): one request and one
// reply per stream, each a single AUDIT message in the odsi framing (frame.ts, messages.ts)
// with the audit limits: a JSON object header (its members are checked by the accountability
// modules) and a payload of raw tensor bytes, split into frames of at most 1 MiB.
// See docs/protocol.md §8.3 for a test vector.

import type { Stream } from '@libp2p/interface';
import { MAX_FRAME_PAYLOAD } from './frame.js';
import { MessageDecoder, MsgType, encodeMessage, type MessageLimits } from './messages.js';

/** stream protocol: an auditor fetches a node's committed inputs/outputs of one session */
export const AUDIT_PROTOCOL = '/odsi/audit/1.2.0';
/** stream protocol: ask a node to re-execute committed inputs on its own layer range */
export const AUDIT_EXEC_PROTOCOL = '/odsi/audit-exec/1.2.0';

/** a reply may carry the inputs of a whole session prefix, hence the larger header and payload */
export const AUDIT_LIMITS: MessageLimits = {
  maxHeader: 4 * 1024 * 1024,
  maxPayload: MAX_FRAME_PAYLOAD,
  maxMessagePayload: 256 * 1024 * 1024,
};

/** what a node reads of a request: headers of at most 1 MiB (8192 step entries fit), no payload unless given */
export const AUDIT_REQUEST_LIMITS: MessageLimits = {
  maxHeader: 1024 * 1024,
  maxPayload: MAX_FRAME_PAYLOAD,
  maxMessagePayload: 0,
};

export interface AuditMessage {
  header: Record<string, unknown>;
  payload: Uint8Array;
}

const EMPTY = new Uint8Array(0);

/** The frames of one audit message; throws when header or payload exceed AUDIT_LIMITS. */
export function encodeAuditMessage(header: Record<string, unknown>, payload: Uint8Array = EMPTY): Uint8Array[] {
  return encodeMessage({ type: MsgType.AUDIT, header, payload }, AUDIT_LIMITS);
}

/**
 * Reads one audit message from a stream, bounded in size by `limits` (a node reading a request
 * passes tighter ones than AUDIT_LIMITS) and in time by timeoutMs. Whatever arrives after the
 * message is discarded, never buffered.
 */
export function readAuditMessage(stream: Stream, timeoutMs: number, limits: MessageLimits = AUDIT_LIMITS): Promise<AuditMessage> {
  return new Promise((resolve, reject) => {
    const decoder = new MessageDecoder(limits);
    let done = false;
    const finish = (err?: Error, msg?: AuditMessage) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(msg!);
    };
    const timer = setTimeout(() => finish(new Error(`no complete audit message within ${timeoutMs} ms`)), timeoutMs);
    stream.addEventListener('message', (evt) => {
      if (done) return;
      const d = evt.data;
      try {
        const m = decoder.push(d instanceof Uint8Array ? d : d.subarray())[0];
        if (!m) return;
        if (m.type !== MsgType.AUDIT) return finish(new Error(`expected an audit message, got message type ${m.type}`));
        finish(undefined, { header: m.header, payload: m.payload ?? EMPTY });
      } catch (e) {
        finish(new Error(`bad audit message: ${(e as Error).message}`));
      }
    });
    stream.addEventListener('close', () => finish(new Error('audit stream closed before a complete message')));
  });
}

/** Sends one audit message; `header` must be a JSON object. Waits for the stream to drain between frames. */
export async function sendAuditMessage(stream: Stream, header: unknown, payload?: Uint8Array): Promise<void> {
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new Error('an audit message header must be a JSON object');
  for (const frame of encodeAuditMessage(header as Record<string, unknown>, payload)) {
    if (!stream.send(frame)) await stream.onDrain();
  }
}
