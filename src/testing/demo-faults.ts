// Helpers for `odsi demo --replicas R --fault <node-index>:<spec>`: replicated layer ranges,
// per-node fault specs (validated up front, refused without ODSI_ALLOW_FAULTS=1), and a
// one-line description of each fault event for the human-readable output.

import { FaultsNotAllowedError, FaultSpecError } from './fault-kind.js';
import { parseFaultSpec } from './inject.js';
import type { FaultEvent } from '../route/events.js';

/** Every range served by `replicas` nodes: [r0, r1, …, r0, r1, …] (node i serves ranges[i]). */
export function replicateRanges(ranges: [number, number][], replicas: number): [number, number][] {
  if (!Number.isInteger(replicas) || replicas < 1) throw new FaultSpecError(`--replicas must be a positive integer, got ${replicas}`);
  const out: [number, number][] = [];
  for (let r = 0; r < replicas; r++) for (const x of ranges) out.push([x[0], x[1]]);
  return out;
}

/** Parse `--fault i:spec` options into node index → specs; refused unless allowFaults (ODSI_ALLOW_FAULTS=1). */
export function parseNodeFaults(opts: readonly string[], nNodes: number, allowFaults: boolean): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const o of opts) {
    const m = /^(\d+):(.+)$/.exec(o.trim());
    if (!m) throw new FaultSpecError(`--fault expects <node-index>:<spec> (e.g. 1:crash@10), got "${o}"`);
    const i = Number(m[1]);
    if (i >= nNodes) throw new FaultSpecError(`--fault ${o}: node index ${i} is out of range (0..${nNodes - 1})`);
    parseFaultSpec(m[2]!); // validate now, not in a child process
    out.set(i, [...(out.get(i) ?? []), m[2]!.trim()]);
  }
  if (out.size && !allowFaults) throw new FaultsNotAllowedError([...opts]);
  return out;
}

/** `--fault` arguments for node i's command line. */
export function nodeFaultArgs(faults: Map<number, string[]>, i: number): string[] {
  return (faults.get(i) ?? []).flatMap((f) => ['--fault', f]);
}

/** One line per event, peers named by `name` (e.g. n1, n2 …). */
export function describeFaultEvent(e: FaultEvent, name: (peerId: string) => string): string {
  const route = (hops: { peerId: string; start: number; end: number }[]) =>
    hops.map((h) => `${name(h.peerId)}[${h.start}:${h.end}]`).join(' → ');
  if (e.type === 'failure') {
    const who = e.culprits.length ? e.culprits.map(name).join(', ') : 'unknown hop';
    const what = `${e.open ? 'open failed' : 'failure'} at position ${e.pos}: ${e.code}`;
    if (e.disputed) {
      const [accuser, accused] = e.disputed.map(name);
      const held = e.culprits.length ? `; ${who} banned (in disputes with too many peers)` : '; neither banned on one word';
      return `${what} — ${accuser} accuses ${accused}, both avoided${held}; route was ${route(e.route)}`;
    }
    if (e.diagnosis === 'unknown' && !e.open) {
      const held = e.culprits.length ? `; ${who} banned (alone on the routes of three such failures)` : '';
      return `${what} — nobody named: every hop still answers, all doubted${held}; route was ${route(e.route)}`;
    }
    return `${what} — ${who} at fault (found by ${e.diagnosis}); route was ${route(e.route)}`;
  }
  if (e.type === 'reroute') {
    return `re-routed to ${route(e.to)} by ${e.method} of ${e.replayedTokens} tokens in ${e.recoveryMs.toFixed(0)} ms (diagnose ${e.diagnoseMs.toFixed(0)}, open ${e.openMs.toFixed(0)}, replay ${e.replayMs.toFixed(0)})`;
  }
  return `gave up at position ${e.pos}: ${e.message}`;
}

/**
 * Wait (bounded) until the gateway has seen an advert from every node: with spares to re-route
 * to, a route covering the layers is not enough — the spares must be known before a fault.
 */
export async function waitForAdverts(
  gw: { refresh(): Promise<void>; knownAdverts(): readonly { peerId: string }[] },
  peerIds: readonly string[],
  timeoutMs: number,
): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  const all = () => peerIds.every((p) => gw.knownAdverts().some((a) => a.peerId === p));
  for (let i = 0; i < 10_000 && !all() && Date.now() < until; i++) {
    await gw.refresh();
    if (!all()) await new Promise((r) => setTimeout(r, 250));
  }
  return all();
}
