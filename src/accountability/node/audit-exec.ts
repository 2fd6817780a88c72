// Selective redundancy, executor side: a node re-runs another node's committed inputs for its
// own layer range and signs what it got. The gateway's AuditScheduler picks a peer covering
// the same layers, sends it the audited node's committed inputs of a session prefix (steps
// contiguous from position 0, the audited step last) and compares the returned output with
// the audited node's.
//
// Protocol AUDIT_EXEC_PROTOCOL, one request and one reply per stream (audit-messages.ts codec):
//   request  { routeSessionId, step, layers: [start, end], modelId, auditedReceiptHash,
//              steps: [{ step, pos, nTokens, dtype, bytes }], request: signed ReexecutionRequest }
//              + the steps' input bytes in order
//   reply    { ok: false, reason } or { ok: true, receipt, output: { dtype: 'f32', bytes } }
//              + f32 little-endian rows of the audited (last) step, [nTokens_last, dim]
//
// Who may ask: a gateway, with a ReexecutionRequest it signed (the signer must be the peer on the
// stream) naming this node as executor and the audited route session, step and receipt, not
// expired. Per remote peer: a bounded number of requests per minute and in flight
// (ReexecLimits); the node reads one request per stream.
//
// The node replays the whole prefix as a fresh temporary session (`audit-exec/<uuid>`, one
// batched prefill, in chunks of ≤ REEXEC_CHUNK tokens) under its compute lock, so an audit
// never runs beside a token-path step, and always frees the session. Its receipt is a
// ReexecutionReceipt (a type of its own: it never verifies as a token-path ExecutionReceipt, so
// no re-execution can ever be paired with a token-path receipt as equivocation evidence), links
// to the audited receipt (upstreamReceiptHash) and names the session `<routeSessionId>/audit`.
// The node signs at most one per (requesting gateway, route session, step): the same inputs
// again get the same receipt, other inputs for that slot are refused (remembered for the last
// `maxSlots` slots).
//
// `dim` is not sent: both sides derive it (node: its model; client: input bytes / tokens).

import { createHash, randomUUID } from 'node:crypto';
import type { Connection, Stream } from '@libp2p/interface';
import type { Logger } from 'pino';
import type { Stage } from '../../engine/types.js';
import type { OdsiHost } from '../../p2p/host.js';
import { DTYPE_BYTES, decodeTensor, encodeTensor, type Dtype, type MessageLimits } from '../../protocol/messages.js';
import { ZERO_HASH, type Hex, type OdsiDomain } from '../records/eip712.js';
import { hashTensor, type SignedReceipt } from '../records/receipts.js';
import type { ReexecReceiptFields } from './stamper.js';
import { addressOfPeer, requestIdOf, sessionIdOf, toModelId } from '../records/wire.js';
import { checkRequest, sameHex } from '../records/audit-requests.js';
import { AUDIT_EXEC_PROTOCOL, AUDIT_LIMITS, AUDIT_REQUEST_LIMITS } from '../../protocol/audit-messages.js';
import { PeerLimiter, type PeerLimits } from './request-limiter.js';
import { serveOneRequest } from './one-request.js';

/** most tokens one re-execution may replay (and never more than the model's context) */
export const MAX_REEXEC_TOKENS = 8192;
/** largest forward call of a replay (bounds the engine's scratch memory) */
export const REEXEC_CHUNK = 512;
/** the temporary session of a re-execution: `${REEXEC_SESSION_PREFIX}<uuid>` */
export const REEXEC_SESSION_PREFIX = 'audit-exec/';
/** re-executions queued or running per node; more are refused as busy */
const MAX_PENDING = 4;

/** Bounds of the re-execution service. */
export interface ReexecLimits {
  /** requests per remote peer */
  perPeer: PeerLimits;
  /** (gateway, route session, step) slots whose receipt is remembered; the oldest are forgotten first */
  maxSlots: number;
}

export const DEFAULT_REEXEC_LIMITS: ReexecLimits = {
  perPeer: { perMinute: 120, inFlight: 2 },
  maxSlots: 8192,
};
const REQUEST_TIMEOUT_MS = 10_000;
const DTYPES = new Set<string>(['f32', 'f16', 'bf16']);

/** What the node server lends the executor. */
export interface AuditExecContext {
  host: OdsiHost;
  stage: Stage;
  modelId: string;
  /** run `fn` under the node's compute lock (never beside a token-path step) */
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
  /** signs the re-execution's receipt with the node's key (its stamper's signReexecution) */
  sign(fields: ReexecReceiptFields): SignedReceipt;
  /** the deployment's domain, under which requests are checked (none: every request is refused) */
  domain?: OdsiDomain;
  limits?: Partial<ReexecLimits>;
  log?: Logger;
}

