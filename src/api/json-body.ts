// The JSON body parser: like fastify's, but a '__proto__' key (or constructor.prototype) is
// refused with a message that says so, rather than "not valid JSON".

import type { FastifyInstance } from 'fastify';
import { invalid } from './errors.js';

/** the path of the first '__proto__' / constructor.prototype key, or undefined */
function poisoned(v: unknown, path: string, depth = 0): string | undefined {
  if (typeof v !== 'object' || v === null || depth > 64) return undefined;
  for (const k of Object.keys(v)) {
    if (k === '__proto__') return path ? `${path}.${k}` : k;
    const child = (v as Record<string, unknown>)[k];
    if (k === 'constructor' && typeof child === 'object' && child !== null && Object.hasOwn(child, 'prototype'))
      return path ? `${path}.constructor.prototype` : 'constructor.prototype';
    const p = poisoned(child, path ? `${path}.${k}` : k, depth + 1);
    if (p) return p;
  }
  return undefined;
}

export function installJsonParser(app: FastifyInstance): void {
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string;
    if (text.trim() === '') return done(invalid('the request body is empty; send a JSON object', null, 'invalid_json'));
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      return done(invalid(`Body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json'));
    }
    const bad = text.includes('__proto__') || text.includes('prototype') ? poisoned(v, '') : undefined;
    if (bad) return done(invalid(`the request body contains a '${bad}' key, which is not allowed`, bad, 'forbidden_key'));
    done(null, v);
  });
}
