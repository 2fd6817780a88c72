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
import { peerIdFromString } from '@libp2p/peer-id';
import { generateIdentity } from '../../src/identity/identity.js';
import { createHost, type OdsiHost } from '../../src/p2p/host.js';
import { Channel } from '../../src/p2p/channel.js';
import { ACT_PROTOCOL, MsgType, RESULT_PROTOCOL, encodeTensor, type Message, type StepHeader } from '../../src/protocol/messages.js';
import { OPEN_TTL_MS, signOpen, type OpenToSign } from '../../src/protocol/open-signature.js';
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
let attacker: OdsiHost;
let dim: number;
const results: Message[] = [];

before(
  async () => {
    side = openGatewaySide('odsi-protect-');
    const src = openModel(STORIES_GGUF);
    dim = src.config.dim;
    src.close();
    node = await NodeProcess.start({ model: STORIES_GGUF, range: [0, 5], identityFile: join(side.dir, 'n.key'), modelId: side.modelId, announceIntervalMs: 600_000 });
    attacker = await createHost({ identity: generateIdentity() });
    await attacker.libp2p.handle(RESULT_PROTOCOL, (stream, conn) => {
      new Channel(stream, conn.remotePeer.toString(), attacker.peerId, { onMessage: (m) => results.push(m) });
    });
  },
  { timeout: 60_000 },
);

after(async () => {
  await attacker?.stop();
  await node?.stop().catch(() => undefined);
  await side?.close();
});

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  for (const t0 = Date.now(); !cond(); ) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A session on `n` opened by the attacker as its own gateway (route: n alone). */
async function openSession(n: NodeProcess, sessionId = SID): Promise<{ ch: Channel; got: Message[]; sessionId: string }> {
  await attacker.dial(n.peerId, n.info.addrs);
  const stream = await attacker.libp2p.dialProtocol(peerIdFromString(n.peerId), ACT_PROTOCOL);
  const got: Message[] = [];
  const ch = new Channel(stream, n.peerId, attacker.peerId, { onMessage: (m) => got.push(m) });
  const issuedAt = Date.now();
  const body: OpenToSign = {
    sessionId,
    modelId: side.modelId,
    route: [{ peerId: n.peerId, addrs: n.info.addrs, start: 0, end: 5 }],
    reply: { peerId: attacker.peerId, addrs: attacker.addrs() },
    dtype: 'f32',
    hidden: dim,
    maxTokens: 64,
    issuedAt,
    expiresAt: issuedAt + OPEN_TTL_MS,
  };
  const opened = results.filter((m) => m.type === MsgType.OPENED).length;
  await ch.send({ type: MsgType.OPEN, header: { ...body, hop: 0, signature: signOpen(attacker.identity, body) } });
  await until('OPENED', () => results.filter((m) => m.type === MsgType.OPENED).length > opened);
  return { ch, got, sessionId };
}

const nResults = () => results.filter((m) => m.type === MsgType.RESULT).length;
const errors = (got: Message[]) => got.filter((m) => m.type === MsgType.ERROR).map((m) => m.header as { code: string; reason: string });

/** Sends one step; resolves to 'signed' (a RESULT came) or the refusal's reason. */
async function step(s: { ch: Channel; got: Message[]; sessionId: string }, stepNo: number, seed: number): Promise<string> {
  const x = new Float32Array(dim);
  for (let i = 0; i < dim; i++) x[i] = Math.sin(seed * 7.3 + i) * 0.5;
  const header: StepHeader = { sessionId: s.sessionId, requestId: stepNo + 1, step: stepNo, pos: 0, nTokens: 1, dtype: 'f32', shape: [1, dim], timeline: [] };
  const r0 = nResults();
  const e0 = errors(s.got).length;
  await s.ch.send({ type: MsgType.STEP, header, payload: encodeTensor(x, 'f32') });
  await until(`an answer to step ${stepNo}`, () => nResults() > r0 || errors(s.got).length > e0);
  return nResults() > r0 ? 'signed' : errors(s.got)[e0]!.reason;
}

const receipts = (): SignedReceipt[] =>
  results.filter((m) => m.type === MsgType.RESULT).flatMap((m) => (m.header.receipts ?? []) as SignedReceipt[]);

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
  await s2.ch.close();
  // a new session is served as usual
  const s4 = await openSession(node, `${SID}-new`);
  assert.equal(await step(s4, 0, 1), 'signed', 'a new session after the restart');
  await s4.ch.close();
  const rs = receipts();
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
    await s3.ch.close();
    assert.ok(evidenceAmong(receipts()) > 0, 'without its record the node equivocates: the check above can fail');
  } finally {
    await bare.stop();
  }
});
