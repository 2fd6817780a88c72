// How a node serves the audit protocols (/odsi/audit, /odsi/audit-exec): one request and one
// reply per stream. The requesting peer is admitted by its per-peer limiter before anything is
// read; a refused peer's bytes are never buffered; the request is read with request-sized limits
// and a time-out; whatever happens, the stream is closed and the peer's slot given back.

import type { Stream } from '@libp2p/interface';
import { readAuditMessage, sendAuditMessage, type AuditMessage } from '../../protocol/audit-messages.js';
import type { MessageLimits } from '../../protocol/messages.js';
import type { PeerLimiter } from './request-limiter.js';

export type OneReply = { header: unknown; payload?: Uint8Array } | { reason: string };

export interface OneRequestOptions {
  limiter: PeerLimiter;
  timeoutMs: number;
  limits: MessageLimits;
  /** the reply to an admitted, well-formed request */
  answer(msg: AuditMessage): OneReply | Promise<OneReply>;
  /** told of every refusal (counters, logs) */
  refused(reason: string): void;
}

export async function serveOneRequest(stream: Stream, peer: string, o: OneRequestOptions): Promise<void> {
  const admitted = o.limiter.acquire(peer);
  try {
    let reply: OneReply;
    if ('refusal' in admitted) {
      stream.addEventListener('message', () => undefined); // read nothing, buffer nothing
      reply = { reason: admitted.refusal };
    } else {
      const msg = await readAuditMessage(stream, o.timeoutMs, o.limits).catch((e: Error) => e);
      reply = msg instanceof Error ? { reason: `bad request: ${msg.message}` } : await o.answer(msg);
    }
    if ('reason' in reply) {
      o.refused(reply.reason);
      await sendAuditMessage(stream, { ok: false, reason: reply.reason });
    } else await sendAuditMessage(stream, reply.header, reply.payload);
    await stream.close({ signal: AbortSignal.timeout(2000) }).catch(() => undefined);
  } catch (e) {
    try {
      stream.abort(e as Error);
    } catch {
      /* gone */
    }
  } finally {
    if ('release' in admitted) admitted.release();
  }
}