export interface AuditExecStats {
  served: number;
  refused: number;
  tokens: number;
  computeMs: number;
}

interface StepEntry {
  step: number;
  pos: number;
  nTokens: number;
  dtype: Dtype;
  bytes: number;
}

class Refusal extends Error {}

/** What the node signed for one (gateway, route session, step). */
interface Slot {
  /** digest of the request's steps and input bytes */
  inputs: string;
  /** undefined while the re-execution runs */
  receipt?: SignedReceipt;
}

/** The node side: registers AUDIT_EXEC_PROTOCOL and answers re-execution requests. */
export class AuditExecServer {
  readonly stats: AuditExecStats = { served: 0, refused: 0, tokens: 0, computeMs: 0 };
  private pending = 0;
  private started = false;
  private readonly limits: ReexecLimits;
  private readonly limiter: PeerLimiter;
  private readonly slots = new Map<string, Slot>();

  constructor(private readonly c: AuditExecContext) {
    this.limits = { ...DEFAULT_REEXEC_LIMITS, ...c.limits };
    this.limiter = new PeerLimiter(this.limits.perPeer, 're-executions');
  }

  /** Registers the handler (the node does so only when accountability is on: receipts need the deployment's domain). */
  async start(): Promise<void> {
    if (this.started) return;
    await this.c.host.libp2p.handle(AUDIT_EXEC_PROTOCOL, (stream: Stream, conn: Connection) => void this.serve(stream, conn), {
      maxInboundStreams: 16,
      maxOutboundStreams: 16,
    });
    this.started = true;
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.c.host.libp2p.unhandle(AUDIT_EXEC_PROTOCOL).catch(() => undefined);
  }

  private serve(stream: Stream, conn: Connection): Promise<void> {
    const peer = conn.remotePeer.toString();
    return serveOneRequest(stream, peer, {
      limiter: this.limiter,
      timeoutMs: REQUEST_TIMEOUT_MS,
      limits: this.requestLimits(),
      refused: (reason) => {
        this.stats.refused++;
        this.c.log?.debug({ reason }, 'audit re-execution refused');
      },
      answer: async (msg) => {
        if (this.pending >= MAX_PENDING) return { reason: `busy: ${this.pending} re-executions already queued on this node` };
        this.pending++;
        try {
          return await this.execute(msg.header, msg.payload, peer);
        } catch (e) {
          return { reason: e instanceof Refusal ? e.message : `re-execution failed: ${(e as Error).message}` };
        } finally {
          this.pending--;
        }
      },
    });
  }

  /**
   * What one request may be: the steps' headers, and input bytes of at most twice the longest
   * replay in f32 (a little too long still gets validate's precise refusal; far too long is not read).
   */
  private requestLimits(): MessageLimits {
    const { config } = this.c.stage;
    const bytes = 2 * this.maxTokens() * config.dim * DTYPE_BYTES.f32;
    return { ...AUDIT_REQUEST_LIMITS, maxMessagePayload: Math.min(AUDIT_LIMITS.maxMessagePayload, bytes) };
  }

  /** most tokens one re-execution may replay: MAX_REEXEC_TOKENS, and never more than the model's context */
  private maxTokens(): number {
    const ctx = this.c.stage.config.contextLength;
    return Math.min(MAX_REEXEC_TOKENS, Number.isSafeInteger(ctx) && ctx > 0 ? ctx : MAX_REEXEC_TOKENS);
  }

  /** Checks the signed ReexecutionRequest: from the requesting peer, for this node and this audit. */
  private authorise(signed: unknown, peer: string, req: ReexecHeader): void {
    if (!this.c.domain) throw new Refusal('not authorised: this node serves no re-executions (no signing domain)');
    const v = checkRequest('ReexecutionRequest', signed, this.c.domain);
    if (!v.ok) throw new Refusal(`not authorised: ${v.reason}`);
    const r = v.record;
    let from: Hex;
    try {
      from = addressOfPeer(peer);
    } catch {
      throw new Refusal('not authorised: the requesting peer has no secp256k1 key');
    }
    if (!sameHex(r.gateway, from)) throw new Refusal('not authorised: the ReexecutionRequest is not signed by the requesting peer');
    if (!sameHex(r.executor, this.c.host.identity.address))
      throw new Refusal('not authorised: the ReexecutionRequest names another executor');
    if (
      !sameHex(r.requestId, requestIdOf(req.routeSessionId)) ||
      !sameHex(r.sessionId, sessionIdOf(req.routeSessionId)) ||
      r.step !== req.step ||
      !sameHex(r.auditedReceiptHash, req.auditedReceiptHash)
    )
      throw new Refusal('not authorised: the ReexecutionRequest is for another session, step or audited receipt');
  }

