// The gateway's side of /odsi/audit-exec: ask a node serving the same layers to re-execute a
// step's committed inputs (one batched prefill) and check its signed answer against the
// request and the bytes (src/accountability/node/audit-exec.ts is the serving side). The
// request carries a ReexecutionRequest signed with the host's identity (the node serves only
// the peer that signed it); the answer is a ReexecutionReceipt.

import { parsePeerId } from '../../identity/peer-id.js';
import type { Stream } from '@libp2p/interface';
import type { OdsiHost } from '../../p2p/host.js';
import { AUDIT_EXEC_PROTOCOL, readAuditMessage, sendAuditMessage } from '../../protocol/audit-messages.js';
import { DTYPE_BYTES, decodeTensor, type Dtype } from '../../protocol/messages.js';
import type { Hex, OdsiDomain } from '../records/eip712.js';
import { checkSigned, hashTensor, type SignedReceipt } from '../records/receipts.js';
import { addressOfPeer, requestIdOf, sessionIdOf, toModelId } from '../records/wire.js';
import { MAX_REQUEST_VALIDITY_S, nowSeconds, signReexecutionRequest } from '../records/audit-requests.js';

export interface ReexecRequest {
  /** the audited route session (the audited node's session id) */
  routeSessionId: string;
  /** the audited step: the last of `steps` */
  step: number;
  layers: [number, number];
  modelId: string;
  /** digest of the audited node's receipt for `step` */
  auditedReceiptHash: Hex;
  /** committed inputs, contiguous from position 0; `input` as the audited node received it */
  steps: { step: number; pos: number; nTokens: number; dtype: Dtype; input: Uint8Array }[];
}

export interface ReexecResult {
  /** the auditor's output rows of the audited step, [nTokens, dim] */
  output: Float32Array;
  /** the same as received (f32 little-endian): what receipt.outputHash signs */
  outputBytes: Uint8Array;
  /** the auditor's signed receipt of its re-execution */
  receipt: SignedReceipt;
  ms: number;
}

export class ReexecError extends Error {
  constructor(
    message: string,
    /** the peer answered (refused, or sent a wrong/garbage reply) vs. could not be reached / timed out */
    readonly answered: boolean,
    /** set when the reply was validly signed by the peer but does not match the request */
    readonly receipt?: SignedReceipt,
  ) {
    super(message);
    this.name = 'ReexecError';
  }
}

/**
 * Ask `peer` to re-execute the committed inputs in `req` on its layers. The model width is
 * derived from the audited step's input (bytes / (nTokens × bytes per element)). Resolves only
 * with a reply whose receipt is validly signed by `peer` and matches the request and the
 * bytes; otherwise throws ReexecError. A malformed request (caller bug) throws a plain Error.
 */
