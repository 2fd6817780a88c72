// The gateway's per-step ends check (RouteStepChecks) in-process, on hand-built receipt
// chains of a three-hop route: who is blamed for which defect. A defect in receipt i that hop
// i+1 passed on is hop i+1's; a hash mismatch at either end of a hop's own receipt is that
// hop's; a chain of the wrong length is the last hop's. The blamed peer is convicted.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Identity } from '../../../src/identity/identity.js';
import { openModel } from '../../../src/model/load.js';
import type { WeightSource } from '../../../src/model/types.js';
import { createHost, type OdsiHost } from '../../../src/p2p/host.js';
import { encodeTensor, type StepHeader } from '../../../src/protocol/messages.js';
import type { RouteHopInfo, RouteStepView } from '../../../src/route/step-verifier.js';
import { BanList } from '../../../src/routing/bans.js';
import { ZERO_HASH, type ExecutionReceipt, type Hex } from '../../../src/accountability/records/eip712.js';
import { hashTensor, receiptHash, signReceipt } from '../../../src/accountability/records/receipts.js';
import { requestIdOf, sessionIdOf } from '../../../src/accountability/records/wire.js';
import { Referee } from '../../../src/accountability/gateway/auditor.js';
import { AuditScheduler } from '../../../src/accountability/gateway/audit-scheduler.js';
import { RouteStepChecks } from '../../../src/accountability/gateway/step-verifier.js';
import { Verdicts } from '../../../src/accountability/gateway/verdicts.js';
import { STORIES_GGUF } from '../../helpers/paths.js';
import { DOMAIN, h, testIdentity } from '../fixtures.js';

let src: WeightSource;
let host: OdsiHost;

before(async () => {
  src = openModel(STORIES_GGUF);
  host = await createHost({ identity: testIdentity(0) });
});
after(async () => {
  await host.stop();
  src.close();
});

const SESSION = 'blame-test';
const ids: Identity[] = [testIdentity(11), testIdentity(12), testIdentity(13)];
const hops: RouteHopInfo[] = ids.map((id, i) => ({ peerId: id.peerId.toString(), addrs: [], start: [0, 2, 4][i]!, end: [2, 4, 5][i]! }));
const hidden = new Float32Array([0.5, -1, 2, 0.25]);
const payload = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);

type Record = Omit<ExecutionReceipt, 'signer'>;

/** One step's view with an honest receipt chain, altered by `edit` before signing. */
function view(
  step: number,
  edit: (records: Record[], signers: Identity[]) => void = () => {},
  o: { received?: Uint8Array; drop?: boolean; prev?: Map<string, Hex> } = {},
): RouteStepView {
  const records: Record[] = [];
  let input = hashTensor(encodeTensor(hidden, 'f32'));
  hops.forEach((hop, i) => {
    const output = i === hops.length - 1 ? hashTensor(payload) : h(`out-${i}-${step}`);
    records.push({
      requestId: requestIdOf(SESSION),
      sessionId: sessionIdOf(SESSION),
      step,
      pos: step,
      nTokens: 1,
      layerStart: hop.start,
      layerEnd: hop.end,
      modelId: h('model'),
      profile: 'reference/f32',
      inputHash: input,
      budgetUs: 100_000,
      outputHash: output,
      recvUs: 1,
      computeUs: 1,
      sendUs: 1,
      upstreamReceiptHash: ZERO_HASH,
      prevReceiptHash: o.prev?.get(hop.peerId) ?? ZERO_HASH,
      commitmentHash: ZERO_HASH,
    });
    input = output;
  });
  const signers = [...ids];
  edit(records, signers);
  const receipts = records.map((r, i) => signReceipt(signers[i]!, r, DOMAIN));
  receipts.forEach((r, i) => o.prev?.set(hops[i]!.peerId, receiptHash(r.record, DOMAIN)));
  if (o.drop) receipts.pop();
  const header = {
    sessionId: SESSION,
    requestId: 1,
    step,
    pos: step,
    nTokens: 1,
    dtype: 'f32',
    shape: [1, 4],
    timeline: [],
    receipts,
  } as StepHeader;
  return {
    sessionId: SESSION,
    hops,
    dtype: 'f32',
    input: { sessionId: SESSION, pos: step, nTokens: 1, hidden },
    sent: encodeTensor(hidden, 'f32'),
    header,
    payload: o.received ?? payload,
  };
}

function checks() {
  const bans = new BanList();
  const verdicts = new Verdicts({ bans });
  const scheduler = new AuditScheduler({ host, identity: host.identity, domain: DOMAIN, referee: new Referee(src), verdicts });
  return { verifier: new RouteStepChecks({ domain: DOMAIN, verdicts, scheduler }), verdicts, bans };
}

test('an honest chain passes and convicts nobody', async () => {
  const { verifier, verdicts } = checks();
  const prev = new Map<string, Hex>(); // each signer's receipts form a hash chain
  for (let step = 0; step < 3; step++) assert.equal(await verifier.afterStep(view(step, undefined, { prev })), undefined);
  await verifier.idle();
  assert.equal(verdicts.evidence.length, 0);
  assert.equal(verdicts.stats.backgroundFailures, 0, 'signatures and chains verified in the background');
  assert.equal(verdicts.stats.receipts, 9);
});

const cases: [string, number, (records: Record[], signers: Identity[]) => void, { received?: Uint8Array; drop?: boolean }?][] = [
  ['receipt 0 covers the wrong layers: hop 1 passed it on', 1, (r) => (r[0]!.layerEnd = 3)],
  ['receipt 0 signed by someone else: hop 1 passed it on', 1, (_, s) => (s[0] = testIdentity(99))],
  ['receipt 1 names another step: hop 2 passed it on', 2, (r) => (r[1]!.step = 7)],
  ['the last receipt belongs to another session: the last hop', 2, (r) => (r[2]!.sessionId = sessionIdOf('other'))],
  ['the first hop signs an input the gateway did not send: hop 0 itself', 0, (r) => (r[0]!.inputHash = h('not sent'))],
  ['hop 1 signs an input hop 0 did not output: hop 1 itself', 1, (r) => (r[1]!.inputHash = h('not handed over'))],
  ['the last hop signs an output the gateway did not receive: the last hop', 2, () => {}, { received: new Uint8Array([9, 9, 9, 9]) }],
  ['a receipt is missing: the last hop (it assembled the result)', 2, () => {}, { drop: true }],
];

for (const [name, blamed, edit, o] of cases)
  test(`ends check blame: ${name}`, async () => {
    const { verifier, verdicts, bans } = checks();
    assert.equal(await verifier.afterStep(view(0)), undefined);
    const fail = await verifier.afterStep(view(1, edit, o));
    assert.equal(fail?.code, 'custody', JSON.stringify(fail));
    assert.equal(fail.peerId, hops[blamed]!.peerId, fail.reason);
    assert.deepEqual(
      verdicts.evidence.map((e) => [e.kind, e.peerId]),
      [['custody', hops[blamed]!.peerId]],
    );
    assert.equal(bans.isBanned(hops[blamed]!.peerId), true);
    // convicted: the next step through it fails naming it, before any check
    const next = await verifier.afterStep(view(2));
    assert.equal(next?.code, 'misbehaviour');
    assert.equal(next.peerId, hops[blamed]!.peerId);
    await verifier.idle();
  });
