// Slashing protection across a crash (issue 12, item 3): a real `odsi node` process with an
// identity file (its protection database beside it), driven by an attacker peer that is the
// gateway of its own session. The node signs steps 0–2, is killed with SIGKILL mid-session and
// restarted with the same key and port; the attacker re-opens the same session id and sends
// other inputs for the signed steps. The node signs no step of that session again (a new
// session is served), and no two of all the receipts it
// ever gave form valid equivocation evidence. Control: the same key with a fresh protection
// file signs the conflicting step, and the evidence verifies (so the check above can fail).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { generateIdentity } from '../../src/identity/identity.js';
import { MsgType, type Message } from '../../src/protocol/messages.js';
import { decodeReceipts } from '../../src/protocol/receipt-codec.js';
import { SessionPeer, stepMessage, waitUntil, type RawStream } from '../../src/conformance/session-peer.js';
import { NodeProcess } from '../../src/node/process.js';
import { deploymentDomain } from '../../src/accountability/records/wire.js';
import { detectEquivocation, verifyEquivocationEvidence } from '../../src/accountability/checks/equivocation.js';
import type { SignedReceipt } from '../../src/accountability/records/receipts.js';
import { openModel } from '../../src/model/load.js';
import { STORIES_GGUF } from '../helpers/paths.js';
import { openGatewaySide, type GatewaySide } from '../helpers/gateway-side.js';

const domain = deploymentDomain({});
const SID = 'protected';
let side: GatewaySide;
let node: NodeProcess;
/** the gateway of its own sessions, speaking the frame protocol directly */
let attacker: SessionPeer;
let dim: number;
const WAIT_MS = 10_000;

before(
  async () => {
    side = openGatewaySide('odsi-protect-');
    const src = openModel(STORIES_GGUF);
    dim = src.config.dim;
    src.close();
    node = await NodeProcess.start({ model: STORIES_GGUF, range: [0, 5], identityFile: join(side.dir, 'n.key'), modelId: side.modelId, announceIntervalMs: 600_000 });
    attacker = await SessionPeer.start(generateIdentity(), WAIT_MS);
  },
  { timeout: 60_000 },
);

after(async () => {
  await attacker?.stop();
  await node?.stop().catch(() => undefined);
  await side?.close();
});

interface Session {
  s: RawStream;
  sessionId: string;
}

/** A session on `n` opened by the attacker as its own gateway (route: n alone). */
async function openSession(n: NodeProcess, sessionId = SID): Promise<Session> {
  const target = { peerId: n.peerId, addrs: n.info.addrs, start: 0, end: 5 };
  const s = await attacker.stream(target);
  const opened = () => attacker.results(sessionId).filter((m) => m.type === MsgType.OPENED).length;
  const before = opened();
  await s.ch.send({ type: MsgType.OPEN, header: attacker.open({ sessionId, modelId: side.modelId, route: [target], hidden: dim }) });
  await waitUntil('OPENED', () => opened() > before, WAIT_MS);
  return { s, sessionId };
}

/** every message on the attacker's result streams, of every session it opened */
const results = (): Message[] => [SID, `${SID}-new`].flatMap((sid) => attacker.results(sid));
const nResults = () => results().filter((m) => m.type === MsgType.RESULT).length;
const errors = (got: Message[]) => got.filter((m) => m.type === MsgType.ERROR).map((m) => m.header as { code: string; reason: string });

/** Sends one step; resolves to 'signed' (a RESULT came) or the refusal's reason. */
async function step(x: Session, stepNo: number, seed: number): Promise<string> {
  const r0 = nResults();
  const e0 = errors(x.s.got).length;
  await x.s.ch.send(stepMessage({ sessionId: x.sessionId, step: stepNo, seed, requestId: stepNo + 1, dim }));
  await waitUntil(`an answer to step ${stepNo}`, () => nResults() > r0 || errors(x.s.got).length > e0, WAIT_MS);
  return nResults() > r0 ? 'signed' : errors(x.s.got)[e0]!.reason;
}

/** every receipt signed so far: act 1.3 sends each RESULT's chain after it, in a RECEIPTS message (binary) */
async function receipts(): Promise<SignedReceipt[]> {
  const ofType = (t: MsgType) => results().filter((m) => m.type === t);
  await waitUntil('the RECEIPTS after every RESULT', () => ofType(MsgType.RECEIPTS).length >= ofType(MsgType.RESULT).length, WAIT_MS);
  return ofType(MsgType.RECEIPTS).flatMap((m) => decodeReceipts((m as { payload: Uint8Array }).payload) as unknown as SignedReceipt[]);
}

function evidenceAmong(rs: SignedReceipt[]): number {
  let n = 0;
  for (let i = 0; i < rs.length; i++)
    for (let j = i + 1; j < rs.length; j++) {
      const ev = detectEquivocation(rs[i]!, rs[j]!, domain);
      if (ev && verifyEquivocationEvidence(ev, domain)) n++;
    }
  return n;
}

test('a node killed (SIGKILL) mid-session and restarted with its key never signs two conflicting receipts for one slot', { timeout: 90_000 }, async () => {
  const s1 = await openSession(node);
  for (let i = 0; i < 3; i++) assert.equal(await step(s1, i, i + 1), 'signed');
  await node.kill('SIGKILL');
  await node.restart();
  const s2 = await openSession(node);
  // no step of a session signed for before the crash is signed again: other inputs, the same one, later steps
  for (let i = 0; i < 3; i++) assert.match(await step(s2, i, 100 + i), /before it restarted/, `step ${i}, another input`);
  assert.match(await step(s2, 1, 2), /before it restarted/, 'the same input again');
  assert.match(await step(s2, 3, 4), /before it restarted/, 'a later step');
  await s2.s.ch.close();
  // a new session is served as usual
  const s4 = await openSession(node, `${SID}-new`);
  assert.equal(await step(s4, 0, 1), 'signed', 'a new session after the restart');
  await s4.s.ch.close();
  const rs = await receipts();
  assert.ok(rs.length >= 4, `receipts: ${rs.length}`);
  assert.equal(evidenceAmong(rs), 0, 'the node signed two receipts for one slot');

  // control: the same key without its protection file signs the conflicting input
  await node.kill('SIGKILL');
  const bare = await NodeProcess.start({
    model: STORIES_GGUF,
    range: [0, 5],
    identityFile: join(side.dir, 'n.key'),
    port: node.port,
    modelId: side.modelId,
    announceIntervalMs: 600_000,
    extraArgs: ['--protection-db', join(side.dir, 'fresh.db')],
  });
  try {
    const s3 = await openSession(bare);
    assert.equal(await step(s3, 0, 100), 'signed');
    await s3.s.ch.close();
    assert.ok(evidenceAmong(await receipts()) > 0, 'without its record the node equivocates: the check above can fail');
  } finally {
    await bare.stop();
  }
});
