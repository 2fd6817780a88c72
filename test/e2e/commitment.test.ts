// Execution commitments on a real route of `odsi node` processes (stories260K, [0,2] → [2,5],
// driven by the production Gateway over exactly those nodes):
// every hop signs a commitment before computing each step, its receipt cites the commitment's
// digest, and an auditor fetching the committed data gets the commitment that matches.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fetchCommitted } from '../../src/accountability/gateway/auditor.js';
import { checkCommitment } from '../../src/accountability/checks/custody.js';
import { ZERO_HASH } from '../../src/accountability/records/eip712.js';
import { hashTensor, type SignedCommitment, type SignedReceipt } from '../../src/accountability/records/receipts.js';
import { addressOfPeer, deploymentDomain } from '../../src/accountability/records/wire.js';
import { NodeProcess } from '../../src/node/process.js';
import type { RouteCandidate } from '../../src/routing/router.js';
import { openGatewaySide, type GatewaySide } from '../helpers/gateway-side.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { startedAll } from '../helpers/nodes.js';

let gw: GatewaySide | undefined;
const nodes: NodeProcess[] = [];

before(
  async () => {
    gw = openGatewaySide('odsi-commit-');
    const start = (range: [number, number], name: string) =>
      NodeProcess.start({
        model: STORIES_GGUF,
        range,
        identityFile: join(gw!.dir, `${name}.key`),
        modelId: gw!.modelId,
        announceIntervalMs: 600_000,
      });
    await startedAll([start([0, 2], 'a'), start([2, 5], 'b')], nodes);
  },
  { timeout: 30_000 },
);

after(async () => {
  await Promise.all(nodes.map((n) => n.kill('SIGTERM').catch(() => undefined)));
  await gw?.close();
});

const cand = (n: NodeProcess): RouteCandidate => n.candidate(1);

test('each hop commits before computing; its receipt cites the commitment an auditor is shown', { timeout: 30_000 }, async () => {
  const g = gw!;
  const golden = loadGolden()[0]!;
  const sessionId = 'commit-e2e';
  const gateway = await g.gateway(nodes.map(cand));
  // prefill + decode steps: at least 3 forward calls (steps 0, 1, 2) through both hops
  const { tokens } = await gateway.run({ promptIds: golden.prompt_tokens, maxTokens: 4, sampling: { temperature: 0 }, sessionId });
  assert.deepEqual(tokens, golden.generated_tokens.slice(0, 4));
  const domain = deploymentDomain(process.env);
  for (const [hop, n] of nodes.entries()) {
    const peer = { peerId: n.peerId, addrs: n.info.addrs };
    const seen = new Set<string>();
    for (let step = 0; step < 3; step++) {
      const data = await fetchCommitted(gateway.host, domain, peer, { sessionId, fromStep: step, toStep: step }, 5_000);
      const receipt = data.receipt as SignedReceipt;
      const commitment = data.commitment as SignedCommitment | undefined;
      assert.ok(commitment, `hop ${hop} step ${step}: no commitment in the audit reply`);
      checkCommitment(commitment, receipt, domain);
      const r = receipt.record;
      assert.notEqual(r.commitmentHash, ZERO_HASH, `hop ${hop} step ${step}`);
      assert.equal(r.signer.toLowerCase(), addressOfPeer(n.peerId).toLowerCase());
      assert.deepEqual([r.step, r.layerStart, r.layerEnd], [step, n.info.start, n.info.end]);
      // what the node committed to is what it keeps for auditors
      assert.equal(commitment.record.inputHash, hashTensor(data.steps[0]!.input));
      assert.equal(r.outputHash, hashTensor(data.output.bytes));
      seen.add(r.commitmentHash);
    }
    assert.equal(seen.size, 3, 'one commitment per step');
  }
});
