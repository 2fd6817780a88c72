// Hostile peers against the audit protocols, on real `odsi node` processes (stories260K):
// H0 [0,2] and H1 [2,5] serve a legitimate Gateway's generation (audits on, [2,5] steps
// re-executed by the spare A [2,5]); an attacker libp2p host with its own key then
// (a) asks H0 for the legitimate session's committed inputs (the prompt's embeddings) —
//     unsigned, signed by itself, signed by the gateway for another auditor, expired — and gets
//     nothing, with the same answer as for a session that does not exist, and its fetches in
//     flight are bounded;
// (b) tries to make H1 sign two receipts for one slot: two audit-exec requests for one slot with
//     different inputs (the second is refused), and a session named `<R>/audit` plus an
//     audit-exec for R (same ids, but the re-execution receipt is another record type): no pair
//     verifyEquivocationEvidence accepts;
// (c) floods H1 with re-execution requests while the gateway generates: beyond the per-peer
//     limits they are refused with `limit:`, the greedy output equals the golden tokens, and
//     another peer is still served.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Gateway } from '../../src/gateway/gateway.js';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { NodeProcess } from '../../src/node/process.js';
import { AUDIT_EXEC_PROTOCOL, AUDIT_PROTOCOL, encodeAuditMessage, readAuditMessage, sendAuditMessage } from '../../src/protocol/audit-messages.js';
import { fetchCommitted } from '../../src/accountability/gateway/auditor.js';
import { ReexecError, requestReexecution, type ReexecRequest } from '../../src/accountability/gateway/reexec-client.js';
import { NOT_ENTITLED } from '../../src/accountability/node/step-archive.js';
import { nowSeconds, signAuditRequest, signReexecutionRequest } from '../../src/accountability/records/audit-requests.js';
import { checkSigned, type SignedReceipt } from '../../src/accountability/records/receipts.js';
import type { Hex } from '../../src/accountability/records/eip712.js';
import { detectEquivocation, verifyEquivocationEvidence } from '../../src/accountability/checks/equivocation.js';
import { addressOfPeer, deploymentDomain, requestIdOf, sessionIdOf } from '../../src/accountability/records/wire.js';
import { STORIES_GGUF, loadGolden } from '../helpers/paths.js';
import { openGatewaySide, type GatewaySide } from '../helpers/gateway-side.js';
import { startedAll } from '../helpers/nodes.js';

/** the domain the nodes sign under (their environment's, as `odsi node` reads it) */
const DOMAIN = deploymentDomain(process.env);
const LEGIT = 'hostile-legit-1';
const DIM = 64;

let side: GatewaySide;
let H0: NodeProcess, H1: NodeProcess, A: NodeProcess;
let gw: Gateway;
let attacker: OdsiHost;
const procs: NodeProcess[] = [];

const peer = (n: NodeProcess) => ({ peerId: n.peerId, addrs: n.info.addrs, start: n.info.start, end: n.info.end });

before(
  async () => {
    side = openGatewaySide('odsi-hostile-audit-');
    const start = (range: [number, number], name: string) =>
      NodeProcess.start({ model: STORIES_GGUF, range, identityFile: join(side.dir, `${name}.key`), modelId: side.modelId, announceIntervalMs: 600_000 });
    [H0, H1, A] = await startedAll([start([0, 2], 'h0'), start([2, 5], 'h1'), start([2, 5], 'a')], procs);
    attacker = await createHost({ identity: generateIdentity() });
    gw = await side.gateway([H0.candidate(1), H1.candidate(1)], {
      accountability: { domain: DOMAIN, auditRate: 1, holdAtRate: 2, auditors: [peer(A)] },
    });
  },
  { timeout: 120_000 },
);

after(async () => {
  await attacker?.stop().catch(() => undefined);
  await Promise.all(procs.map((n) => n.kill('SIGTERM').catch(() => undefined)));
  await side?.close();
});

