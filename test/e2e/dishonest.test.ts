// Dishonest nodes on a real swarm of `odsi node` processes (stories260K): H0 [0,2] honest,
// H1 [2,5] honest, and per dishonest behaviour one node D [2,5] (onset after its first
// step). Per behaviour a production Gateway (accountability on) over exactly H0, D and H1
// prefers D, audits D at rate 1.0 and must: catch the first dishonest step, name D's identity
// (and nobody else), route around D and still return exactly the golden greedy tokens. A forging first hop is
// rejected by its downstream hop's custody check.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Gateway } from '../../src/gateway/gateway.js';
import type { RouteCandidate } from '../../src/routing/router.js';
import { NodeProcess } from '../../src/node/process.js';
import { addressOfPeer } from '../../src/accountability/records/wire.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { openGatewaySide, type GatewaySide } from '../helpers/gateway-side.js';
import { startedAll } from '../helpers/nodes.js';

let side: GatewaySide | undefined;
let H0: NodeProcess, H1: NodeProcess, F: NodeProcess;
/** one dishonest [2,5] node per behaviour, started together (restarting one is slower) */
const dishonest = new Map<string, NodeProcess>();
const all: NodeProcess[] = [];
/** every gateway the tests ran, for the checks over all of them */
const gateways: Gateway[] = [];

// onset @1: the prefill (D's first step) is honest, so D is on the route when it starts cheating;
// stale needs an earlier output of the same shape: D is the last hop, whose prefill output is
// the last row alone (lastRow), so it has one from step 1 on like the others
const KINDS = ['zeros@1', 'noise:0.02@1', 'skip-layer@1', 'wrong-weights:7@1', 'stale@1', 'equivocate@1', 'forge@1'];
const start = (range: [number, number], name: string, faults?: string[]) =>
  NodeProcess.start({
    model: STORIES_GGUF,
    range,
    identityFile: join(side!.dir, `${name}.key`),
    modelId: side!.modelId,
    announceIntervalMs: 600_000,
    faults,
  });

before(
  async () => {
    side = openGatewaySide('odsi-acct-');
    const [h0, h1, f, ...ds] = await startedAll(
      [
        start([0, 2], 'h0'),
        start([2, 5], 'h1'),
        start([0, 2], 'f', ['forge@1']),
        ...KINDS.map((spec, k) => start([2, 5], `d${k}`, [spec])),
      ],
      all,
    );
    [H0, H1, F] = [h0, h1, f];
    for (const [k, d] of ds.entries()) dishonest.set(KINDS[k]!, d);
  },
  { timeout: 120_000 },
);

after(async () => {
  await Promise.all(all.map((n) => n.kill('SIGTERM').catch(() => undefined)));
  await side?.close();
});

const cand = (n: NodeProcess, msPerToken: number): RouteCandidate => n.candidate(msPerToken);

/** A gateway (accountability on) routing over exactly these nodes. */
async function gatewayOver(peers: RouteCandidate[]): Promise<Gateway> {
  const gw = await side!.gateway(peers);
  assert.ok(gw.accountability, 'accountability must be on (ODSI_ACCOUNTABILITY unset)');
  gateways.push(gw);
  return gw;
}

async function runThrough(gw: Gateway, sessionId: string, nTokens: number) {
  const g = loadGolden()[0]!;
  const r = await gw.run({ promptIds: g.prompt_tokens, maxTokens: nTokens, sampling: { temperature: 0 }, sessionId });
  return { tokens: r.tokens, golden: g.generated_tokens.slice(0, nTokens), events: r.events, finalHops: r.route.map((h) => h.peerId) };
}

const EXPECT: Record<string, string> = { 'equivocate@1': 'equivocation', 'forge@1': 'custody' };