export async function requestReexecution(
  host: OdsiHost,
  domain: OdsiDomain,
  peer: { peerId: string; addrs: string[] },
  req: ReexecRequest,
  timeoutMs = 30_000,
): Promise<ReexecResult> {
  const last = req.steps[req.steps.length - 1];
  if (!last) throw new Error('requestReexecution: no steps');
  if (last.step !== req.step) throw new Error(`requestReexecution: the audited step ${req.step} must be the last of the steps`);
  const dim = last.input.length / (last.nTokens * DTYPE_BYTES[last.dtype]);
  if (!Number.isInteger(dim) || dim < 1)
    throw new Error(`requestReexecution: input of ${last.input.length} bytes is not ${last.nTokens} × dim × ${last.dtype}`);
  const size = req.steps.reduce((a, s) => a + s.input.length, 0);
  const payload = new Uint8Array(size);
  let off = 0;
  for (const s of req.steps) {
    payload.set(s.input, off);
    off += s.input.length;
  }
  const request = signReexecutionRequest(
    host.identity,
    {
      executor: addressOfPeer(peer.peerId),
      requestId: requestIdOf(req.routeSessionId),
      sessionId: sessionIdOf(req.routeSessionId),
      step: req.step,
      auditedReceiptHash: req.auditedReceiptHash,
      expiresAt: nowSeconds() + Math.min(MAX_REQUEST_VALIDITY_S, Math.ceil(timeoutMs / 1000) + 30),
    },
    domain,
  );
  const header = {
    request,
    routeSessionId: req.routeSessionId,
    step: req.step,
    layers: req.layers,
    modelId: req.modelId,
    auditedReceiptHash: req.auditedReceiptHash,
    steps: req.steps.map((s) => ({ step: s.step, pos: s.pos, nTokens: s.nTokens, dtype: s.dtype, bytes: s.input.length })),
  };

  const t0 = performance.now();
  const signal = AbortSignal.timeout(timeoutMs);
  let stream: Stream;
  try {
    await host.dial(peer.peerId, peer.addrs, signal);
    stream = await host.libp2p.dialProtocol(parsePeerId(peer.peerId), AUDIT_EXEC_PROTOCOL, { signal });
  } catch (e) {
    throw new ReexecError(`cannot reach ${peer.peerId} for a re-execution: ${(e as Error).message}`, false);
  }
  let msg: { header: Record<string, unknown>; payload: Uint8Array };
  try {
    const reply = readAuditMessage(stream, Math.max(1, timeoutMs - (performance.now() - t0)));
    reply.catch(() => undefined); // a failed send is reported below; never an unhandled rejection
    try {
      await sendAuditMessage(stream, header, payload);
      msg = await reply;
    } catch (e) {
      throw new ReexecError(`re-execution on ${peer.peerId}: ${(e as Error).message}`, false);
    }
  } finally {
    void stream.close({ signal: AbortSignal.timeout(2000) }).catch(() => undefined);
  }
  const ms = performance.now() - t0;

  const h = msg.header as { ok?: unknown; reason?: unknown; receipt?: unknown; output?: { dtype?: unknown; bytes?: unknown } };
  if (h.ok !== true) throw new ReexecError(`${peer.peerId} refused the re-execution: ${String(h.reason ?? 'no reason')}`, true);
  const v = checkSigned('ReexecutionReceipt', h.receipt, domain);
  if (!v.ok) throw new ReexecError(`${peer.peerId} sent a bad re-execution receipt: ${v.reason}`, true);
  const receipt = h.receipt as SignedReceipt;
  const r = receipt.record;
  const want = addressOfPeer(peer.peerId);
  if (r.signer.toLowerCase() !== want.toLowerCase())
    throw new ReexecError(`re-execution receipt is signed by ${r.signer}, but ${peer.peerId} is ${want}`, true);
  // from here on the peer has signed what it sent: a mismatch is its own signed word
  const wrong = (why: string) => new ReexecError(`${peer.peerId} answered the re-execution wrongly: ${why}`, true, receipt);
  const eq = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();
  const expect: [string, unknown, unknown][] = [
    ['step', r.step, last.step],
    ['pos', r.pos, last.pos],
    ['nTokens', r.nTokens, last.nTokens],
    ['layerStart', r.layerStart, req.layers[0]],
    ['layerEnd', r.layerEnd, req.layers[1]],
  ];
  for (const [k, got, exp] of expect) if (got !== exp) throw wrong(`receipt ${k} is ${String(got)}, expected ${String(exp)}`);
  if (!eq(r.modelId, toModelId(req.modelId))) throw wrong(`receipt modelId ${r.modelId} is not ${req.modelId}`);
  if (!eq(r.requestId, requestIdOf(req.routeSessionId)) || !eq(r.sessionId, sessionIdOf(`${req.routeSessionId}/audit`)))
    throw wrong('receipt is for another session');
  if (!eq(r.upstreamReceiptHash, req.auditedReceiptHash))
    throw wrong(`receipt links to ${r.upstreamReceiptHash}, not the audited receipt ${req.auditedReceiptHash}`);
  if (!eq(r.inputHash, hashTensor(last.input))) throw wrong('receipt inputHash is not the hash of the input sent');
  const n = last.nTokens * dim * 4;
  if (h.output?.dtype !== 'f32' || h.output.bytes !== msg.payload.length || msg.payload.length !== n)
    throw wrong(
      `output is ${msg.payload.length} bytes (header ${String(h.output?.bytes)} ${String(h.output?.dtype)}), expected ${n} f32 bytes`,
    );
  if (!eq(r.outputHash, hashTensor(msg.payload))) throw wrong('receipt outputHash is not the hash of the output bytes');
  const outputBytes = msg.payload;
  return { output: decodeTensor(outputBytes, 'f32', last.nTokens * dim), outputBytes, receipt, ms };
}