/** One raw request on an audit protocol, as any peer can send it: the reply's header and payload size. */
async function ask(
  from: OdsiHost,
  to: NodeProcess,
  protocol: string,
  header: Record<string, unknown>,
  payload?: Uint8Array,
): Promise<{ header: Record<string, unknown>; bytes: number }> {
  const signal = AbortSignal.timeout(10_000);
  await from.dial(to.peerId, to.info.addrs, signal);
  const stream = await from.libp2p.dialProtocol(peerIdFromString(to.peerId), protocol, { signal });
  try {
    const reply = readAuditMessage(stream, 10_000);
    await sendAuditMessage(stream, header, payload);
    const m = await reply;
    return { header: m.header, bytes: m.payload.length };
  } finally {
    void stream.close().catch(() => undefined);
  }
}

async function generate(sessionId: string, nTokens: number, via: Gateway = gw): Promise<{ tokens: number[]; golden: number[] }> {
  const golden = loadGolden()[0]!;
  const r = await via.run({ promptIds: golden.prompt_tokens, maxTokens: nTokens, sampling: { temperature: 0 }, sessionId });
  return { tokens: r.tokens, golden: golden.generated_tokens.slice(0, nTokens) };
}

test('the legitimate generation is audited through signed requests and stays golden', { timeout: 60_000 }, async () => {
  const r = await generate(LEGIT, 8);
  assert.deepEqual(r.tokens, r.golden);
  const acct = gw.accountability!;
  await acct.settled();
  assert.ok(acct.audits.length >= 16, `expected ≥ 16 audits, got ${acct.audits.length}`);
  for (const a of acct.audits) assert.equal(a.pass, true, JSON.stringify(a));
  assert.ok(acct.audits.some((a) => a.executor === A.peerId), 'the [2,5] hop is re-executed by A (a signed ReexecutionRequest)');
  assert.equal(acct.evidence.length, 0);
});

test('(a) a session’s committed inputs go only to the auditor its gateway signed for', { timeout: 30_000 }, async () => {
  const now = nowSeconds();
  const q = (sessionId: string, request?: unknown) => ask(attacker, H0, AUDIT_PROTOCOL, { sessionId, fromStep: 0, toStep: 0, ...(request ? { request } : {}) });
  const forSession = (sessionId: string, auditor: Hex, expiresAt = now + 60) => ({
    auditor,
    requestId: requestIdOf(sessionId),
    sessionId: sessionIdOf(sessionId),
    fromStep: 0,
    toStep: 0,
    expiresAt,
  });
  const refused = (r: { header: Record<string, unknown>; bytes: number }, re: RegExp | string) => {
    assert.equal(r.header.ok, false, JSON.stringify(r.header).slice(0, 200));
    assert.equal(r.bytes, 0, 'a refusal carries no data');
    assert.equal(r.header.steps, undefined);
    if (typeof re === 'string') assert.equal(r.header.reason, re);
    else assert.match(String(r.header.reason), re);
    return String(r.header.reason);
  };
  refused(await q(LEGIT), /^not authorised: no signed AuditRequest/);
  const me = attacker.identity.address;
  // signed by itself: the same answer for the real session and for one that does not exist
  const own = refused(await q(LEGIT, signAuditRequest(attacker.identity, forSession(LEGIT, me), DOMAIN)), NOT_ENTITLED);
  const none = refused(await q('no-such-session', signAuditRequest(attacker.identity, forSession('no-such-session', me), DOMAIN)), NOT_ENTITLED);
  assert.equal(own, none);
  // signed by the gateway, but for another auditor, or expired, or for other steps
  const g = gw.host.identity;
  refused(await q(LEGIT, signAuditRequest(g, forSession(LEGIT, generateIdentity().address), DOMAIN)), /names another auditor/);
  refused(await q(LEGIT, signAuditRequest(g, forSession(LEGIT, me, now - 1), DOMAIN)), /expired/);
  refused(await q(LEGIT, signAuditRequest(g, { ...forSession(LEGIT, me), toStep: 5 }, DOMAIN)), /another session or other steps/);
  // a gateway's signature with another chain id is not one under this deployment's domain
  refused(await q(LEGIT, signAuditRequest(g, forSession(LEGIT, me), { chainId: 1 })), /^not authorised: AuditRequest: signed by/);
  // a request is one header, nothing more
  const big = await ask(attacker, H0, AUDIT_PROTOCOL, { sessionId: LEGIT, fromStep: 0, toStep: 0 }, new Uint8Array(1024));
  refused(big, /^bad request: bad audit message: message payload exceeds 0 bytes/);
  // fetches in flight are bounded per peer: 8 unfinished requests held open, the 9th is refused
  const held = [];
  for (let i = 0; i < 8; i++) {
    const st = await attacker.libp2p.dialProtocol(peerIdFromString(H0.peerId), AUDIT_PROTOCOL);
    st.send(encodeAuditMessage({ sessionId: LEGIT })[0]!.subarray(0, 10)); // an unfinished frame
    held.push(st);
  }
  await new Promise((r) => setTimeout(r, 300));
  refused(await q(LEGIT), /^limit: 8 audit fetches of this peer in flight \(at most 8\)/);
  for (const st of held) st.abort(new Error('done'));
  await new Promise((r) => setTimeout(r, 300));
  // the control: the owner may delegate to this peer, and then it is served
  const ok = await q(LEGIT, signAuditRequest(g, forSession(LEGIT, me), DOMAIN));
  assert.equal(ok.header.ok, true, String(ok.header.reason));
  assert.ok(ok.bytes > 0);
});