test(
  'every dishonest behaviour is caught on its first audited step, D alone is named, output stays golden',
  { timeout: 150_000 },
  async () => {
    const honest = new Set([addressOfPeer(H0.peerId), addressOfPeer(H1.peerId)].map((a) => a.toLowerCase()));
    const summary: Record<string, unknown> = {};
    for (const [k, spec] of KINDS.entries()) {
      const D = dishonest.get(spec)!;
      const dAddr = addressOfPeer(D.peerId).toLowerCase();
      // D is the cheapest [2,5]: the first route goes through it
      const gw = await gatewayOver([cand(H0, 1), cand(D, 1), cand(H1, 50)]);
      const acct = gw.accountability!;
      acct.setAuditRate(1, D.peerId);
      const n = k === 0 ? 60 : 16;
      const r = await runThrough(gw, `acct-${k}`, n);
      await acct.settled();
      const ev = acct.evidence;
      const audits = acct.audits.filter((a) => a.peerId === D.peerId);
      summary[spec] = { evidence: ev.map((e) => e.kind), auditsOfD: audits.map((a) => ({ step: a.step, pass: a.pass })) };
      assert.deepEqual(r.tokens, r.golden, `${spec}: output differs from golden (${JSON.stringify(summary[spec])})`);
      assert.ok(ev.length >= 1, `${spec}: no evidence`);
      for (const e of ev) assert.equal(e.accused.toLowerCase(), dAddr, `${spec}: evidence names ${e.peerId}`);
      assert.equal(ev[0]!.kind, EXPECT[spec] ?? 'audit', `${spec}: ${JSON.stringify(summary[spec])}`);
      // every audited step of D after the onset failed (the first failure ends D's part)
      const cheatFrom = 1;
      const dishonestAudits = audits.filter((a) => a.step >= cheatFrom);
      assert.ok(dishonestAudits.length >= 1 || spec.startsWith('forge'), `${spec}: D was never audited on a dishonest step`);
      for (const a of dishonestAudits) assert.equal(a.pass, false, `${spec}: audit of dishonest step ${a.step} passed`);
      for (const a of audits.filter((a) => a.step < cheatFrom && a.routeSessionId === `acct-${k}`))
        assert.equal(a.pass, true, `${spec}: honest step ${a.step} failed`);
      assert.ok(!r.finalHops.includes(D.peerId), `${spec}: still routed through D`);
      assert.ok(
        r.events.some((e) => e.type === 'failure' && e.culprits.includes(D.peerId)),
        `${spec}: ${JSON.stringify(r.events)}`,
      );
      await gw.close(); // its audits and evidence stay readable for the checks below
    }
    const cheats = new Set([...dishonest.values()].map((d) => d.peerId));
    for (const gw of gateways) {
      for (const e of gw.accountability!.evidence)
        assert.ok(!honest.has(e.accused.toLowerCase()), `an honest identity was named: ${e.peerId}`);
      for (const a of gw.accountability!.audits) if (!cheats.has(a.peerId)) assert.ok(a.pass || a.incomplete, JSON.stringify(a));
    }
    console.log('detection summary', JSON.stringify(summary));
  },
);

// The gateway never sees F's receipts: H1 refuses them, and its word against F's is a dispute
// (routing/disputes.ts): both avoided, neither banned on it. H1 is the only [2,5] node, so the
// next route lets it back in and leaves F out.
test('a forging first hop is rejected by the next hop (custody error names the forger: a dispute)', { timeout: 60_000 }, async () => {
  const gw = await gatewayOver([cand(F, 1), cand(H0, 50), cand(H1, 1)]);
  const r = await runThrough(gw, 'acct-forge-first', 8);
  assert.deepEqual(r.tokens, r.golden);
  const fail = r.events.find((e) => e.type === 'failure');
  assert.ok(fail && fail.type === 'failure', JSON.stringify(r.events));
  assert.deepEqual([fail.diagnosis, fail.disputed, fail.culprits], ['dispute', [H1.peerId, F.peerId], []]);
  assert.match(fail.message, /custody.*bad_signature/);
  assert.deepEqual(r.finalHops, [H0.peerId, H1.peerId]);
  assert.deepEqual(gw.bans.list(), [], 'one accusation bans nobody');
  await gw.accountability!.settled();
  for (const e of gw.accountability!.evidence) assert.equal(e.peerId, F.peerId);
});
