// The conformance kit: plays odsi's protocols against one node (any implementation) and
// reports pass/fail per numbered rule of docs/protocol.md §11. It connects as a gateway (hop 0
// sessions through the target alone, the target being the last hop), as the hop before the
// target (custody rules: it signs the upstream receipts itself), as a stranger (a second key),
// and as an auditor, and sends the hostile cases the spec says must be refused.
//
// What the target must offer: the activation protocols, the advert protocol, accountability
// on (receipts, audits) under the given EIP-712 domain, and a reference of the model it serves
// (model id, hidden size, KV width). Every check is bounded in time; the whole run takes a few
// seconds on loopback.

import { peerIdFromString } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { generateIdentity, type Identity } from '../identity/identity.js';
import { ADVERT_PROTOCOL } from '../p2p/adverts.js';
import { verifyAdvertRecord, type NodeAdvert } from '../p2p/advert-record.js';
import { FLAG_MORE, FRAME_MAGIC, PREAMBLE_BYTES, encodeFrame } from '../protocol/frame.js';
import { AUDIT_EXEC_PROTOCOL, AUDIT_PROTOCOL, readAuditMessage, sendAuditMessage } from '../protocol/audit-messages.js';
import {
  KV_PROTOCOL,
  MAX_ROUTE_HOPS,
  MsgType,
  encodeHeader,
  type Dtype,
  type ErrorHeader,
  type Message,
  type OpenHeader,
  type StepHeader,
} from '../protocol/messages.js';
import { signOpen, type OpenToSign } from '../protocol/open-signature.js';
import { checkErrorSignature } from '../protocol/error-signature.js';
import {
  LAST_ROW_PROFILE,
  ZERO_HASH,
  isLastRowProfile,
  type ExecutionReceipt,
  type Hex,
  type OdsiDomain,
} from '../accountability/records/eip712.js';
import { checkSigned, hashTensor, receiptHash, signReceipt, type SignedReceipt } from '../accountability/records/receipts.js';
import { nowSeconds, signAuditRequest, signReexecutionRequest } from '../accountability/records/audit-requests.js';
import { addressOfPeer, requestIdOf, sessionIdOf, toModelId } from '../accountability/records/wire.js';
import { compareOutputs } from '../accountability/checks/tolerance.js';
import type { Stage } from '../engine/types.js';
import { RuleFailure, SessionPeer, pause, stepInput, stepMessage, type OpenFields, type RawStream } from './session-peer.js';
import { decodeReceipts, encodeReceipt, encodeReceipts, type WireReceipt } from '../protocol/receipt-codec.js';

export interface ConformanceTarget {
  /** a multiaddr ending in /p2p/<peer id> */
  multiaddr: string;
  modelId: string;
  /** the model's hidden size */
  dim: number;
  /** nKvHeads × headDim */
  kvDim: number;
  /** the deployment's EIP-712 domain (receipts, audit requests) */
  domain: OdsiDomain;
  /** a reference engine for the target's layers (rule S10: the node computes those layers); absent: S10 fails as not checked */
  reference?(range: { start: number; end: number }): Promise<Stage>;
}

export interface ConformanceOptions {
  /** how long one expected answer may take (default 10 s) */
  waitMs?: number;
  /** how long "nothing arrives" is watched (default 200 ms) */
  quietMs?: number;
  /** run only these rules: a full id (`C1`) names that rule alone, a group letter (`C`) all of its rules */
  only?: string[];
  /** each result as it is known (in completion order; the returned list is in rule order) */
  onResult?(r: RuleResult): void;
  /** rules run at a time after D1 (default 4; each uses sessions of its own) */
  concurrency?: number;
}

export interface RuleResult {
  id: string;
  title: string;
  pass: boolean;
  /** why it failed (empty when it passed) */
  detail: string;
  ms: number;
}

/** What {@link Kit.upstreamStep} builds: one STEP sent as the hop before the target, with the kit's own receipt for it. */
interface UpstreamStepParameters {
  /** the step number (default 0) */
  step?: number;
  /** the position of its first token (default 0) */
  pos?: number;
  /** its token count (default 1) */
  nTokens?: number;
  /** the hidden state sent; the receipt's inputHash and outputHash are its hash */
  payload: Uint8Array;
  /** the digest of the kit's previous receipt in the session (default ZERO_HASH: none) */
  prev?: Hex;
  /** receipt fields that replace the honest ones before signing (a wrong session, slot, layer or hash) */
  edit?: Partial<ExecutionReceipt>;
  /** who signs the receipt (default the kit's gateway, which the target's route names as upstream) */
  signer?: Identity;
  /** what the STEP carries as its receipts, given the signed receipt (default: that receipt alone) */
  carry?: (receipt: SignedReceipt) => SignedReceipt[] | Uint8Array;
}

interface UpstreamStepReturnType {
  /** the STEP (its receipts go as the RECEIPTS message after it, see {@link Kit.send}) */
  message: Message;
  /** the kit's signed receipt, as built (before `carry`) */
  receipt: SignedReceipt;
}

interface Rule {
  id: string;
  title: string;
  run(k: Kit): Promise<void>;
}

const fail = (msg: string): never => {
  throw new RuleFailure(msg);
};
function expect(cond: unknown, msg: string): asserts cond {
  if (!cond) fail(msg);
}
const hdr = (m: Message) => m.header as unknown as Record<string, unknown>;
const isError = (m: Message) => m.type === MsgType.ERROR;
const codeOf = (m: Message) => String(hdr(m).code);
const show = (m: Message | undefined) => (m ? `${MsgType[m.type] ?? m.type} ${JSON.stringify(m.header).slice(0, 300)}` : 'nothing');