test('(b) no sequence of audit-exec requests yields equivocation evidence against an honest node', { timeout: 60_000 }, async () => {
  // the attacker runs its own gateway (own key) and a session named `<R>/audit`, R with a '.'
  const R = 'atk.1';
  const rogue = await side.gateway([H0.candidate(1), H1.candidate(1)], { accountability: { domain: DOMAIN, auditRate: 0 } });
  await generate(`${R}/audit`, 4, rogue);
  const data = await fetchCommitted(rogue.host, DOMAIN, peer(H1), { sessionId: `${R}/audit`, fromStep: 0, toStep: 2 });
  const token = data.receipt as SignedReceipt;
  const digest = checkSigned('ExecutionReceipt', token, DOMAIN);
  assert.ok(digest.ok);
  const scaled = (k: number) =>
    data.steps.map((s) => {
      assert.equal(s.dtype, 'f32');
      const f = new Float32Array(Uint8Array.from(s.input).buffer);
      for (let i = 0; i < f.length; i++) f[i] = f[i]! * k;
      return { ...s, input: new Uint8Array(f.buffer) };
    });
  const req = (steps: ReexecRequest['steps']): ReexecRequest => ({
    routeSessionId: R,
    step: 2,
    layers: [2, 5],
    modelId: side.modelId,
    auditedReceiptHash: digest.digest,
    steps,
  });
  const x = await requestReexecution(rogue.host, DOMAIN, peer(H1), req(scaled(1.5)));
  const rx = x.receipt;
  // the same ids as the token-path receipt of `<R>/audit`, another output...
  for (const k of ['requestId', 'sessionId', 'step', 'layerStart', 'layerEnd', 'signer'] as const) assert.equal(rx.record[k], token.record[k], k);
  assert.notEqual(rx.record.outputHash, token.record.outputHash);
  // ...but another record type: no evidence in either order
  assert.equal(checkSigned('ExecutionReceipt', rx, DOMAIN).ok, false);
  assert.equal(detectEquivocation(token, rx, DOMAIN), null);
  const slot = { requestId: rx.record.requestId, sessionId: rx.record.sessionId, step: 2, layerStart: 2, layerEnd: 5 };
  for (const [a, b] of [
    [token, rx],
    [rx, token],
  ])
    assert.equal(verifyEquivocationEvidence({ kind: 'equivocation', signer: rx.record.signer, slot, a: a!, b: b!, sameInput: false, detectedAt: Date.now() }, DOMAIN), false);
  // a second request for the slot with other inputs is refused; the same inputs get the same receipt
  await assert.rejects(requestReexecution(rogue.host, DOMAIN, peer(H1), req(scaled(0.5))), (e: unknown) => {
    assert.ok(e instanceof ReexecError && e.answered && e.receipt === undefined, String(e));
    assert.match(e.message, /slot_conflict/);
    return true;
  });
  const again = await requestReexecution(rogue.host, DOMAIN, peer(H1), req(scaled(1.5)));
  assert.deepEqual(again.receipt, rx);
  // a ReexecutionRequest the rogue gateway signed, replayed by another peer, is refused before any work
  const signed = signReexecutionRequest(
    rogue.host.identity,
    {
      executor: addressOfPeer(H1.peerId),
      requestId: requestIdOf('atk.2'),
      sessionId: sessionIdOf('atk.2'),
      step: 0,
      auditedReceiptHash: digest.digest,
      expiresAt: nowSeconds() + 60,
    },
    DOMAIN,
  );
  const s0 = data.steps[0]!;
  const replay = await ask(attacker, H1, AUDIT_EXEC_PROTOCOL, {
    request: signed,
    routeSessionId: 'atk.2',
    step: 0,
    layers: [2, 5],
    modelId: side.modelId,
    auditedReceiptHash: digest.digest,
    steps: [{ step: 0, pos: 0, nTokens: s0.nTokens, dtype: s0.dtype, bytes: s0.input.length }],
  }, s0.input);
  assert.equal(replay.header.ok, false);
  assert.equal(replay.bytes, 0);
  assert.match(String(replay.header.reason), /not authorised: the ReexecutionRequest is not signed by the requesting peer/);
});

