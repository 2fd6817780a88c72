// A Server-Sent Events answer (OpenAI's `stream: true`): the head, then `data:` events, each
// awaited until the socket takes it, so a slow reader holds generation back rather than letting
// the buffer grow; `end` closes it with `data: [DONE]`.

import type { FastifyReply } from 'fastify';

export interface EventStream {
  /** one `data:` event; resolves once the socket took it (or closed) */
  send(obj: unknown): Promise<void>;
  /** `data: [DONE]` and the end of the answer, unless the socket is gone */
  end(): void;
}

/** Takes the reply over from Fastify and writes an SSE head naming who serves it (`x-odsi-served-by`). */
export function openEventStream(reply: FastifyReply, servedBy: 'swarm' | 'fallback'): EventStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'x-odsi-served-by': servedBy,
  });
  const gone = () => res.writableEnded || res.destroyed;
  return {
    async send(obj) {
      if (gone()) return;
      if (res.write(`data: ${JSON.stringify(obj)}\n\n`)) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    },
    end() {
      if (!gone()) res.end('data: [DONE]\n\n');
    },
  };
}