/** The state and helpers one run shares between its rules. */
class Kit {
  private n = 0;
  readonly run = `c${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
  advert?: NodeAdvert;

  constructor(
    readonly t: ConformanceTarget,
    readonly target: { peerId: string; addrs: string[] },
    /** the gateway (and upstream hop) */
    readonly g: SessionPeer,
    /** a stranger with its own key */
    readonly x: SessionPeer,
    readonly waitMs: number,
    readonly quietMs: number,
  ) {}

  sid(tag: string): string {
    return `${this.run}-${tag}-${++this.n}`;
  }

  get range(): { start: number; end: number } {
    if (!this.advert) fail('the target advert is unknown (rule D1 failed)');
    return { start: this.advert!.start, end: this.advert!.end };
  }

  targetHop() {
    return { peerId: this.target.peerId, addrs: this.target.addrs, start: this.range.start, end: this.range.end };
  }

  /** the hop the kit plays before the target: layers [start, start) end where the target starts */
  upstreamHop() {
    return { peerId: this.g.peerId, addrs: this.g.host.addrs(), start: this.range.start, end: this.range.start };
  }

  /** A signed OPEN (hop 0 unless given) for the gateway `by` (default: the kit's gateway), signed by `signer`. */
  open(fields: Partial<OpenFields> & { sessionId: string }, by: SessionPeer = this.g, signer: Identity = by.identity): OpenHeader {
    const h = by.open({ modelId: this.t.modelId, route: [this.targetHop()], hidden: this.t.dim, ...fields });
    if (signer === by.identity) return h;
    const { hop, signature: _own, ...body } = h;
    return { ...body, hop, signature: signOpenAs(signer, body) };
  }

  /** Opens a stream and sends `open`; resolves with the stream once OPENED arrived on the result stream. */
  async opened(open: OpenHeader, by: SessionPeer = this.g): Promise<RawStream> {
    const s = await by.stream(this.target);
    const sid = open.sessionId;
    const since = by.results(sid).length;
    await s.ch.send({ type: MsgType.OPEN, header: open });
    const got = await waitEither(
      () =>
        by
          .results(sid)
          .slice(since)
          .find((m) => m.type === MsgType.OPENED),
      () => s.got.find(isError),
      this.waitMs,
      `OPENED for ${sid}`,
    );
    if (got.type !== MsgType.OPENED) fail(`OPEN of ${sid} was refused: ${show(got)}`);
    return s;
  }

  /** Sends `open` on a fresh stream and returns the first ERROR (fails if OPENED comes instead). */
  async refusedOpen(open: OpenHeader, by: SessionPeer = this.g): Promise<Message> {
    const s = await by.stream(this.target);
    const since = by.results(open.sessionId).length;
    await s.ch.send({ type: MsgType.OPEN, header: open });
    const got = await waitEither(
      () => s.got.find(isError),
      () =>
        by
          .results(open.sessionId)
          .slice(since)
          .find((m) => m.type === MsgType.OPENED),
      this.waitMs,
      `a refusal of OPEN ${open.sessionId}`,
    );
    void s.ch.close();
    if (got.type !== MsgType.ERROR) fail(`OPEN ${open.sessionId} was accepted (OPENED), it must be refused`);
    return got;
  }

  input(nTokens: number, seed: number, dtype: Dtype = 'f32'): Uint8Array {
    return stepInput(nTokens, this.t.dim, seed, dtype);
  }

  /** session-peer's stepMessage with this target's width; `extra` header members and `payload` replace its own */
  step(
    sid: string,
    o: { step: number; pos: number; nTokens: number; seed?: number; dtype?: Dtype; extra?: Record<string, unknown>; payload?: Uint8Array },
  ): Message {
    const m = stepMessage({ sessionId: sid, step: o.step, pos: o.pos, nTokens: o.nTokens, seed: o.seed, dtype: o.dtype, dim: this.t.dim });
    return { type: MsgType.STEP, header: { ...(m.header as StepHeader), ...o.extra } as StepHeader, payload: o.payload ?? m.payload! };
  }

  /**
   * Sends a message; a STEP whose header names `receipts` (the kit's test notation) goes as the
   * STEP without them, then a RECEIPTS message carrying them (docs/protocol.md §4.3): a chain of
   * signed receipts, or raw payload bytes for malformed ones.
   */
  async send(s: RawStream, m: Message): Promise<void> {
    const h = hdr(m);
    if (m.type !== MsgType.STEP || !('receipts' in h)) return s.ch.send(m);
    const { receipts, ...header } = h as Record<string, unknown>;
    await s.ch.send({ ...m, header } as Message);
    if (receipts === undefined) return;
    const payload = receipts instanceof Uint8Array ? receipts : encodeReceipts(receipts as WireReceipt[]);
    await s.ch.send({
      type: MsgType.RECEIPTS,
      header: { sessionId: String(h.sessionId), requestId: Number(h.requestId), step: Number(h.step) },
      payload,
    });
  }

  /**
   * Sends a STEP and waits for its RESULT (requestId matched) and the RECEIPTS after it, or an
   * ERROR about it; fails on the ERROR. The returned RESULT's header holds the decoded chain as
   * `receipts`.
   */
  async result(s: RawStream, sid: string, m: Message, by: SessionPeer = this.g): Promise<Message> {
    const rid = hdr(m).requestId;
    const before = s.got.length;
    const start = by.results(sid).length;
    await this.send(s, m);
    const got = await waitEither(
      () => by.results(sid).find((r) => r.type === MsgType.RESULT && hdr(r).requestId === rid && !usedResults.has(r)),
      () => s.got.slice(before).find(isError),
      this.waitMs,
      `RESULT of step ${String(hdr(m).step)} of ${sid}`,
    );
    if (got.type !== MsgType.RESULT) fail(`step ${String(hdr(m).step)} of ${sid} was refused: ${show(got)}`);
    usedResults.add(got);
    const rs = await waitEither(
      () =>
        by
          .results(sid)
          .slice(start)
          .find((r) => r.type === MsgType.RECEIPTS && hdr(r).requestId === rid && !usedResults.has(r)),
      () => s.got.slice(before).find(isError),
      this.waitMs,
      `RECEIPTS of step ${String(hdr(m).step)} of ${sid} (after its RESULT)`,
    );
    if (rs.type !== MsgType.RECEIPTS) fail(`step ${String(hdr(m).step)} of ${sid} got no receipts: ${show(rs)}`);
    usedResults.add(rs);
    let receipts: WireReceipt[] = [];
    try {
      receipts = decodeReceipts(rs.payload!);
    } catch (e) {
      fail(`RECEIPTS of step ${String(hdr(m).step)} of ${sid} do not decode: ${(e as Error).message}`);
    }
    return { ...got, header: { ...hdr(got), receipts } } as Message;
  }

  /**
   * Sends a message and returns the next ERROR on the stream; fails if it is accepted instead: a
   * RESULT for it arrives (or, with `signedOnly`, for custody failures, where the output goes on
   * before the receipts are checked: a RECEIPTS for it, i.e. the target signed).
   */
  async error(s: RawStream, m: Message, sid?: string, by: SessionPeer = this.g, signedOnly = false): Promise<Message> {
    const before = s.got.length;
    const rid = hdr(m).requestId;
    const accepted = signedOnly ? MsgType.RECEIPTS : MsgType.RESULT;
    await this.send(s, m);
    const got = await waitEither(
      () => s.got.slice(before).find(isError),
      () =>
        sid === undefined ? undefined : by.results(sid).find((r) => r.type === accepted && hdr(r).requestId === rid && !usedResults.has(r)),
      this.waitMs,
      `an ERROR answering ${MsgType[m.type]}`,
    );
    if (got.type !== MsgType.ERROR) fail(`${MsgType[m.type]} was answered with a ${MsgType[got.type]}; an ERROR was required`);
    return got;
  }

  /** The kit's own receipt as the hop before the target, for a STEP carrying `payload` (see upstreamStep). */
  private upstreamReceipt(
    sid: string,
    o: { step: number; pos: number; nTokens: number; payload: Uint8Array; prev: Hex },
    edit: Partial<ExecutionReceipt> = {},
    signer = this.g.identity,
  ): SignedReceipt {
    const up = this.upstreamHop();
    return signReceipt(
      signer,
      {
        requestId: requestIdOf(sid),
        sessionId: sessionIdOf(sid),
        step: o.step,
        pos: o.pos,
        nTokens: o.nTokens,
        layerStart: up.start,
        layerEnd: up.end,
        modelId: toModelId(this.t.modelId),
        profile: 'conformance',
        inputHash: hashTensor(o.payload),
        budgetUs: 0,
        outputHash: hashTensor(o.payload),
        recvUs: 0,
        computeUs: 0,
        sendUs: 0,
        upstreamReceiptHash: ZERO_HASH,
        prevReceiptHash: o.prev,
        commitmentHash: ZERO_HASH,
        ...edit,
      },
      this.t.domain,
    );
  }

  /**
   * The custody rules' step: a STEP for `sid` carrying `payload`, with the receipt the kit signs
   * for it as the upstream hop (edited, signed by another key or carried otherwise as asked).
   */
  upstreamStep(sid: string, p: UpstreamStepParameters): UpstreamStepReturnType {
    const slot = { step: p.step ?? 0, pos: p.pos ?? 0, nTokens: p.nTokens ?? 1 };
    const receipt = this.upstreamReceipt(sid, { ...slot, payload: p.payload, prev: p.prev ?? ZERO_HASH }, p.edit, p.signer);
    const receipts = p.carry ? p.carry(receipt) : [receipt];
    return { message: this.step(sid, { ...slot, payload: p.payload, extra: { receipts } }), receipt };
  }

  /** A session in which the kit is hop 0 (upstream) and the target hop 1 (last). */
  async upstreamSession(tag: string): Promise<{ sid: string; s: RawStream }> {
    const sid = this.sid(tag);
    const s = await this.opened(this.open({ sessionId: sid, hop: 1, route: [this.upstreamHop(), this.targetHop()] }));
    return { sid, s };
  }

  /** Checks that a custody ERROR with sub-code `sub` blames the kit's upstream hop and that no RESULT follows. */
  async expectCustody(s: RawStream, sid: string, m: Message, sub: string, hop = 1, signsNothing = true): Promise<void> {
    const e = await this.error(s, m, sid, this.g, true);
    const h = hdr(e);
    expect(h.code === 'custody', `expected ERROR custody, got ${show(e)}`);
    expect(h.peerId === this.g.peerId, `custody ERROR must name the upstream hop ${this.g.peerId} in peerId, got ${String(h.peerId)}`);
    expect(
      String(h.reason).startsWith(`chain of custody: ${sub}:`),
      `custody reason must start "chain of custody: ${sub}:", got "${String(h.reason)}"`,
    );
    expect(h.sessionId === sid && h.requestId === hdr(m).requestId, 'custody ERROR must carry the sessionId and requestId of the STEP');
    expect(h.hop === hop, `custody ERROR must carry hop = ${hop} (the reporting hop's index), got ${String(h.hop)}`);
    // the output went on before the check (act 1.3.0), but the target must sign nothing for it:
    // a node answers a step's receipts with its RECEIPTS or an ERROR, never both: a short look suffices
    if (!signsNothing) return;
    await pause(Math.min(50, this.quietMs));
    const rid = hdr(m).requestId;
    expect(
      !this.g.results(sid).some((r) => r.type === MsgType.RECEIPTS && hdr(r).requestId === rid),
      'the target signed a receipt for an input whose upstream chain did not verify',
    );
  }
}

