// Which route failures get the named peer banned: the one rule the gateway's first open and a
// resilient route's re-opens share.

import type { RouteError } from './route-stage.js';

/**
 * Whether a failure says the peer is broken. A node at capacity ('busy') is healthy, a node
 * that is leaving ('draining') is not at fault, and a missed deadline may be the client's
 * budget being too tight: none of these is banned; the request just does not use that peer again.
 */
export function banWorthy(e: RouteError): boolean {
  return e.code !== 'deadline' && e.remoteCode !== 'busy' && e.remoteCode !== 'draining' && e.remoteCode !== 'deadline';
}
