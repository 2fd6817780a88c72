// The dashboard on the gateway's HTTP port: the page at `/`, its bundled assets (built by
// `npm run build` into dist/dashboard, read once here; no CDN), a JSON snapshot, one request's
// timeline, and the live SSE stream. Read-only: it shows what /healthz and /metrics already
// expose, in more detail. The API stays under /v1.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Dashboard } from './hub.js';

/** where `npm run build` puts the page (dist/dashboard, next to dist/src) */
export const DASHBOARD_ASSETS = fileURLToPath(new URL('../../dashboard/', import.meta.url));

const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

/** the page talks only to this origin */
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'";

/** Registers the dashboard's routes on the API server's app (before it listens). */
export function mountDashboard(app: FastifyInstance, dash: Dashboard, assetsDir = DASHBOARD_ASSETS): void {
  const files = new Map<string, Buffer>();
  let missing: string | undefined;
  for (const a of Object.values(ASSETS)) {
    try {
      files.set(a.file, readFileSync(assetsDir + a.file));
    } catch {
      missing ??= a.file;
    }
  }
  for (const [url, a] of Object.entries(ASSETS)) {
    app.get(url, async (_req, reply) => {
      const body = files.get(a.file);
      if (!body)
        return reply
          .code(503)
          .type('text/plain; charset=utf-8')
          .send(`dashboard not built (${missing} missing in ${assetsDir}); run npm run build`);
      return reply
        .header('content-type', a.type)
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', CSP)
        .send(body);
    });
  }

  // SSE streams are hijacked connections: end them before the server waits for its connections
  app.addHook('preClose', (done) => {
    dash.close();
    done();
  });

  // browsers ask for it; there is none
  app.get('/favicon.ico', async (_req, reply) => reply.code(204).send());

  app.get('/dashboard/api/snapshot', async () => dash.snapshot());

  app.get<{ Params: { id: string } }>('/dashboard/api/requests/:id', async (req, reply) => {
    const d = /^[A-Za-z0-9-]{1,64}$/.test(req.params.id) ? dash.requests.detail(req.params.id) : undefined;
    if (!d) return reply.code(404).send({ error: { message: 'no such recent request', type: 'invalid_request_error' } });
    return d;
  });

  app.get('/dashboard/events', (req, reply) => {
    reply.hijack();
    if (!dash.addClient(reply.raw, req.ip)) {
      reply.raw.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
      reply.raw.end(JSON.stringify({ error: { message: 'too many dashboard streams open; retry later', type: 'service_unavailable' } }));
    }
  });
}