/** Whether two signed receipts are the same bytes on the wire (the same record and signature, whatever the JSON member order). */
function sameReceipt(a: unknown, b: unknown): boolean {
  try {
    return Buffer.compare(encodeReceipt(a as WireReceipt), encodeReceipt(b as WireReceipt)) === 0;
  } catch {
    return false;
  }
}

/** RESULT messages already matched to a STEP (a repeated requestId must find the next one). */
const usedResults = new WeakSet<Message>();

async function waitEither(a: () => Message | undefined, b: () => Message | undefined, ms: number, what: string): Promise<Message> {
  const t0 = Date.now();
  for (;;) {
    const v = a() ?? b();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new RuleFailure(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Signs an OPEN with a key other than its reply's (a forgery the target must refuse). */
function signOpenAs(signer: Identity, body: OpenToSign): string {
  return signOpen(signer, { ...body, reply: { ...body.reply, peerId: signer.peerId.toString() } });
}

function preamble(o: { magic?: Uint8Array; version?: number; type: number; flags?: number; h: number; p: number }): Uint8Array {
  const b = new Uint8Array(PREAMBLE_BYTES);
  const dv = new DataView(b.buffer);
  b.set(o.magic ?? FRAME_MAGIC, 0);
  b[4] = o.version ?? 1;
  b[5] = o.type;
  dv.setUint16(6, o.flags ?? 0, true);
  dv.setUint32(8, o.h, true);
  dv.setUint32(12, o.p, true);
  return b;
}
function frame(type: number, header: string, flags = 0): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(PREAMBLE_BYTES + h.length);
  out.set(preamble({ type, flags, h: h.length, p: 0 }));
  out.set(h, PREAMBLE_BYTES);
  return out;
}

/** Fails unless the ERROR `e` names the target in `from` under a valid signature (docs/protocol.md §5). */
function signedByTarget(k: Kit, e: Message, what: string): void {
  const h = e.header as ErrorHeader;
  expect(h.from === k.target.peerId, `${what}: the ERROR must name the node in from, got ${show(e)}`);
  const why = checkErrorSignature(h);
  expect(why === undefined, `${what}: ${why}: ${show(e)}`);
}

/** Sends raw bytes and expects ERROR `code` followed by the stream's reset. */
async function fatal(k: Kit, bytes: Uint8Array, code: string): Promise<void> {
  const s = await k.g.stream(k.target);
  s.ch.stream.send(bytes);
  const e = await s.next(`ERROR ${code}`, isError);
  expect(codeOf(e) === code, `expected ERROR ${code}, got ${show(e)}`);
  await waitForClosed(s, k.waitMs);
}
async function waitForClosed(s: RawStream, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!s.closed()) {
    if (Date.now() - t0 > ms) fail('the stream was not reset after a framing violation');
    await pause(10);
  }
}

/** Sends raw bytes, expects ERROR `code`, and that the stream still answers (an unknown session's CLOSE). */
async function kept(k: Kit, bytes: Uint8Array, code: string): Promise<void> {
  await keptError(k, bytes, code);
}
/** kept(), returning the ERROR */
async function keptError(k: Kit, bytes: Uint8Array, code: string): Promise<Message> {
  const s = await k.g.stream(k.target);
  s.ch.stream.send(bytes);
  const e = await s.next(`ERROR ${code}`, isError);
  expect(codeOf(e) === code, `expected ERROR ${code}, got ${show(e)}`);
  const n = s.got.length;
  await s.ch.send({ type: MsgType.CLOSE, header: { sessionId: 'no-such-session' } });
  const again = await s.next('an answer on the same stream', (m) => s.got.indexOf(m) >= n && isError(m));
  expect(codeOf(again) === 'unknown_session', `the stream must stay usable after a message error; got ${show(again)}`);
  void s.ch.close();
  return e;
}

async function refusedWith(k: Kit, open: OpenHeader, code: string, reason?: RegExp, by?: SessionPeer): Promise<Message> {
  const e = await k.refusedOpen(open, by);
  expect(codeOf(e) === code, `expected ERROR ${code}, got ${show(e)}`);
  if (reason) expect(reason.test(String(hdr(e).reason)), `reason "${String(hdr(e).reason)}" does not match ${reason}`);
  return e;
}

function checkReceiptOf(
  k: Kit,
  r: unknown,
  o: { sid: string; step: number; pos: number; nTokens: number; input: Uint8Array; output: Uint8Array; upstream: Hex; prev: Hex },
): SignedReceipt {
  const v = checkSigned('ExecutionReceipt', r, k.t.domain);
  expect(v.ok, `receipt does not verify: ${v.ok ? '' : v.reason}`);
  const rec = (r as SignedReceipt).record;
  const want: Partial<Record<keyof ExecutionReceipt, unknown>> = {
    signer: addressOfPeer(k.target.peerId),
    requestId: requestIdOf(o.sid),
    sessionId: sessionIdOf(o.sid),
    step: o.step,
    pos: o.pos,
    nTokens: o.nTokens,
    layerStart: k.range.start,
    layerEnd: k.range.end,
    modelId: toModelId(k.t.modelId),
    inputHash: hashTensor(o.input),
    outputHash: hashTensor(o.output),
    upstreamReceiptHash: o.upstream,
    prevReceiptHash: o.prev,
  };
  for (const [f, w] of Object.entries(want)) {
    const got = (rec as unknown as Record<string, unknown>)[f];
    const same = typeof w === 'string' ? String(got).toLowerCase() === w.toLowerCase() : got === w;
    expect(same, `receipt ${f} = ${String(got)}, expected ${String(w)}`);
  }
  return r as SignedReceipt;
}

// ---- the rules (ids and texts as in docs/protocol.md §11) ----

const RULES: Rule[] = [
  {
    id: 'D1',
    title: 'advert fetch (/odsi/advert/1.0.0): varint-length-prefixed model id in, the signed advert record of the target out',
    run: async (k) => {
      await k.g.host.dial(k.target.peerId, k.target.addrs, AbortSignal.timeout(k.waitMs));
      const stream = await k.g.host.libp2p.dialProtocol(peerIdFromString(k.target.peerId), ADVERT_PROTOCOL, {
        signal: AbortSignal.timeout(k.waitMs),
      });
      const lp = lpStream(stream, { maxDataLength: 16 * 1024 });
      await lp.write(new TextEncoder().encode(k.t.modelId), { signal: AbortSignal.timeout(k.waitMs) });
      const rec = (await lp.read({ signal: AbortSignal.timeout(k.waitMs) })).subarray();
      await stream.close().catch(() => {});
      expect(rec.length > 0, 'the target returned an empty record for its own model');
      const a = verifyAdvertRecord(rec);
      expect(a.peerId === k.target.peerId, `advert names ${a.peerId}, not the target`);
      expect(a.modelId === k.t.modelId, `advert is for model ${a.modelId}`);
      k.advert = a;
    },
  },
  {
    id: 'F1',
    title: 'bad magic → ERROR bad_frame, stream reset',
    run: (k) => fatal(k, preamble({ magic: new Uint8Array([0xde, 0xad, 0xbe, 0xef]), type: 1, h: 2, p: 0 }), 'bad_frame'),
  },
  {
    id: 'F2',
    title: 'unknown frame version → ERROR bad_frame, stream reset',
    run: (k) => fatal(k, preamble({ version: 2, type: 1, h: 2, p: 0 }), 'bad_frame'),
  },
  {
    id: 'F3',
    title: 'payload length over 1 MiB in the preamble → ERROR too_large before any body is sent',
    run: (k) => fatal(k, preamble({ type: MsgType.STEP, h: 2, p: 2 * 1024 * 1024 }), 'too_large'),
  },
  {
    id: 'F4',
    title: 'header length over 64 KiB → ERROR too_large',
    run: (k) => fatal(k, preamble({ type: MsgType.STEP, h: 64 * 1024 + 1, p: 0 }), 'too_large'),
  },
  {
    id: 'F5',
    title: 'first frame of a message without header → ERROR bad_frame',
    run: (k) => fatal(k, preamble({ type: MsgType.STEP, h: 0, p: 0 }), 'bad_frame'),
  },
  {
    id: 'F6',
    title: 'continuation frame of another type → ERROR bad_frame',
    run: (k) => {
      const first = frame(MsgType.CLOSE, '{"sessionId":"x"}', FLAG_MORE);
      const cont = preamble({ type: MsgType.TRUNCATE, h: 0, p: 0 });
      const b = new Uint8Array(first.length + cont.length);
      b.set(first);
      b.set(cont, first.length);
      return fatal(k, b, 'bad_frame');
    },
  },
  {
    id: 'M1',
    title: 'header not UTF-8 JSON → ERROR bad_message, stream kept',
    run: (k) => kept(k, frame(MsgType.CLOSE, '{not json'), 'bad_message'),
  },
  { id: 'M2', title: 'unknown message type → ERROR bad_message, stream kept', run: (k) => kept(k, frame(0x7f, '{}'), 'bad_message') },
  {
    id: 'M3',
    title: 'header failing its schema → ERROR bad_message, stream kept',
    run: (k) => kept(k, frame(MsgType.TRUNCATE, '{"sessionId":"s","pos":-1}'), 'bad_message'),
  },
  {
    id: 'M4',
    title: 'STEP before any OPEN on the stream → ERROR unknown_session',
    run: async (k) => {
      const s = await k.g.stream(k.target);
      const e = await k.error(s, k.step('never-opened', { step: 0, pos: 0, nTokens: 1 }));
      expect(codeOf(e) === 'unknown_session', `expected unknown_session, got ${show(e)}`);
      void s.ch.close();
    },
  },
  {
    id: 'M5',
    title: 'an ERROR is never answered with an ERROR',
    run: async (k) => {
      const s = await k.g.stream(k.target);
      await s.ch.send({ type: MsgType.ERROR, header: { code: 'internal', reason: 'conformance', peerId: k.g.peerId } });
      s.ch.stream.send(frame(MsgType.ERROR, '{"code":7}'));
      await pause(k.quietMs);
      expect(s.got.length === 0, `the target answered an ERROR: ${show(s.got[0])}`);
      void s.ch.close();
    },
  },
  {
    id: 'M6',
    title: 'STEP whose binary header has a byte after it → ERROR bad_message naming its sessionId and requestId, stream kept',
    run: async (k) => {
      const m = k.step('m6-trailing-byte', { step: 0, pos: 0, nTokens: 1 });
      const h = encodeHeader(m);
      const header = new Uint8Array(h.length + 1);
      header.set(h);
      const e = await keptError(k, encodeFrame({ type: MsgType.STEP, flags: 0, header, payload: m.payload! }), 'bad_message');
      const got = hdr(e);
      expect(
        got.sessionId === 'm6-trailing-byte' && got.requestId === hdr(m).requestId,
        `the ERROR must name the STEP's sessionId and requestId; got ${show(e)}`,
      );
    },
  },
  {
    id: 'E1',
    title: 'an ERROR about a session is signed by the node: from = its peer id, signature over the ERROR (a refused OPEN, a refused STEP)',
    run: async (k) => {
      const refused = await refusedWith(k, k.open({ sessionId: k.sid('signed-open'), modelId: 'f'.repeat(64) }), 'wrong_model');
      signedByTarget(k, refused, 'a refused OPEN');
      const sid = k.sid('signed-step');
      const s = await k.opened(k.open({ sessionId: sid }));
      const bad = k.step(sid, { step: 0, pos: 0, nTokens: 1 });
      (bad.header as StepHeader).shape = [1, k.t.dim + 1];
      signedByTarget(k, await k.error(s, bad, sid), 'a refused STEP');
      void s.ch.close();
    },
  },
  {
    id: 'S1',
    title: 'happy path: OPEN → OPENED (peers = route) on /odsi/result/1.0.0 from the last hop; STEP → RESULT echoing the step',
    run: async (k) => {
      const sid = k.sid('happy');
      const s = await k.opened(k.open({ sessionId: sid }));
      const op = k.g.results(sid).find((m) => m.type === MsgType.OPENED)!;
      expect(
        JSON.stringify(hdr(op).peers) === JSON.stringify([k.target.peerId]),
        `OPENED peers ${JSON.stringify(hdr(op).peers)} ≠ the route's peer ids`,
      );
      const m = k.step(sid, { step: 0, pos: 0, nTokens: 3 });
      const r = await k.result(s, sid, m);
      const h = hdr(r);
      for (const f of ['sessionId', 'requestId', 'step', 'pos', 'nTokens', 'dtype'] as const)
        expect(h[f] === hdr(m)[f], `RESULT ${f} ${String(h[f])} ≠ STEP ${String(hdr(m)[f])}`);
      expect(JSON.stringify(h.shape) === JSON.stringify([3, k.t.dim]), `RESULT shape ${JSON.stringify(h.shape)}`);
      expect(r.payload!.length === 3 * k.t.dim * 4, `RESULT payload ${r.payload!.length} bytes`);
      const tl = h.timeline as { peerId: string; start: number; end: number }[];
      expect(
        Array.isArray(tl) && tl.length === 1 && tl[0]!.peerId === k.target.peerId,
        "RESULT timeline must carry one entry, the target's",
      );
      await s.ch.send({ type: MsgType.CLOSE, header: { sessionId: sid } });
      await waitForClosedResult(k, sid);
    },
  },
  {
    id: 'S2',
    title:
      'receipts: hop 0 carries none; the last hop appends its receipt (fields, signature, prevReceiptHash chain, upstreamReceiptHash 0)',
    run: async (k) => {
      const sid = k.sid('receipts');
      const s = await k.opened(k.open({ sessionId: sid }));
      let prev: Hex = ZERO_HASH;
      let pos = 0;
      for (const [i, n] of [4, 1, 1].entries()) {
        const m = k.step(sid, { step: i, pos, nTokens: n });
        const r = await k.result(s, sid, m);
        const rs = hdr(r).receipts;
        expect(
          Array.isArray(rs) && rs.length === 1,
          `RESULT of hop 0 session must carry exactly 1 receipt, has ${JSON.stringify(rs)?.slice(0, 80)}`,
        );
        const rec = checkReceiptOf(k, rs[0], {
          sid,
          step: i,
          pos,
          nTokens: n,
          input: m.payload!,
          output: r.payload!,
          upstream: ZERO_HASH,
          prev,
        });
        prev = receiptHash(rec.record, k.t.domain);
        pos += n;
      }
      void s.ch.close();
    },
  },
  {
    id: 'S3',
    title: 'a hop answers in the dtype it received (f16, bf16), and signs its profile with +act-<dtype>',
    run: async (k) => {
      for (const dtype of ['f16', 'bf16'] as const) {
        const sid = k.sid(dtype);
        const s = await k.opened(k.open({ sessionId: sid, dtype }));
        const m = k.step(sid, { step: 0, pos: 0, nTokens: 2, dtype });
        const r = await k.result(s, sid, m);
        expect(
          hdr(r).dtype === dtype && r.payload!.length === 2 * k.t.dim * 2,
          `RESULT must be ${dtype} (${2 * k.t.dim * 2} bytes), got ${String(hdr(r).dtype)} ${r.payload!.length}`,
        );
        const rec = (hdr(r).receipts as SignedReceipt[])[0]!.record;
        expect(rec.profile.endsWith(`+act-${dtype}`), `profile "${rec.profile}" must end with +act-${dtype}`);
        void s.ch.close();
      }
    },
  },
  {
    id: 'S4',
    title:
      'STEP shape or payload size not matching, or a NaN or infinite value in it → ERROR bad_message (session kept), naming the sender (at hop 0, the owner)',
    run: async (k) => {
      const sid = k.sid('shape');
      const s = await k.opened(k.open({ sessionId: sid }));
      const bad = k.step(sid, { step: 0, pos: 0, nTokens: 1 });
      (bad.header as StepHeader).shape = [1, k.t.dim + 1];
      // the sender is at fault, not the refusing hop: at hop 0, the session's owner
      const e1 = await k.error(s, bad, sid);
      expect(codeOf(e1) === 'bad_message', `wrong shape: expected bad_message, got ${show(e1)}`);
      expect(hdr(e1).peerId === k.g.peerId, `wrong shape: the ERROR must name its sender ${k.g.peerId}, got ${show(e1)}`);
      const short = k.step(sid, { step: 1, pos: 0, nTokens: 1, payload: new Uint8Array(k.t.dim * 4 - 4) });
      const e2 = await k.error(s, short, sid);
      expect(codeOf(e2) === 'bad_message', `short payload: expected bad_message, got ${show(e2)}`);
      expect(hdr(e2).peerId === k.g.peerId, `short payload: the ERROR must name its sender ${k.g.peerId}, got ${show(e2)}`);
      for (const [i, v] of [NaN, Infinity].entries()) {
        const x = new Float32Array(k.t.dim).fill(0.01);
        x[1] = v;
        const e3 = await k.error(s, k.step(sid, { step: 2 + i, pos: 0, nTokens: 1, payload: new Uint8Array(x.buffer) }), sid);
        expect(codeOf(e3) === 'bad_message', `a ${v} in the payload: expected bad_message, got ${show(e3)}`);
        expect(hdr(e3).peerId === k.g.peerId, `a ${v} in the payload: the ERROR must name its sender ${k.g.peerId}, got ${show(e3)}`);
      }
      await k.result(s, sid, k.step(sid, { step: 4, pos: 0, nTokens: 1 }));
      void s.ch.close();
    },
  },
  {
    id: 'S5',
    title: 'a STEP beyond the reserved KV tokens (maxTokens) → ERROR busy',
    run: async (k) => {
      const sid = k.sid('reserve');
      const s = await k.opened(k.open({ sessionId: sid, maxTokens: 4 }));
      const e = await k.error(s, k.step(sid, { step: 0, pos: 3, nTokens: 2 }), sid);
      expect(codeOf(e) === 'busy', `expected busy, got ${show(e)}`);
      void s.ch.close();
    },
  },
  {
    id: 'S6',
    title: 'a negative budgetMs → ERROR deadline, nothing computed or sent on',
    run: async (k) => {
      const sid = k.sid('deadline');
      const s = await k.opened(k.open({ sessionId: sid }));
      const e = await k.error(s, k.step(sid, { step: 0, pos: 0, nTokens: 1, extra: { budgetMs: -1 } }), sid);
      expect(codeOf(e) === 'deadline', `expected deadline, got ${show(e)}`);
      expect(hdr(e).hop === 0, `ERROR hop must be the index of the refusing hop (0), got ${String(hdr(e).hop)}`);
      void s.ch.close();
    },
  },
  {
    id: 'S7',
    title: 'TRUNCATE gets no answer; a later STEP at pos < cached length runs (replay flag kept)',
    run: async (k) => {
      const sid = k.sid('truncate');
      const s = await k.opened(k.open({ sessionId: sid }));
      await k.result(s, sid, k.step(sid, { step: 0, pos: 0, nTokens: 3 }));
      const n = s.got.length;
      await s.ch.send({ type: MsgType.TRUNCATE, header: { sessionId: sid, pos: 1 } });
      await pause(k.quietMs);
      expect(s.got.length === n, `TRUNCATE was answered: ${show(s.got[n])}`);
      const r = await k.result(s, sid, k.step(sid, { step: 1, pos: 1, nTokens: 2, extra: { replay: true } }));
      expect(hdr(r).replay === true, 'RESULT must keep replay: true');
      void s.ch.close();
    },
  },
  {
    id: 'S8',
    title: 'idleTimeoutMs: an idle session gets ERROR timeout and is freed (result stream closed)',
    run: async (k) => {
      const sid = k.sid('idle');
      const s = await k.opened(k.open({ sessionId: sid, idleTimeoutMs: 300 }));
      const e = await s.next('ERROR timeout', isError, 300 + k.waitMs);
      expect(codeOf(e) === 'timeout', `expected timeout, got ${show(e)}`);
      await waitForClosedResult(k, sid);
    },
  },
  {
    id: 'S9',
    title: 'never sign twice: STEP 0 again with other input → bad_message; with the same input → a receipt for the same input and output',
    run: async (k) => {
      const sid = k.sid('slot');
      const s = await k.opened(k.open({ sessionId: sid }));
      const a = k.step(sid, { step: 0, pos: 0, nTokens: 1, seed: 11 });
      const r1 = await k.result(s, sid, a);
      const e = await k.error(s, k.step(sid, { step: 0, pos: 0, nTokens: 1, seed: 12 }), sid);
      expect(
        codeOf(e) === 'bad_message' && /already signed/.test(String(hdr(e).reason)),
        `expected bad_message "already signed…", got ${show(e)}`,
      );
      const r2 = await k.result(s, sid, k.step(sid, { step: 0, pos: 0, nTokens: 1, seed: 11 }));
      const rec = (m: Message) => (hdr(m).receipts as SignedReceipt[])[0]!.record;
      for (const f of ['step', 'inputHash', 'outputHash'] as const)
        expect(String(rec(r1)[f]) === String(rec(r2)[f]), `the same input for a signed slot must get a receipt for the same ${f}`);
      void s.ch.close();
    },
  },
  {
    id: 'S10',
    title: "the node computes its layers: each RESULT equals the reference engine's output for the same inputs within the f32 tolerance τ",
    run: async (k) => {
      if (!k.t.reference) fail('not checked: no reference model was given');
      const stage = await k.t.reference!(k.range);
      const sid = k.sid('compute');
      try {
        const s = await k.opened(k.open({ sessionId: sid }));
        let pos = 0;
        for (const [i, n] of [5, 1, 1].entries()) {
          const m = k.step(sid, { step: i, pos, nTokens: n, seed: 60 + i });
          const r = await k.result(s, sid, m);
          const x = new Float32Array(new Uint8Array(m.payload!).buffer);
          const want = (await stage.forward({ sessionId: sid, pos, nTokens: n, hidden: x })).hidden!;
          const got = new Float32Array(new Uint8Array(r.payload!).buffer);
          const v = compareOutputs(got, want, 'f32|f32', { dim: k.t.dim });
          expect(v.pass, `step ${i}: worst token's relative L2 ${v.maxRelL2.toExponential(2)} > τ ${v.tau}`);
          pos += n;
        }
        void s.ch.close();
      } finally {
        stage.closeSession(sid);
        await stage.dispose();
      }
    },
  },
  {
    id: 'S11',
    title:
      "a STEP sent right behind its OPEN (before OPENED) is held until the session is up: OPENED, then its RESULT; with an unreachable next hop, the only answer is the OPEN's ERROR unreachable naming it",
    run: async (k) => {
      const sid = k.sid('eager');
      const s = await k.g.stream(k.target);
      await s.ch.send({ type: MsgType.OPEN, header: k.open({ sessionId: sid }) });
      const m = k.step(sid, { step: 0, pos: 0, nTokens: 2, seed: 71 });
      await k.result(s, sid, m); // sent at once, not after OPENED
      const got = k.g.results(sid);
      const opened = got.findIndex((r) => r.type === MsgType.OPENED);
      const result = got.findIndex((r) => r.type === MsgType.RESULT);
      expect(opened >= 0 && opened < result, 'OPENED must come before the RESULT on the result stream');
      await s.ch.send({ type: MsgType.CLOSE, header: { sessionId: sid } });
      await waitForClosedResult(k, sid);
      // the held STEP runs nothing when the session does not come up: no answer of its own
      const ghost = generateIdentity().peerId.toString();
      const route = [k.targetHop(), { peerId: ghost, addrs: ['/ip4/127.0.0.1/tcp/1'], start: k.range.end, end: k.range.end + 1 }];
      const gsid = k.sid('eager-ghost');
      const g = await k.g.stream(k.target);
      await g.ch.send({ type: MsgType.OPEN, header: k.open({ sessionId: gsid, route }) });
      await g.ch.send(k.step(gsid, { step: 0, pos: 0, nTokens: 1 }));
      const e = await waitEither(
        () => g.got.find(isError),
        () => undefined,
        k.waitMs,
        `the ERROR of OPEN ${gsid}`,
      );
      expect(
        codeOf(e) === 'unreachable' && hdr(e).peerId === ghost && hdr(e).hop === 1,
        `the first ERROR must be unreachable naming ${ghost} at hop 1, got ${show(e)}`,
      );
      void g.ch.close();
    },
  },
  {
    id: 'S12',
    title:
      'a lastRow STEP to the last hop: the RESULT is [1, dim], the last row of the reference output within τ, its receipt signs a "+last" profile; the next STEP reads every cached row',
    run: async (k) => {
      if (!k.t.reference) fail('not checked: no reference model was given');
      const stage = await k.t.reference!(k.range);
      const sid = k.sid('last-row');
      try {
        const s = await k.opened(k.open({ sessionId: sid }));
        let pos = 0;
        for (const [i, n] of [5, 1].entries()) {
          const m = k.step(sid, { step: i, pos, nTokens: n, seed: 80 + i, extra: i === 0 ? { lastRow: true } : {} });
          const r = await k.result(s, sid, m);
          const x = new Float32Array(new Uint8Array(m.payload!).buffer);
          const all = (await stage.forward({ sessionId: sid, pos, nTokens: n, hidden: x })).hidden!;
          const want = all.subarray(all.length - k.t.dim);
          const h = hdr(r);
          expect(
            JSON.stringify(h.shape) === JSON.stringify([1, k.t.dim]) && h.nTokens === n && r.payload!.length === k.t.dim * 4,
            `step ${i}: RESULT must be one row of ${n} tokens (shape [1,${k.t.dim}], ${k.t.dim * 4} bytes), got shape ${JSON.stringify(h.shape)}, ${r.payload!.length} bytes`,
          );
          const v = compareOutputs(new Float32Array(new Uint8Array(r.payload!).buffer), want, 'f32|f32', { dim: k.t.dim });
          expect(v.pass, `step ${i}: relative L2 ${v.maxRelL2.toExponential(2)} > τ ${v.tau}`);
          const profile = (h.receipts as SignedReceipt[])[0]!.record.profile;
          expect(
            isLastRowProfile(profile) === (i === 0),
            `step ${i}: profile "${profile}" ${i === 0 ? 'must carry' : 'must not carry'} ${LAST_ROW_PROFILE}`,
          );
          pos += n;
        }
        void s.ch.close();
      } finally {
        stage.closeSession(sid);
        await stage.dispose();
      }
    },
  },
  {
    id: 'O1',
    title: 'OPEN for another model id, or another hidden size → ERROR wrong_model',
    run: async (k) => {
      await refusedWith(k, k.open({ sessionId: k.sid('model'), modelId: 'f'.repeat(64) }), 'wrong_model');
      await refusedWith(k, k.open({ sessionId: k.sid('hidden'), hidden: k.t.dim + 1 }), 'wrong_model');
    },
  },
  {
    id: 'O2',
    title: 'route[hop] asking for other layers → ERROR wrong_layers',
    run: (k) =>
      refusedWith(k, k.open({ sessionId: k.sid('layers'), route: [{ ...k.targetHop(), end: k.range.end + 1 }] }), 'wrong_layers').then(
        () => {},
      ),
  },
  {
    id: 'O3',
    title: 'route[hop] not naming the receiver → ERROR bad_message',
    run: (k) =>
      refusedWith(k, k.open({ sessionId: k.sid('notme'), route: [{ ...k.targetHop(), peerId: k.x.peerId }] }), 'bad_message').then(
        () => {},
      ),
  },
  {
    id: 'O4',
    title: 'unsigned OPEN, or signature not by reply.peerId → ERROR forbidden',
    run: async (k) => {
      const o = k.open({ sessionId: k.sid('unsigned') });
      delete o.signature;
      await refusedWith(k, o, 'forbidden');
      await refusedWith(k, k.open({ sessionId: k.sid('forged') }, k.g, k.x.identity), 'forbidden');
    },
  },
  {
    id: 'O5',
    title: 'OPEN expired, issued > 60 s ahead, or valid for > 60 s → ERROR forbidden',
    run: async (k) => {
      const now = Date.now();
      await refusedWith(k, k.open({ sessionId: k.sid('expired'), issuedAt: now - 120_000, expiresAt: now - 60_000 }), 'forbidden');
      await refusedWith(k, k.open({ sessionId: k.sid('future'), issuedAt: now + 120_000, expiresAt: now + 150_000 }), 'forbidden');
      await refusedWith(k, k.open({ sessionId: k.sid('long'), issuedAt: now, expiresAt: now + 120_000 }), 'forbidden');
    },
  },
  {
    id: 'O6',
    title: 'OPEN for hop 0 sent by a peer other than reply.peerId (or for hop i by other than route[i−1]) → ERROR forbidden',
    run: async (k) => {
      await refusedWith(k, k.open({ sessionId: k.sid('relayed') }), 'forbidden', undefined, k.x);
      await refusedWith(
        k,
        k.open({ sessionId: k.sid('hop1'), hop: 1, route: [{ ...k.upstreamHop(), peerId: k.x.peerId }, k.targetHop()] }),
        'forbidden',
      );
    },
  },
  {
    id: 'O7',
    title: 'a second OPEN on a stream → ERROR bad_message; the first session stays bound and usable',
    run: async (k) => {
      const sid = k.sid('second');
      const s = await k.opened(k.open({ sessionId: sid }));
      const e = await k.error(s, { type: MsgType.OPEN, header: k.open({ sessionId: k.sid('second-b') }) });
      expect(codeOf(e) === 'bad_message', `expected bad_message, got ${show(e)}`);
      await k.result(s, sid, k.step(sid, { step: 0, pos: 0, nTokens: 1 }));
      void s.ch.close();
    },
  },
  {
    id: 'O8',
    title: 'OPEN of a session id open on the node (any owner) → ERROR bad_message "session id in use"',
    run: async (k) => {
      const sid = k.sid('inuse');
      const s = await k.opened(k.open({ sessionId: sid }));
      await refusedWith(k, k.open({ sessionId: sid }), 'bad_message', /session id in use/);
      await refusedWith(k, k.open({ sessionId: sid }, k.x), 'bad_message', /session id in use/, k.x);
      await k.result(s, sid, k.step(sid, { step: 0, pos: 0, nTokens: 1 }));
      void s.ch.close();
    },
  },
  {
    id: 'O9',
    title: "resumeFrom another owner's session, or an unknown id → ERROR forbidden with the same text",
    run: async (k) => {
      const sid = k.sid('victim');
      const s = await k.opened(k.open({ sessionId: sid }));
      const e1 = await refusedWith(k, k.open({ sessionId: k.sid('thief'), resumeFrom: sid }, k.x), 'forbidden', undefined, k.x);
      const e2 = await refusedWith(k, k.open({ sessionId: k.sid('thief'), resumeFrom: `${sid}-none` }, k.x), 'forbidden', undefined, k.x);
      const norm = (m: Message) => String(hdr(m).reason).replace(/"[^"]*"/g, '""');
      expect(norm(e1) === norm(e2), `the two refusals must read the same: "${String(hdr(e1).reason)}" vs "${String(hdr(e2).reason)}"`);
      void s.ch.close();
    },
  },
  {
    id: 'O10',
    title: `route longer than ${MAX_ROUTE_HOPS} hops → ERROR bad_message`,
    run: async (k) => {
      const hops = Array.from({ length: MAX_ROUTE_HOPS + 1 }, () => k.targetHop());
      await refusedWith(k, k.open({ sessionId: k.sid('long-route'), route: hops }), 'bad_message');
    },
  },
  {
    id: 'O11',
    title: 'dialing policy: an unreachable next hop → ERROR unreachable naming it, hop = its index, no reason why',
    run: async (k) => {
      const ghost = generateIdentity().peerId.toString();
      const route = [k.targetHop(), { peerId: ghost, addrs: ['/ip4/127.0.0.1/tcp/1'], start: k.range.end, end: k.range.end + 1 }];
      const e = await refusedWith(k, k.open({ sessionId: k.sid('ghost'), route }), 'unreachable');
      expect(hdr(e).peerId === ghost && hdr(e).hop === 1, `ERROR must name ${ghost} at hop 1, got ${show(e)}`);
      expect(!/refused|ECONN|timed? ?out|timeout|wrong peer/i.test(String(hdr(e).reason)), `reason tells why: "${String(hdr(e).reason)}"`);
    },
  },
  {
    id: 'W1',
    title: "ownership: STEP or CLOSE for a session on another peer's stream → ERROR unknown_session; the owner's session continues",
    run: async (k) => {
      const sid = k.sid('owned');
      const s = await k.opened(k.open({ sessionId: sid }));
      const xs = await k.x.stream(k.target);
      const e1 = await k.error(xs, k.step(sid, { step: 0, pos: 0, nTokens: 1 }));
      expect(codeOf(e1) === 'unknown_session', `stranger STEP: expected unknown_session, got ${show(e1)}`);
      const e2 = await k.error(xs, { type: MsgType.CLOSE, header: { sessionId: sid } });
      expect(codeOf(e2) === 'unknown_session', `stranger CLOSE: expected unknown_session, got ${show(e2)}`);
      void xs.ch.close();
      await k.result(s, sid, k.step(sid, { step: 0, pos: 0, nTokens: 1 }));
      void s.ch.close();
    },
  },
  {
    id: 'C1',
    title: 'custody: a valid upstream receipt → RESULT with both receipts; the target links upstreamReceiptHash and its own chain',
    run: async (k) => {
      const { sid, s } = await k.upstreamSession('custody-ok');
      let mine: Hex = ZERO_HASH;
      let theirs: Hex = ZERO_HASH;
      for (let i = 0; i < 2; i++) {
        const payload = k.input(1, 40 + i);
        const { message, receipt: up } = k.upstreamStep(sid, { step: i, pos: i, payload, prev: mine });
        const r = await k.result(s, sid, message);
        const rs = hdr(r).receipts as unknown[];
        expect(
          Array.isArray(rs) && rs.length === 2,
          `RESULT must carry 2 receipts (upstream's, target's), has ${Array.isArray(rs) ? rs.length : 'none'}`,
        );
        expect(sameReceipt(rs[0], up), 'the upstream receipt must be forwarded unchanged');
        mine = receiptHash(up.record, k.t.domain);
        const rec = checkReceiptOf(k, rs[1], {
          sid,
          step: i,
          pos: i,
          nTokens: 1,
          input: payload,
          output: r.payload!,
          upstream: mine,
          prev: theirs,
        });
        theirs = receiptHash(rec.record, k.t.domain);
      }
      void s.ch.close();
    },
  },
  ...custodyCase('C2', 'no receipts, or not exactly i receipts at hop i', 'malformed', (k, sid, payload) => [
    k.upstreamStep(sid, { payload, carry: (up) => [up, up] }).message,
  ]),
  ...custodyCase('C3', 'a RECEIPTS payload that is not the fixed layout (bytes after the last receipt)', 'malformed', (k, sid, payload) => [
    k.upstreamStep(sid, { payload, carry: (up) => new Uint8Array([1, ...encodeReceipt(up), 0]) }).message,
  ]),
  ...custodyCase(
    'C4',
    'a receipt whose signature is not by its signer, or signed by another key than route[i−1]',
    'bad_signature',
    (k, sid, payload) => {
      const other = k.upstreamStep(sid, { payload, signer: k.x.identity }).receipt;
      return [k.upstreamStep(sid, { payload, carry: (up) => [{ ...up, signature: other.signature }] }).message];
    },
  ),
  ...custodyCase('C5', 'a receipt validly signed by a key other than route[i−1]', 'bad_signature', (k, sid, payload) => [
    k.upstreamStep(sid, { payload, signer: k.x.identity }).message,
  ]),
  ...custodyCase('C6', "a receipt of another session's ids", 'cross_session', (k, sid, payload) => [
    k.upstreamStep(sid, { payload, edit: { sessionId: sessionIdOf(`${sid}-other`) } }).message,
  ]),
  ...custodyCase('C7', 'a receipt for another step/pos/nTokens', 'slot_mismatch', (k, sid, payload) => [
    k.upstreamStep(sid, { payload, edit: { pos: 1 } }).message,
  ]),
  ...custodyCase('C8', "a receipt whose layerEnd is not the receiver's start", 'layer_gap', (k, sid, payload) => [
    k.upstreamStep(sid, { payload, edit: { layerEnd: k.range.start + 1 } }).message,
  ]),
  ...custodyCase('C9', 'a receipt whose outputHash is not the hash of the payload received', 'input_mismatch', (k, sid, payload) => [
    k.upstreamStep(sid, { payload, edit: { outputHash: hashTensor(k.input(1, 99)) } }).message,
  ]),
  ...custodyCase('C10', 'the same receipt again (the same step re-sent)', 'replay', (k, sid, payload) => {
    const s0 = k.upstreamStep(sid, { payload });
    const s1 = k.upstreamStep(sid, { step: 1, pos: 1, payload: k.input(1, 77), prev: receiptHash(s0.receipt.record, k.t.domain) });
    return [s0.message, s1.message, { ...s1.message, header: { ...s1.message.header, requestId: 2001 } } as Message];
  }),
  ...custodyCase('C11', "a step number lower than the signer's last", 'step_order', (k, sid, payload) => {
    const s0 = k.upstreamStep(sid, { payload });
    const s2 = k.upstreamStep(sid, { step: 2, pos: 1, payload: k.input(1, 78), prev: receiptHash(s0.receipt.record, k.t.domain) });
    const s1 = k.upstreamStep(sid, { step: 1, pos: 2, payload: k.input(1, 79), prev: receiptHash(s2.receipt.record, k.t.domain) });
    return [s0.message, s2.message, s1.message];
  }),
  ...custodyCase('C12', "prevReceiptHash not the digest of the signer's previous receipt", 'broken_chain', (k, sid, payload) => [
    k.upstreamStep(sid, { payload }).message,
    k.upstreamStep(sid, { step: 1, pos: 1, payload: k.input(1, 80) }).message,
  ]),
  {
    id: 'C13',
    title: 'hop 0 given receipts by its gateway → ERROR custody naming the gateway (the receipts are otherwise ignored)',
    run: async (k) => {
      const sid = k.sid('hop0-receipts');
      const s = await k.opened(k.open({ sessionId: sid }));
      const { message } = k.upstreamStep(sid, { payload: k.input(1, 5) });
      // the step's input came from the gateway, which signs nothing: hop 0 may sign its own receipt
      await k.expectCustody(s, sid, message, 'malformed', 0, false);
      void s.ch.close();
    },
  },
  {
    id: 'A1',
    title: "audit (/odsi/audit/1.2.0): the owner's signed AuditRequest gets inputs, output, receipt and commitment of its steps",
    run: async (k) => {
      const sid = k.sid('audit');
      const s = await k.opened(k.open({ sessionId: sid }));
      const m0 = k.step(sid, { step: 0, pos: 0, nTokens: 2 });
      await k.result(s, sid, m0);
      const m1 = k.step(sid, { step: 1, pos: 2, nTokens: 1 });
      const r1 = await k.result(s, sid, m1);
      const reply = await audit(k, k.g, { sessionId: sid, fromStep: 0, toStep: 1 }, k.g.identity);
      const h = reply.header;
      expect(h.ok === true, `audit refused: ${String(h.reason)}`);
      const want = new Uint8Array([...m0.payload!, ...m1.payload!, ...r1.payload!]);
      expect(
        Buffer.compare(Buffer.from(reply.payload), Buffer.from(want)) === 0,
        'audit payload must be the inputs of the steps as received, then the output of toStep as sent',
      );
      expect(sameReceipt(h.receipt, (hdr(r1).receipts as unknown[])[0]), 'audit receipt must be the receipt the RESULT carried');
      const c = h.commitment as { record?: { inputHash?: string } } | undefined;
      expect(
        c?.record?.inputHash?.toLowerCase() === hashTensor(m1.payload!).toLowerCase(),
        'audit commitment must commit to the input of toStep',
      );
      void s.ch.close();
    },
  },
  {
    id: 'A2',
    title:
      'audit without a valid request → "not authorised"; a stranger\'s own request for the session, or for an unknown one → the same NOT_ENTITLED',
    run: async (k) => {
      const sid = k.sid('audit-x');
      const s = await k.opened(k.open({ sessionId: sid }));
      await k.result(s, sid, k.step(sid, { step: 0, pos: 0, nTokens: 1 }));
      const none = await audit(k, k.x, { sessionId: sid, fromStep: 0, toStep: 0 });
      expect(none.header.ok === false && /^not authorised/.test(String(none.header.reason)), `no request: ${JSON.stringify(none.header)}`);
      const theirs = await audit(k, k.x, { sessionId: sid, fromStep: 0, toStep: 0 }, k.x.identity);
      const unknown = await audit(k, k.x, { sessionId: `${sid}-none`, fromStep: 0, toStep: 0 }, k.x.identity);
      expect(
        theirs.header.ok === false && theirs.header.reason === unknown.header.reason,
        `stranger: "${String(theirs.header.reason)}" vs unknown: "${String(unknown.header.reason)}" must be one text`,
      );
      void s.ch.close();
    },
  },
  {
    id: 'A3',
    title: 'audit-exec (/odsi/audit-exec/1.2.0) without a signed ReexecutionRequest from the requesting peer → "not authorised"',
    run: async (k) => {
      const st = await k.x.host.libp2p.dialProtocol(peerIdFromString(k.target.peerId), AUDIT_EXEC_PROTOCOL, {
        signal: AbortSignal.timeout(k.waitMs),
      });
      const payload = k.input(1, 3);
      const base = {
        routeSessionId: 'any',
        step: 0,
        layers: [k.range.start, k.range.end],
        modelId: k.t.modelId,
        auditedReceiptHash: ZERO_HASH,
        steps: [{ step: 0, pos: 0, nTokens: 1, dtype: 'f32', bytes: payload.length }],
      };
      // signed by the kit's gateway but sent by the stranger: the requester must be the signer
      const request = signReexecutionRequest(
        k.g.identity,
        {
          executor: addressOfPeer(k.target.peerId),
          requestId: requestIdOf('any'),
          sessionId: sessionIdOf('any'),
          step: 0,
          auditedReceiptHash: ZERO_HASH,
          expiresAt: nowSeconds() + 60,
        },
        k.t.domain,
      );
      await sendAuditMessage(st, { ...base, request }, payload);
      const r = await readAuditMessage(st, k.waitMs);
      await st.close().catch(() => {});
      expect(
        r.header.ok === false && /^not authorised/.test(String(r.header.reason)),
        `expected "not authorised…", got ${JSON.stringify(r.header)}`,
      );
    },
  },
  {
    id: 'K1',
    title: "KV hand-over (/odsi/kv/1.1.0) without the owner's invitation → ERROR forbidden",
    run: async (k) => {
      const s = await k.x.stream(k.target, KV_PROTOCOL);
      const length = 2;
      const header = {
        sessionId: k.sid('kv'),
        modelId: k.t.modelId,
        start: k.range.start,
        end: k.range.end,
        length,
        layer: k.range.start,
        kvDim: k.t.kvDim,
      };
      const e = await k.error(s, { type: MsgType.KV, header, payload: new Uint8Array(2 * length * k.t.kvDim * 4) });
      expect(codeOf(e) === 'forbidden', `no invitation: expected forbidden, got ${show(e)}`);
      const s2 = await k.x.stream(k.target, KV_PROTOCOL);
      const open = k.open({ sessionId: header.sessionId }, k.x); // signed, but its spares do not name the target
      const e2 = await k.error(s2, { type: MsgType.KV, header: { ...header, open }, payload: new Uint8Array(2 * length * k.t.kvDim * 4) });
      expect(codeOf(e2) === 'forbidden', `not a spare: expected forbidden, got ${show(e2)}`);
    },
  },
];

async function waitForClosedResult(k: Kit, sid: string): Promise<void> {
  const t0 = Date.now();
  while (!k.g.resultClosed(sid)) {
    if (Date.now() - t0 > k.waitMs) fail(`the result stream of ${sid} was not closed`);
    await pause(10);
  }
}

/** A custody rule: in a fresh upstream session, all messages but the last must get a RESULT, the last ERROR custody `sub`. */
function custodyCase(id: string, what: string, sub: string, build: (k: Kit, sid: string, payload: Uint8Array) => Message[]): Rule[] {
  return [
    {
      id,
      title: `custody: ${what} → ERROR custody "${sub}", peerId = upstream, output withheld`,
      run: async (k) => {
        const { sid, s } = await k.upstreamSession(`custody-${sub}`);
        const msgs = build(k, sid, k.input(1, 21));
        for (const m of msgs.slice(0, -1)) await k.result(s, sid, m);
        await k.expectCustody(s, sid, msgs[msgs.length - 1]!, sub);
        void s.ch.close();
      },
    },
  ];
}

async function audit(k: Kit, by: SessionPeer, q: { sessionId: string; fromStep: number; toStep: number }, signer?: Identity) {
  const request = signer
    ? signAuditRequest(
        signer,
        {
          auditor: by.identity.address,
          requestId: requestIdOf(q.sessionId),
          sessionId: sessionIdOf(q.sessionId),
          fromStep: q.fromStep,
          toStep: q.toStep,
          expiresAt: nowSeconds() + 60,
        },
        k.t.domain,
      )
    : undefined;
  await by.host.dial(k.target.peerId, k.target.addrs, AbortSignal.timeout(k.waitMs));
  const st = await by.host.libp2p.dialProtocol(peerIdFromString(k.target.peerId), AUDIT_PROTOCOL, {
    signal: AbortSignal.timeout(k.waitMs),
  });
  await sendAuditMessage(st, { ...q, ...(request ? { request } : {}) });
  const r = await readAuditMessage(st, k.waitMs);
  await st.close().catch(() => {});
  return r;
}

/** Every rule id and title, in order (docs/protocol.md §11 lists the same). */
export function conformanceRules(): { id: string; title: string }[] {
  return RULES.map(({ id, title }) => ({ id, title }));
}

/** Runs the rules against the target; one result per rule, in order. */
export async function runConformance(t: ConformanceTarget, o: ConformanceOptions = {}): Promise<RuleResult[]> {
  const m = /\/p2p\/([^/]+)$/.exec(t.multiaddr);
  if (!m) throw new Error(`target ${t.multiaddr} must end in /p2p/<peer id>`);
  const target = { peerId: m[1]!, addrs: [t.multiaddr] };
  const waitMs = o.waitMs ?? 10_000;
  const g = await SessionPeer.start(generateIdentity(), waitMs);
  const x = await SessionPeer.start(generateIdentity(), waitMs);
  const kit = new Kit(t, target, g, x, waitMs, o.quietMs ?? 200);
  // `C1` is rule C1 alone (not C10–C13); `C` is the whole group
  const named = (id: string, p: string): boolean => (/\d$/.test(p) ? id === p : id.startsWith(p));
  const chosen = RULES.filter((r) => !o.only || r.id === 'D1' || o.only.some((p) => named(r.id, p)));
  const results = new Map<string, RuleResult>();
  const runOne = async (r: Rule): Promise<void> => {
    const t0 = performance.now();
    let res: RuleResult;
    try {
      await r.run(kit);
      res = { id: r.id, title: r.title, pass: true, detail: '', ms: Math.round(performance.now() - t0) };
    } catch (e) {
      res = { id: r.id, title: r.title, pass: false, detail: (e as Error).message, ms: Math.round(performance.now() - t0) };
    }
    results.set(r.id, res);
    o.onResult?.(res);
  };
  try {
    // D1 first (the others need the target's layers); then the rules, which use sessions of their
    // own, a few at a time
    const [first, ...rest] = chosen;
    if (first) await runOne(first);
    const queue = [...rest];
    const worker = async (): Promise<void> => {
      for (let r = queue.shift(); r; r = queue.shift()) await runOne(r);
    };
    await Promise.all(Array.from({ length: Math.max(1, o.concurrency ?? 4) }, worker));
  } finally {
    await Promise.all([g.stop(), x.stop()]);
  }
  const out = chosen.map((r) => results.get(r.id)!);
  return out;
}
