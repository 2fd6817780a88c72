// Which hop of a failed route is at fault? The error the gateway got does not always say: a
// hop whose next hop died reports the dead one, but a stream that merely closed, or a step
// that never came back, names nobody (or the wrong hop). Two cheap checks, run on all hops
// in parallel and bounded by a short timeout:
//   ping  — is the process still there? (crash, power loss, partition)
//   probe — does it still compute? one 1-token step on a one-hop route (stall, wedged engine)

import { randomUUID } from 'node:crypto';
import type { ModelConfig } from '../model/types.js';
import type { OdsiHost } from '../p2p/host.js';
import type { RouteClient } from './route-client.js';
import { type Hop } from './route-stage.js';

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`no answer within ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** once one peer was found unreachable, how much longer the others' pings count (peers that fail together fail within it) */
export const AFTER_FIRST_DEAD_MS = 10;

/**
 * Peers (of `hops`) that do not answer a libp2p ping within `timeoutMs`. A dead peer fails at
 * once (connection refused) while a live one answers only after a round trip or two (a new
 * stream, then the ping), so once one peer has failed the others' pings count for
 * AFTER_FIRST_DEAD_MS more, not their round trips: on a 20-ms link that is ~90 ms less before a
 * re-route. A dead peer not named then fails the replacement route's open, which excludes it.
 */
export function unreachablePeers(host: OdsiHost, hops: readonly Hop[], timeoutMs: number): Promise<string[]> {
  return new Promise((resolve) => {
    const dead: string[] = [];
    let left = hops.length;
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve([...dead]);
    };
    if (left === 0) return done();
    for (const h of hops) {
      withTimeout(host.ping(h.peerId, { addrs: h.addrs, signal: AbortSignal.timeout(timeoutMs) }), timeoutMs + 50)
        .then(
          () => undefined,
          () => {
            dead.push(h.peerId);
            if (dead.length === 1) timer = setTimeout(done, AFTER_FIRST_DEAD_MS);
          },
        )
        .finally(() => {
          if (--left === 0) done();
        });
    }
  });
}

/**
 * Peers (of `hops`) that do not finish a one-token step on a fresh one-hop session within
 * `timeoutMs` (zeros in, anything out: only liveness of the compute path is checked).
 */
export async function silentPeers(
  routes: RouteClient,
  hops: readonly Hop[],
  o: { modelId: string; config: ModelConfig; timeoutMs: number },
): Promise<string[]> {
  const res = await Promise.all(
    hops.map(async (h) => {
      const probe = routes.open({
        modelId: o.modelId,
        config: o.config,
        hops: [h],
        sessionId: `probe-${randomUUID()}`,
        maxTokens: 1,
        openTimeoutMs: o.timeoutMs,
      });
      try {
        const stage = await withTimeout(probe, o.timeoutMs);
        try {
          await withTimeout(
            stage.forward({ sessionId: stage.sessionId, pos: 0, nTokens: 1, hidden: new Float32Array(o.config.dim) }),
            o.timeoutMs,
          );
          return undefined;
        } finally {
          void stage.dispose().catch(() => undefined);
        }
      } catch {
        // a probe that opens late is closed as soon as it does
        void probe.then((s) => s.dispose()).catch(() => undefined);
        return h.peerId;
      }
    }),
  );
  return res.filter((p): p is string => p !== undefined);
}
