// kv-transfer: where a gateway lets a draining hop move its session. A 'draining' ERROR names
// the node that took the session's KV cache (`replacement`); the gateway follows it only to a
// spare it offered in that route's signed OPEN for exactly the hop's layers — the only nodes a
// KV hand-over can reach (a receiver takes a cache only when the owner's OPEN names it as a
// spare, docs/protocol.md §4.2) — and not to one it has stopped using meanwhile. A leaving hop
// therefore cannot steer the session to a node of its choosing (a banned one, one the planner
// would not pick): anything else is replayed on a route the planner picks.

import type { Hop } from './route-stage.js';

/**
 * The spare (as the gateway knows it: its own addresses) that `replacement` names for `hop`,
 * or undefined when it names none of `spares` with exactly `hop`'s layers, or one `avoid` says
 * not to use.
 */
export function offeredReplacement(
  replacement: unknown,
  hop: Hop,
  spares: readonly Hop[],
  avoid: (peerId: string) => boolean,
): Hop | undefined {
  const named = (replacement as { peerId?: unknown } | undefined)?.peerId;
  if (typeof named !== 'string' || named === hop.peerId) return undefined;
  const spare = spares.find((s) => s.peerId === named && s.start === hop.start && s.end === hop.end);
  return spare && !avoid(spare.peerId) ? spare : undefined;
}
