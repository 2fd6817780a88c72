// Shared fixtures for control-plane tests: fixed keys, a fixed receipt (docs/signatures.md
// test vector) and a builder for routes of signed receipts.
import { identityFromSecret, hexToBytes, type Identity } from '../../src/identity/identity.js';
import { ZERO_HASH, type ExecutionReceipt, type Hex, type OdsiDomain } from '../../src/accountability/records/eip712.js';
import { receiptHash, signReceipt, type SignedReceipt } from '../../src/accountability/records/receipts.js';
import { createHash } from 'node:crypto';

/** web3.js documentation key; its address is public: 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23 */
export const VECTOR_SECRET = '4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318';
export const VECTOR_ADDRESS = '0x2c7536E3605D9C16a7a3D7b1898e529396a65c23';
export const DOMAIN: OdsiDomain = { chainId: 31337 };
export const DOMAIN_WITH_CONTRACT: OdsiDomain = { chainId: 31337, verifyingContract: '0x5FbDB2315678afecb367f032d93F642f64180aa3' };

const rep = (b: string): Hex => `0x${b.repeat(64)}`;

/** The receipt documented in docs/signatures.md. */
export const VECTOR_RECEIPT: ExecutionReceipt = {
  requestId: rep('1'),
  sessionId: rep('2'),
  step: 3,
  pos: 17,
  nTokens: 1,
  layerStart: 2,
  layerEnd: 5,
  modelId: rep('3'),
  profile: 'reference/f32',
  inputHash: rep('4'),
  budgetUs: 250000,
  signer: VECTOR_ADDRESS,
  outputHash: rep('5'),
  recvUs: 120,
  computeUs: 5400,
  sendUs: 80,
  upstreamReceiptHash: rep('6'),
  prevReceiptHash: ZERO_HASH,
  commitmentHash: rep('7'),
};

export function vectorIdentity(): Identity {
  return identityFromSecret(hexToBytes(VECTOR_SECRET));
}

/** Deterministic identities for tests. */
export function testIdentity(n: number): Identity {
  const secret = createHash('sha256').update(`odsi-test-identity-${n}`).digest();
  return identityFromSecret(new Uint8Array(secret));
}

export const h = (s: string): Hex => `0x${createHash('sha256').update(s).digest('hex')}`;

/**
 * One step through a route of hops over consecutive layer ranges: hop i receives what hop
 * i-1 sent. Returns receipts in hop order; `prev` gives each signer's previous receipt hash.
 */
export function routeStep(
  hops: { id: Identity; start: number; end: number }[],
  step: number,
  opts: { requestId?: Hex; sessionId?: Hex; prev?: Map<string, Hex>; input?: Hex; pos?: number; nTokens?: number } = {},
): SignedReceipt[] {
  const out: SignedReceipt[] = [];
  let input = opts.input ?? h(`gateway-input-${step}`);
  let upstream: Hex = ZERO_HASH;
  for (const hop of hops) {
    const output = h(`${hop.id.address}-${step}-${input}`);
    const prevHash = opts.prev?.get(hop.id.address) ?? ZERO_HASH;
    const s = signReceipt(
      hop.id,
      {
        requestId: opts.requestId ?? h('request-1'),
        sessionId: opts.sessionId ?? h('session-1'),
        step,
        pos: opts.pos ?? step,
        nTokens: opts.nTokens ?? 1,
        layerStart: hop.start,
        layerEnd: hop.end,
        modelId: h('model'),
        profile: 'reference/f32',
        inputHash: input,
        budgetUs: 100000,
        outputHash: output,
        recvUs: 10,
        computeUs: 1000,
        sendUs: 10,
        upstreamReceiptHash: upstream,
        prevReceiptHash: prevHash,
        commitmentHash: ZERO_HASH,
      },
      DOMAIN,
    );
    const digest = receiptHash(s.record, DOMAIN);
    opts.prev?.set(hop.id.address, digest);
    out.push(s);
    input = output;
    upstream = digest;
  }
  return out;
}

/** An unsigned receipt body for tests: one token at step 0 of layers [0, 2), every field overridable. */
export function receiptBody(over: Partial<Omit<ExecutionReceipt, 'signer'>> = {}): Omit<ExecutionReceipt, 'signer'> {
  return {
    requestId: h('r'),
    sessionId: h('s'),
    step: 0,
    pos: 0,
    nTokens: 1,
    layerStart: 0,
    layerEnd: 2,
    modelId: h('m'),
    profile: 'reference/f32',
    inputHash: h('in'),
    budgetUs: 1000,
    outputHash: ZERO_HASH,
    recvUs: 1,
    computeUs: 1,
    sendUs: 1,
    upstreamReceiptHash: ZERO_HASH,
    prevReceiptHash: ZERO_HASH,
    commitmentHash: ZERO_HASH,
    ...over,
  };
}
