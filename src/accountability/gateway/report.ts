// A JSON view of a gateway's accountability work (demo --json, status pages): audits,
// verdicts and evidence, each naming the accused identity and, when known, the index of the
// node in a caller-given list (the demo's `nodes`).

import type { GatewayAccountability } from './accountability.js';

export interface AccountabilityReport {
  enabled: boolean;
  stats?: Record<string, number>;
  audits?: unknown[];
  verdicts?: unknown[];
  evidence?: unknown[];
}

/**
 * `a`: the gateway's accountability (undefined: it is off). `nodes`: peer ids in display
 * order; `node` fields are indexes into it (-1: not listed).
 */
export async function accountabilityReport(
  a: GatewayAccountability | undefined,
  nodes: readonly string[],
  summaryOnly = false,
): Promise<AccountabilityReport> {
  if (!a) return { enabled: false };
  await a.settled();
  const idx = (p: string) => nodes.indexOf(p);
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  const stats = {
    ...Object.fromEntries(Object.entries(a.stats).map(([k, v]) => [k, r3(v)])),
    evidence: a.evidence.length,
    queued: a.queue.stats().enqueued,
  };
  if (summaryOnly) return { enabled: true, stats };
  return {
    enabled: true,
    stats,
    audits: a.audits.map((x) => ({
      node: idx(x.peerId),
      peerId: x.peerId,
      identity: x.accused,
      session: x.routeSessionId,
      step: x.step,
      layers: x.layers,
      pass: x.pass,
      maxRelL2: x.maxRelL2,
      tau: x.tau,
      replayedSteps: x.replayedSteps,
      // who re-executed: the demo index of a peer auditor node, or 'referee' (the gateway)
      executor: x.executor === 'referee' ? 'referee' : { node: idx(x.executor), peerId: x.executor },
      escalated: x.escalated,
      mode: x.mode,
      ...(x.reason ? { reason: x.reason } : {}),
      ms: x.ms,
    })),
    verdicts: a.audits
      .filter((x) => x.verdict)
      .map((x) => ({ node: idx(x.peerId), identity: x.accused, step: x.step, verdict: x.verdict!.record, signature: x.verdict!.signature })),
    evidence: a.evidence.map((e) => ({ kind: e.kind, node: idx(e.peerId), peerId: e.peerId, identity: e.accused, reason: e.reason, at: e.at })),
  };
}