test('(c) a flood of re-execution requests is refused beyond the per-peer limits; the generation stays golden', { timeout: 120_000 }, async () => {
  const N = 160;
  const input = new Uint8Array(new Float32Array(DIM).fill(0.25).buffer);
  const one = (i: number): ReexecRequest => ({
    routeSessionId: `flood-${i}`,
    step: 0,
    layers: [2, 5],
    modelId: side.modelId,
    auditedReceiptHash: `0x${'ab'.repeat(32)}`,
    steps: [{ step: 0, pos: 0, nTokens: 1, dtype: 'f32', input }],
  });
  const outcome = { served: 0, inFlight: 0, perMinute: 0, other: [] as string[] };
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const i = next++;
      try {
        await requestReexecution(attacker, DOMAIN, peer(H1), one(i), 15_000);
        outcome.served++;
      } catch (e) {
        const m = (e as Error).message;
        if (/refused the re-execution: limit: .* in flight/.test(m)) outcome.inFlight++;
        else if (/refused the re-execution: limit: .* this minute/.test(m)) outcome.perMinute++;
        else outcome.other.push(m);
      }
    }
  };
  const [r] = await Promise.all([generate('hostile-legit-2', 12), Promise.all(Array.from({ length: 8 }, worker))]);
  console.log(`flood of ${N} re-execution requests: ${JSON.stringify({ ...outcome, other: outcome.other.length })}`);
  assert.deepEqual(r.tokens, r.golden);
  assert.deepEqual(outcome.other, []);
  assert.equal(outcome.served + outcome.inFlight + outcome.perMinute, N);
  assert.ok(outcome.served <= 120, `served ${outcome.served} > 120 per minute`);
  assert.ok(outcome.inFlight + outcome.perMinute >= N - 120, JSON.stringify(outcome));
  // then one at a time: the per-minute bound
  for (let i = 0; i < 130 && outcome.perMinute === 0; i++) {
    try {
      await requestReexecution(attacker, DOMAIN, peer(H1), one(N + 10 + i), 15_000);
      outcome.served++;
    } catch (e) {
      assert.match((e as Error).message, /refused the re-execution: limit: 120 re-executions of this peer this minute \(at most 120\)/);
      outcome.perMinute++;
    }
  }
  console.log(`then one at a time: ${JSON.stringify({ ...outcome, other: outcome.other.length })}`);
  assert.equal(outcome.perMinute, 1);
  // the minute's budget also counts the attacker's earlier (refused after admission) request
  assert.ok(outcome.served <= 120 && outcome.served >= 100, `served ${outcome.served}`);
  // another peer is still served by the flooded node
  const ok = await requestReexecution(gw.host, DOMAIN, peer(H1), one(N + 1));
  assert.equal(ok.output.length, DIM);
});