  /** Reserves the slot of (peer, route session, step) for these inputs; the slot as it was, if any. */
  private reserve(key: string, inputs: string): Slot | undefined {
    const had = this.slots.get(key);
    if (had) {
      if (had.inputs !== inputs)
        throw new Refusal('slot_conflict: this node already re-executed this step of this route session for you with other inputs');
      if (!had.receipt) throw new Refusal('busy: this step of this route session is being re-executed for you');
      return had;
    }
    this.slots.set(key, { inputs });
    while (this.slots.size > this.limits.maxSlots) this.slots.delete(this.slots.keys().next().value as string);
    return undefined;
  }

  private async execute(h: Record<string, unknown>, payload: Uint8Array, peer: string): Promise<{ header: unknown; payload: Uint8Array }> {
    const req = this.validate(h, payload);
    this.authorise(h.request, peer, req);
    const key = JSON.stringify([peer, req.routeSessionId, req.step]);
    const digest = createHash('sha256').update(JSON.stringify(req.steps)).update(payload).digest('hex');
    const had = this.reserve(key, digest);
    try {
      const out = await this.run(req, payload);
      if (had?.receipt) {
        // the same inputs again: the receipt already signed, if the replay reproduces its output
        if (!sameHex(had.receipt.record.outputHash, hashTensor(out.payload)))
          throw new Refusal('slot_conflict: the replay no longer reproduces the output this node signed for this slot');
        return { header: { ...out.header, receipt: had.receipt }, payload: out.payload };
      }
      const slot = this.slots.get(key);
      if (slot && slot.inputs === digest) slot.receipt = out.header.receipt;
      return out;
    } catch (e) {
      if (!had) this.slots.delete(key); // nothing signed: the slot is free again
      throw e;
    }
  }

  private async run(
    req: ReexecHeader,
    payload: Uint8Array,
  ): Promise<{ header: { ok: true; receipt: SignedReceipt; output: { dtype: 'f32'; bytes: number } }; payload: Uint8Array }> {
    const { stage } = this.c;
    const dim = stage.config.dim;
    const total = req.steps.reduce((a, s) => a + s.nTokens, 0);
    const hidden = new Float32Array(total * dim);
    let off = 0;
    let row = 0;
    for (const s of req.steps) {
      hidden.set(decodeTensor(payload.subarray(off, off + s.bytes), s.dtype, s.nTokens * dim), row * dim);
      off += s.bytes;
      row += s.nTokens;
    }
    const last = req.steps[req.steps.length - 1]!;
    const lastInput = payload.subarray(payload.length - last.bytes);
    // a session id no token-path session can have; freed whatever happens
    const tmp = `${REEXEC_SESSION_PREFIX}${randomUUID()}`;
    const { out, ms } = await this.c.exclusive(async () => {
      const t0 = performance.now();
      const rows = new Float32Array(last.nTokens * dim);
      try {
        for (let p = 0; p < total; p += REEXEC_CHUNK) {
          const n = Math.min(REEXEC_CHUNK, total - p);
          const r = await stage.forward({ sessionId: tmp, pos: p, nTokens: n, hidden: hidden.subarray(p * dim, (p + n) * dim) });
          if (!r.hidden || r.hidden.length !== n * dim) throw new Error('the stage returned no hidden states');
          // keep only the rows of the audited step, [last.pos, total)
          const from = Math.max(p, last.pos);
          if (from < p + n) rows.set(r.hidden.subarray((from - p) * dim, n * dim), (from - last.pos) * dim);
        }
      } finally {
        try {
          stage.closeSession(tmp);
        } catch {
          /* nothing cached */
        }
      }
      return { out: rows, ms: performance.now() - t0 };
    });
    const bytes = Uint8Array.from(encodeTensor(out, 'f32'));
    const receipt = this.c.sign({
      requestId: requestIdOf(req.routeSessionId),
      sessionId: sessionIdOf(`${req.routeSessionId}/audit`),
      step: last.step,
      pos: last.pos,
      nTokens: last.nTokens,
      layerStart: stage.range.start,
      layerEnd: stage.range.end,
      modelId: toModelId(this.c.modelId),
      profile: stage.profile,
      inputHash: hashTensor(lastInput),
      budgetUs: 0,
      outputHash: hashTensor(bytes),
      recvUs: 0,
      computeUs: Math.max(0, Math.round(ms * 1000)),
      sendUs: 0,
      upstreamReceiptHash: req.auditedReceiptHash,
      prevReceiptHash: ZERO_HASH,
      commitmentHash: ZERO_HASH,
    });
    this.stats.served++;
    this.stats.tokens += total;
    this.stats.computeMs += ms;
    this.c.log?.debug({ session: req.routeSessionId, step: last.step, tokens: total, ms }, 'audit re-execution served');
    return { header: { ok: true, receipt, output: { dtype: 'f32', bytes: bytes.length } }, payload: bytes };
  }

  private validate(h: Record<string, unknown>, payload: Uint8Array): ReexecHeader {
    const { stage, modelId } = this.c;
    const r = stage.range;
    const dim = stage.config.dim;
    const rsid = h.routeSessionId;
    if (typeof rsid !== 'string' || rsid.length === 0 || rsid.length > 256)
      throw new Refusal('routeSessionId must be a non-empty string of ≤ 256 characters');
    const step = h.step;
    if (!isCount(step)) throw new Refusal('step must be a non-negative integer');
    const layers = h.layers;
    if (!Array.isArray(layers) || layers.length !== 2 || !layers.every(isCount)) throw new Refusal('layers must be [start, end] integers');
    if (layers[0] !== r.start || layers[1] !== r.end)
      throw new Refusal(`wrong layers: this node serves layers ${r.start}:${r.end}, the request is for ${layers[0]}:${layers[1]}`);
    if (h.modelId !== modelId) throw new Refusal(`wrong model: this node serves model ${modelId}, not ${String(h.modelId)}`);
    const audited = h.auditedReceiptHash;
    if (typeof audited !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(audited))
      throw new Refusal('auditedReceiptHash must be 0x + 64 hex digits');
    const list = h.steps;
    if (!Array.isArray(list) || list.length === 0) throw new Refusal('steps must be a non-empty array');
    if (list.length > MAX_REEXEC_TOKENS) throw new Refusal(`too many steps (${list.length} > ${MAX_REEXEC_TOKENS})`);
    const maxTokens = this.maxTokens();
    const steps: StepEntry[] = [];
    let pos = 0;
    let bytes = 0;
    for (const [i, raw] of list.entries()) {
      const s = (raw ?? {}) as Record<string, unknown>;
      if (
        !isCount(s.step) ||
        !isCount(s.pos) ||
        !isCount(s.nTokens) ||
        (s.nTokens as number) < 1 ||
        !isCount(s.bytes) ||
        !DTYPES.has(String(s.dtype))
      )
        throw new Refusal(`steps[${i}] must be { step, pos, nTokens ≥ 1, dtype: f32|f16|bf16, bytes }`);
      const e = s as unknown as StepEntry;
      if (i === 0 && e.pos !== 0)
        throw new Refusal(`the steps must start at position 0 (steps[0] is at ${e.pos}): a replay needs the whole prefix`);
      if (e.pos !== pos) throw new Refusal(`steps are not contiguous: steps[${i}] is at position ${e.pos}, expected ${pos}`);
      pos += e.nTokens;
      if (pos > maxTokens) throw new Refusal(`too many tokens: more than ${maxTokens} (this node's limit for one re-execution)`);
      const want = e.nTokens * dim * DTYPE_BYTES[e.dtype];
      if (e.bytes !== want)
        throw new Refusal(`steps[${i}] declares ${e.bytes} bytes, ${e.nTokens} tokens × ${dim} × ${e.dtype} is ${want}`);
      bytes += e.bytes;
      steps.push({ step: e.step, pos: e.pos, nTokens: e.nTokens, dtype: e.dtype, bytes: e.bytes });
    }
    if (steps[steps.length - 1]!.step !== step)
      throw new Refusal(`the audited step ${step} must be the last of the steps (last is ${steps[steps.length - 1]!.step})`);
    if (payload.length !== bytes) throw new Refusal(`payload has ${payload.length} bytes, the steps declare ${bytes}`);
    return { routeSessionId: rsid, step, auditedReceiptHash: audited.toLowerCase() as Hex, steps };
  }
}

interface ReexecHeader {
  routeSessionId: string;
  step: number;
  auditedReceiptHash: Hex;
  steps: StepEntry[];
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
