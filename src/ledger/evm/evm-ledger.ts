// The EVM backend of the Ledger: OdsiRegistry on a chain, driven with viem. The contract is the
// source of truth and checks every rule itself (evidence by ecrecover, unbonding, balances,
// conservation of payments); this class only encodes calls, pre-checks what it can locally
// so that bad input is refused with a clear reason before any transaction, turns the
// contract's custom errors into the interface's reject codes, and reads state back.
//
// Every write is a transaction signed by the LedgerSigner's own key (the identity's
// secp256k1 key is its EVM account). Writes are simulated first (eth_call): a refusal costs
// nothing and stores nothing. Writes from one EvmLedger are serialised (one nonce stream per
// key, no races). On a dev chain (anvil) signers without gas get some with anvil_setBalance.

import {
  BaseError,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  http,
  keccak256,
  parseEventLogs,
  stringToBytes,
  type Abi,
  type Chain,
  type Hex,
  type Log,
  type PrivateKeyAccount,
  type PublicClient,
  type Transport,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { toChecksumAddress } from '../../identity/identity.js';
import { checkSigned, receiptHash, type SignedReceipt, type SignedVerdict } from '../../accountability/records/receipts.js';
import type { Evidence } from '../../accountability/records/evidence.js';
import { typedDigest, type OdsiDomain } from '../../accountability/records/eip712.js';
import {
  conductScore,
  paramsFromJson,
  paramsJson,
  PPM,
  reputationAt,
  updateReputation,
  type LedgerParams,
  type SlashKind,
} from '../rules.js';
import {
  reject,
  type AccountStatus,
  type Address,
  type EpochBatch,
  type EpochOutcome,
  type EvidenceOutcome,
  type IdentityStatus,
  type Ledger,
  type LedgerResult,
  type LedgerSigner,
  type IdentityChanges,
  type LedgerStatus,
  type Rejection,
  type RejectCode,
  type ReputationReport,
  type SlashOutcome,
  type VerifyReport,
} from '../ledger.js';
import { custodyContradiction } from '../evidence-check.js';
import { loadContracts } from './contracts.js';
import { chainFor, isDevChain, minedReceipt, onChainParams, secretHex, topUpGas } from './deploy.js';
import { receiptWords, verdictWords } from './records.js';

export interface EvmLedgerOptions {
  rpcUrl: string;
  registry: Address;
  /** on a dev chain (anvil), give signers without gas some (default true) */
  fundGasOnDevChain?: boolean;
  /** ms between receipt polls (default 25: a local chain mines at once) */
  pollingIntervalMs?: number;
}

const KINDS: Record<number, SlashKind> = { 1: 'equivocation', 2: 'custody', 3: 'computation' };
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

type Onchain = {
  addr: Address;
  role: number;
  registeredAt: bigint;
  reputationPpm: number;
  reputationEpoch: bigint;
  layerSteps: bigint;
  wallet: bigint;
  stake: bigint;
  slashed: bigint;
  earned: bigint;
  bonded: bigint;
  eligible: boolean;
  unbonding: readonly { amount: bigint; releaseAt: bigint }[];
  slashes: readonly { kind: number; at: bigint; amount: bigint; evidenceId: Hex }[];
};
type OnchainAccount = { addr: Address; balance: bigint; charged: bigint; deposited: bigint };
type OnchainDispute = { id: Hex; accuser: Address; accused: Address; bond: bigint; closesAt: bigint; guilty: number; innocent: number };
type OnchainTotals = Record<
  | 'minted'
  | 'withdrawnOut'
  | 'wallets'
  | 'stake'
  | 'unbonding'
  | 'accounts'
  | 'bonds'
  | 'fees'
  | 'burned'
  | 'slashed'
  | 'charged'
  | 'rewards',
  bigint
>;

interface Mined {
  ok: true;
  hash: Hex;
  blockNumber: bigint;
  gasUsed: bigint;
  logs: Log[];
}

/** Opens the ledger at `registry` on `rpcUrl` (reads its parameters and domain from the contract). */
export async function openEvmLedger(o: EvmLedgerOptions): Promise<EvmLedger> {
  if (!ADDRESS.test(o.registry)) throw new Error(`not a contract address: ${o.registry}`);
  const transport = http(o.rpcUrl, { retryCount: 0 });
  const probe = createPublicClient({ transport });
  const chainId = await probe.getChainId();
  const chain = chainFor(chainId, o.rpcUrl);
  const pub = createPublicClient({ chain, transport, pollingInterval: o.pollingIntervalMs ?? 25 }) as PublicClient<Transport, Chain>;
  const { contracts } = loadContracts();
  const abi = contracts.OdsiRegistry.abi;
  const registry = toChecksumAddress(o.registry);
  const code = await pub.getCode({ address: registry });
  if (!code || code === '0x') throw new Error(`no contract at ${registry} on chain ${chainId}`);
  const read = (functionName: string, args: readonly unknown[] = []) => pub.readContract({ address: registry, abi, functionName, args });
  const [json, operator, recordsChainId, token, onchain] = await Promise.all([
    read('paramsJson') as Promise<string>,
    read('operator') as Promise<Address>,
    read('recordsChainId') as Promise<bigint>,
    read('token') as Promise<Address>,
    read('getParams') as Promise<Record<string, unknown>>,
  ]);
  const params = paramsFromJson(JSON.parse(json) as Record<string, string | number>);
  // the contract enforces its Params struct: the JSON copy must say the same
  const want = onChainParams(params) as Record<string, unknown>;
  for (const k of Object.keys(want))
    if (String(want[k]) !== String(onchain[k]))
      throw new Error(`registry ${registry}: paramsJson.${k} = ${String(want[k])} but the contract enforces ${String(onchain[k])}`);
  const dev = (o.fundGasOnDevChain ?? true) && (await isDevChain(pub));
  return new EvmLedger(
    pub,
    chain,
    transport,
    abi,
    contracts.OdsiToken.abi,
    registry,
    toChecksumAddress(token),
    toChecksumAddress(operator),
    params,
    { chainId: Number(recordsChainId) },
    dev,
  );
}

export class EvmLedger implements Ledger {
  private readonly accounts = new Map<string, PrivateKeyAccount>();
  private queue: Promise<unknown> = Promise.resolve();
  /** gas used per contract function, summed, and calls (for docs/bench) */
  readonly gasUsed = new Map<string, { calls: number; gas: bigint }>();

  constructor(
    private readonly pub: PublicClient<Transport, Chain>,
    private readonly chain: Chain,
    private readonly transport: Transport,
    private readonly abi: Abi,
    private readonly tokenAbi: Abi,
    readonly registry: Address,
    readonly token: Address,
    readonly operator: Address,
    readonly params: LedgerParams,
    /** the EIP-712 domain the contract verifies records under */
    readonly domain: OdsiDomain,
    private readonly devChain: boolean,
  ) {}

  // ---------------------------------------------------------------- plumbing

  private evmAccount(who: LedgerSigner): PrivateKeyAccount {
    let a = this.accounts.get(who.address.toLowerCase());
    if (!a) {
      a = privateKeyToAccount(secretHex(who.secret));
      if (a.address.toLowerCase() !== who.address.toLowerCase())
        throw new Error(`signer ${who.address}: its secret is the key of ${a.address}`);
      this.accounts.set(who.address.toLowerCase(), a);
    }
    return a;
  }

  private read<T>(functionName: string, args: readonly unknown[] = []): Promise<T> {
    return this.pub.readContract({ address: this.registry, abi: this.abi, functionName, args }) as Promise<T>;
  }

  /** One transaction: simulated first (a revert becomes a Rejection, nothing is sent), then mined. */
  private write(who: LedgerSigner, functionName: string, args: readonly unknown[]): Promise<Mined | Rejection> {
    const run = async (): Promise<Mined | Rejection> => {
      let account: PrivateKeyAccount;
      try {
        account = this.evmAccount(who);
      } catch (e) {
        return reject('bad_signature', (e as Error).message);
      }
      if (this.devChain) await topUpGas(this.pub, account.address);
      let request;
      try {
        ({ request } = await this.pub.simulateContract({ address: this.registry, abi: this.abi, functionName, args, account }));
      } catch (e) {
        return this.rejection(e);
      }
      const wallet = createWalletClient({ chain: this.chain, transport: this.transport, account });
      const hash = await wallet.writeContract(request);
      const r = await minedReceipt(this.pub, hash);
      if (r.status !== 'success')
        return reject('malformed', `${functionName} reverted on chain (state changed between check and inclusion)`);
      const g = this.gasUsed.get(functionName) ?? { calls: 0, gas: 0n };
      this.gasUsed.set(functionName, { calls: g.calls + 1, gas: g.gas + r.gasUsed });
      return { ok: true, hash, blockNumber: r.blockNumber, gasUsed: r.gasUsed, logs: r.logs };
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** The contract's custom error → the interface's reject code and a readable reason. */
  private rejection(e: unknown): Rejection {
    const rev = e instanceof BaseError ? e.walk((x) => x instanceof ContractFunctionRevertedError) : undefined;
    if (!(rev instanceof ContractFunctionRevertedError) || !rev.data) throw e;
    const name = rev.data.errorName;
    const a = (rev.data.args ?? []) as readonly unknown[];
    const s = (x: unknown) => String(x);
    const table: Record<string, [RejectCode, string]> = {
      NotAuthorized: ['not_authorized', 'only the operator (or an authorised gateway) may do this'],
      AlreadyRegistered: ['already_registered', 'this identity is already registered'],
      UnknownIdentity: ['unknown_identity', `${s(a[0])} is not a registered identity`],
      Malformed: ['malformed', `malformed input: ${s(a[0])}`],
      Overdrawn: ['overdrawn', `${s(a[0])} has ${s(a[1])}, needs ${s(a[2])}`],
      BelowMinStake: ['below_min_stake', `stake ${s(a[0])} would be below the minimum ${s(a[1])}`],
      IdentitySlashed: ['slashed', `${s(a[0])} was slashed: it may only unstake and withdraw`],
      UnbondingNotOver: ['unbonding_not_over', `not enough unbonding has matured (next release at ${s(a[0])})`],
      NothingToWithdraw: ['nothing_to_withdraw', 'no unbonding stake to withdraw'],
      BadSignature: ['bad_signature', `record ${s(a[0])}: signature recovers to ${s(a[1])}, not its signer ${s(a[2])}`],
      EvidenceReplayed: ['replayed_evidence', `evidence ${s(a[0])} was already used`],
      Unprovable: ['unprovable_evidence', s(a[0])],
      UnknownDispute: ['unknown_dispute', `no dispute ${s(a[0])}`],
      DisputeIsClosed: ['dispute_closed', `dispute ${s(a[0])} is closed`],
      EpochOrder: ['epoch_order', `expected epoch ${s(a[0])}, got ${s(a[1])}`],
      TransferFailed: ['overdrawn', 'token transfer failed'],
    };
    const [code, reason] = table[name ?? ''] ?? ['malformed', `rejected by the contract: ${name ?? rev.shortMessage}`];
    return reject(code, reason);
  }

  private events(m: Mined, eventName: string): { args: Record<string, unknown> }[] {
    return parseEventLogs({ abi: this.abi, logs: m.logs, eventName }) as unknown as { args: Record<string, unknown> }[];
  }

  private ref(m: Mined) {
    return { seq: Number(m.blockNumber), hash: m.hash };
  }

  // ---------------------------------------------------------------- identities and tokens

  async register(who: LedgerSigner, role: 'node' | 'gateway' = 'node'): Promise<LedgerResult> {
    const m = await this.write(who, 'register', [role === 'gateway' ? 1 : 0]);
    return m.ok ? { ok: true, event: this.ref(m) } : m;
  }

  async authorize(operator: LedgerSigner, gateway: Address): Promise<LedgerResult> {
    if (!ADDRESS.test(gateway)) return reject('malformed', `not an address: ${gateway}`);
    const m = await this.write(operator, 'authorize', [toChecksumAddress(gateway)]);
    return m.ok ? { ok: true, event: this.ref(m) } : m;
  }

  async mint(operator: LedgerSigner, to: Address, amount: bigint): Promise<LedgerResult> {
    const bad = badAmount(amount) ?? (ADDRESS.test(to) ? undefined : reject('malformed', `not an address: ${to}`));
    if (bad) return bad;
    const m = await this.write(operator, 'mint', [toChecksumAddress(to), amount, false]);
    return m.ok ? { ok: true, event: this.ref(m) } : m;
  }

  async stake(who: LedgerSigner, amount: bigint): Promise<LedgerResult<{ stake: bigint }>> {
    const bad = badAmount(amount);
    if (bad) return bad;
    const m = await this.write(who, 'stake', [amount]);
    if (!m.ok) return m;
    const v = await this.read<Onchain>('identityView', [toChecksumAddress(who.address)]);
    return { ok: true, event: this.ref(m), stake: v.stake };
  }

  async requestUnstake(who: LedgerSigner, amount: bigint): Promise<LedgerResult<{ releaseAt: number }>> {
    const bad = badAmount(amount);
    if (bad) return bad;
    const m = await this.write(who, 'requestUnstake', [amount]);
    if (!m.ok) return m;
    const ev = this.events(m, 'UnstakeRequested')[0]!;
    return { ok: true, event: this.ref(m), releaseAt: Number(ev.args.releaseAt as bigint) };
  }

  async withdraw(who: LedgerSigner, amount?: bigint): Promise<LedgerResult<{ withdrawn: bigint }>> {
    if (amount !== undefined) {
      const bad = badAmount(amount);
      if (bad) return bad;
    }
    const m = await this.write(who, 'withdraw', [amount ?? 0n]);
    if (!m.ok) return m;
    const ev = this.events(m, 'Withdrawn')[0]!;
    return { ok: true, event: this.ref(m), withdrawn: ev.args.amount as bigint };
  }

  async deposit(account: Address, amount: bigint, from?: LedgerSigner): Promise<LedgerResult<{ balance: bigint }>> {
    const bad = badAmount(amount) ?? (ADDRESS.test(account) ? undefined : reject('malformed', `not an address: ${account}`));
    if (bad) return bad;
    let m: Mined | Rejection;
    if (from) m = await this.write(from, 'deposit', [toChecksumAddress(account), amount]);
    else {
      const op = this.operatorSigner;
      if (!op)
        return reject('not_authorized', 'a deposit without a payer is minted by the operator, whose key this ledger was not opened with');
      m = await this.write(op, 'mint', [toChecksumAddress(account), amount, true]);
    }
    if (!m.ok) return m;
    const a = await this.read<OnchainAccount>('accountView', [toChecksumAddress(account)]);
    return { ok: true, event: this.ref(m), balance: a.balance };
  }

  /** the operator's key, when this process holds it (the demo, tests, the deployer's CLI) */
  operatorSigner: LedgerSigner | undefined;

  // ---------------------------------------------------------------- evidence

  async submitEvidence(submitter: LedgerSigner, evidence: Evidence): Promise<LedgerResult<EvidenceOutcome>> {
    const ev = evidence as Partial<Evidence> | null;
    if (!ev || typeof ev !== 'object') return reject('malformed', 'evidence is not an object');
    switch (ev.kind) {
      case 'equivocation':
        return this.equivocation(submitter, ev);
      case 'custody':
        return this.custody(submitter, ev);
      case 'audit':
        return this.audit(submitter, ev);
      default:
        return reject('malformed', `unknown evidence kind ${JSON.stringify((ev as { kind?: unknown }).kind)}`);
    }
  }

  private checkReceipt(
    s: unknown,
    what: string,
    type: 'ExecutionReceipt' | 'ReexecutionReceipt' = 'ExecutionReceipt',
  ): Rejection | undefined {
    const c = checkSigned(type, s, this.domain);
    if (!c.ok) return reject(c.malformed ? 'malformed' : 'bad_signature', `${what}: ${c.reason}`);
    return undefined;
  }

  private async equivocation(
    submitter: LedgerSigner,
    ev: Partial<Extract<Evidence, { kind: 'equivocation' }>>,
  ): Promise<LedgerResult<EvidenceOutcome>> {
    const bad = this.checkReceipt(ev.a, 'receipt a') ?? this.checkReceipt(ev.b, 'receipt b');
    if (bad) return bad;
    const a = ev.a!;
    const b = ev.b!;
    const m = await this.write(submitter, 'slashEquivocation', [receiptWords(a.record), a.signature, receiptWords(b.record), b.signature]);
    return this.slashed(m);
  }

  private async custody(
    submitter: LedgerSigner,
    ev: Partial<Extract<Evidence, { kind: 'custody' }>>,
  ): Promise<LedgerResult<EvidenceOutcome>> {
    if (!Array.isArray(ev.receipts) || ev.receipts.length < 2 || ev.receipts.length > 64)
      return reject('malformed', 'custody: expected 2 to 64 signed receipts');
    const rs = ev.receipts as SignedReceipt[];
    for (let i = 0; i < rs.length; i++) {
      const bad = this.checkReceipt(rs[i], `receipt ${i}`);
      if (bad) return bad;
    }
    // the pair the contract can check: the one the SQLite backend's check finds
    const pair = custodyContradiction(
      rs,
      rs.map((r) => receiptHash(r.record, this.domain)),
    );
    if (!pair) return reject('unprovable_evidence', 'custody: no receipt contradicts the upstream receipt it names');
    const [u, d] = [rs[pair.up]!, rs[pair.down]!];
    const m = await this.write(submitter, 'slashCustody', [receiptWords(u.record), u.signature, receiptWords(d.record), d.signature]);
    return this.slashed(m);
  }

  private async audit(submitter: LedgerSigner, ev: Partial<Extract<Evidence, { kind: 'audit' }>>): Promise<LedgerResult<EvidenceOutcome>> {
    const type = ev.receiptType === 'ReexecutionReceipt' ? 'ReexecutionReceipt' : 'ExecutionReceipt';
    const bad = this.checkReceipt(ev.receipt, 'receipt', type) ?? this.checkVerdicts(ev.verdicts);
    if (bad) return bad;
    const r = ev.receipt!;
    const vs = ev.verdicts!;
    const m = await this.write(submitter, 'accuse', [
      type === 'ReexecutionReceipt',
      receiptWords(r.record),
      r.signature,
      vs.map((v) => verdictWords(v.record)),
      vs.map((v) => v.signature),
    ]);
    if (!m.ok) return m;
    if (this.events(m, 'Slashed').length) return this.slashed(m);
    const closed = this.events(m, 'DisputeClosed')[0];
    if (closed)
      return {
        ok: true,
        event: this.ref(m),
        outcome: 'frivolous',
        accused: toChecksumAddress(r.record.signer),
        bondForfeited: this.params.accuserBond,
        evidenceId: closed.args.id as Hex,
      };
    return this.disputeOutcome(m, this.events(m, 'DisputeOpened')[0]!.args.id as Hex);
  }

  private checkVerdicts(vs: unknown): Rejection | undefined {
    if (!Array.isArray(vs) || vs.length > 64) return reject('malformed', 'verdicts: expected an array of at most 64');
    for (let i = 0; i < vs.length; i++) {
      const c = checkSigned('AuditVerdict', vs[i], this.domain);
      if (!c.ok) return reject(c.malformed ? 'malformed' : 'bad_signature', `verdict ${i}: ${c.reason}`);
    }
    return undefined;
  }

  async addVerdicts(submitter: LedgerSigner, disputeId: Hex, verdicts: SignedVerdict[]): Promise<LedgerResult<EvidenceOutcome>> {
    if (typeof disputeId !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(disputeId))
      return reject('malformed', 'dispute id must be bytes32 hex');
    const bad = this.checkVerdicts(verdicts);
    if (bad) return bad;
    const m = await this.write(submitter, 'addVerdicts', [
      disputeId,
      verdicts.map((v) => verdictWords(v.record)),
      verdicts.map((v) => v.signature),
    ]);
    if (!m.ok) return m;
    return this.disputeOutcome(m, disputeId);
  }

  private async disputeOutcome(m: Mined, id: Hex): Promise<LedgerResult<EvidenceOutcome>> {
    if (this.events(m, 'Slashed').length) return this.slashed(m);
    const d = await this.read<readonly [Address, Address, Hex, bigint, bigint, number, number, boolean]>('disputes', [id]);
    const [, accused, , bond, closesAt, guilty, innocent] = d;
    if (this.events(m, 'DisputeClosed').some((e) => e.args.id === id))
      return {
        ok: true,
        event: this.ref(m),
        outcome: 'frivolous',
        accused: toChecksumAddress(accused),
        bondForfeited: bond,
        evidenceId: id,
      };
    return {
      ok: true,
      event: this.ref(m),
      outcome: 'dispute',
      disputeId: id,
      accused: toChecksumAddress(accused),
      bond,
      closesAt: Number(closesAt),
      guilty,
      innocent,
    };
  }

  private slashed(m: Mined | Rejection): LedgerResult<EvidenceOutcome> {
    if (!m.ok) return m;
    const e = this.events(m, 'Slashed')[0]!.args;
    const slash: SlashOutcome = {
      accused: e.identity as Address,
      kind: KINDS[Number(e.kind)]!,
      slashed: e.amount as bigint,
      reporter: e.reporter as Address,
      reporterReward: e.reward as bigint,
      burned: (e.amount as bigint) - (e.reward as bigint),
      evidenceId: e.evidenceId as Hex,
    };
    return { ok: true, event: this.ref(m), outcome: 'slashed', slash };
  }

  // ---------------------------------------------------------------- epochs

  async settleEpoch(gateway: LedgerSigner, batch: EpochBatch): Promise<LedgerResult<EpochOutcome>> {
    if (!batch || !Number.isSafeInteger(batch.epoch) || batch.epoch < 0 || !Array.isArray(batch.charges) || !Array.isArray(batch.credits))
      return reject('malformed', 'a batch needs an epoch, charges and credits');
    if (batch.charges.length > 10_000 || batch.credits.length > 10_000)
      return reject('malformed', 'a batch holds at most 10000 charges and 10000 credits');
    const seen = new Set<string>();
    for (const c of batch.charges) {
      if (!c || !ADDRESS.test(c.account) || typeof c.amount !== 'bigint' || c.amount < 0n)
        return reject('malformed', 'a charge needs an account address and an amount ≥ 0');
      if (seen.has(c.account.toLowerCase())) return reject('malformed', `settle.charges: ${c.account} twice`);
      seen.add(c.account.toLowerCase());
    }
    seen.clear();
    for (const c of batch.credits) {
      if (
        !c ||
        !ADDRESS.test(c.identity) ||
        typeof c.units !== 'bigint' ||
        c.units < 0n ||
        !Number.isSafeInteger(c.layerSteps) ||
        c.layerSteps < 0
      )
        return reject('malformed', 'a credit needs an identity address, units ≥ 0 and layerSteps ≥ 0');
      if (seen.has(c.identity.toLowerCase())) return reject('malformed', `settle.credits: ${c.identity} twice`);
      seen.add(c.identity.toLowerCase());
    }
    const m = await this.write(gateway, 'settleEpoch', [
      BigInt(batch.epoch),
      batch.charges.map((c) => ({ account: toChecksumAddress(c.account), amount: c.amount })),
      batch.credits.map((c) => ({ identity: toChecksumAddress(c.identity), units: c.units, layerSteps: BigInt(c.layerSteps) })),
    ]);
    if (!m.ok) return m;
    const s = this.events(m, 'EpochSettled')[0]!.args;
    const paidEv = this.events(m, 'Paid');
    const paid = paidEv.map((e) => ({ identity: e.args.identity as Address, amount: e.args.amount as bigint }));
    const closedDisputes = this.events(m, 'DisputeClosed')
      .filter((e) => Number(e.args.outcome) === 3)
      .map((e) => e.args.id as Hex)
      .sort((x, y) => (x.toLowerCase() < y.toLowerCase() ? -1 : 1));
    const paid2 = paid.map((p) => ({ identity: toChecksumAddress(p.identity), amount: p.amount }));
    paid.splice(0, paid.length, ...paid2);
    return {
      ok: true,
      event: this.ref(m),
      epoch: batch.epoch,
      charged: s.charged as bigint,
      rewards: s.rewards as bigint,
      fees: s.fees as bigint,
      paid,
      closedDisputes,
    };
  }

  async publishReputation(gateway: LedgerSigner, epoch: number, reports: ReputationReport[]): Promise<LedgerResult<{ updated: number }>> {
    if (!Number.isSafeInteger(epoch) || epoch < 0 || !Array.isArray(reports) || reports.length > 10_000)
      return reject('malformed', 'reputation needs an epoch and at most 10000 reports');
    const byId = new Map<string, ReputationReport>();
    for (const r of reports) {
      if (!r || !ADDRESS.test(r.identity)) return reject('malformed', 'a report needs an identity address');
      for (const k of ['deadlinesMet', 'deadlinesMissed', 'auditsPassed', 'auditsFailed', 'availabilityPpm', 'throughputPpm'] as const) {
        const max = k.endsWith('Ppm') ? PPM : Number.MAX_SAFE_INTEGER;
        if (!Number.isSafeInteger(r[k]) || r[k] < 0 || r[k] > max)
          return reject('malformed', `report ${r.identity}: ${k} must be an integer in [0, ${max}]`);
      }
      if (byId.has(r.identity.toLowerCase())) return reject('malformed', `reputation.reports: ${r.identity} twice`);
      byId.set(r.identity.toLowerCase(), r);
    }
    // the rules' arithmetic runs here (rules.ts, as in the SQLite backend's apply); the contract
    // stores each reported identity's new value and epoch; the unreported decay lazily
    const who: Address[] = [];
    const ppm: number[] = [];
    for (const r of byId.values()) {
      const v = await this.read<Onchain>('identityView', [toChecksumAddress(r.identity)]);
      if (!(await this.read<boolean>('isRegistered', [toChecksumAddress(r.identity)])))
        return reject('unknown_identity', `reported identity ${r.identity} is not registered`);
      who.push(toChecksumAddress(r.identity));
      ppm.push(v.slashes.length > 0 ? 0 : updateReputation(this.reputationAt(v, epoch - 1), conductScore(r), this.params));
    }
    const reportsHash = keccak256(stringToBytes(JSON.stringify(reports)));
    const m = await this.write(gateway, 'publishReputation', [BigInt(epoch), who, ppm, reportsHash]);
    if (!m.ok) return m;
    return { ok: true, event: this.ref(m), updated: byId.size };
  }

  /** reputation of `v` as of reputation epoch `epoch` (rules.reputationAt, as the SQLite backend) */
  private reputationAt(v: Onchain, epoch: number): number {
    return reputationAt(v.reputationPpm, Number(v.reputationEpoch), epoch, this.params);
  }

  // ---------------------------------------------------------------- reads

  async identityChanges(after: bigint, maxBlocks: number): Promise<IdentityChanges> {
    // the chain's head now, not viem's cached one (cacheTime = the polling interval): a head read
    // just before the block of a write that was already awaited would leave that block's events out
    const head = await this.pub.getBlockNumber({ cacheTime: 0 });
    const fromBlock = after + 1n;
    const upTo = head < after + BigInt(Math.max(1, maxBlocks)) ? head : after + BigInt(Math.max(1, maxBlocks));
    if (fromBlock > upTo) return { upTo: after, head, addresses: [], epochs: false };
    const logs = (await this.pub.getContractEvents({ address: this.registry, abi: this.abi, fromBlock, toBlock: upTo })) as unknown as {
      eventName: string;
      args: Record<string, unknown>;
    }[];
    const seen = new Map<string, Address>();
    let epochs = false;
    for (const l of logs) {
      if (l.eventName === 'EpochSettled' || l.eventName === 'ReputationPublished') epochs = true;
      // every event that changes an identity's record names it as identity, accused or to
      for (const k of ['identity', 'accused', 'accuser', 'to', 'from']) {
        const a = l.args[k];
        if (typeof a === 'string' && ADDRESS.test(a) && !seen.has(a.toLowerCase())) seen.set(a.toLowerCase(), toChecksumAddress(a));
      }
    }
    return { upTo, head, addresses: [...seen.values()], epochs };
  }

  private async snapshotRaw() {
    const [t, idv, acv, ds, ep, repEp, events] =
      await this.read<
        readonly [OnchainTotals, readonly Onchain[], readonly OnchainAccount[], readonly OnchainDispute[], bigint, bigint, bigint]
      >('snapshot');
    return {
      totals: t,
      identities: idv,
      accounts: acv,
      disputes: ds,
      epoch: Number(ep),
      reputationEpoch: Number(repEp),
      events: Number(events),
    };
  }

  private identityStatus(v: Onchain, reputationEpoch: number): IdentityStatus {
    const rep = v.slashes.length > 0 ? 0 : this.reputationAt(v, reputationEpoch);
    const unbonding = v.unbonding.reduce((s, e) => s + e.amount, 0n);
    return {
      address: toChecksumAddress(v.addr),
      role: v.role === 1 ? 'gateway' : 'node',
      wallet: v.wallet.toString(),
      stake: v.stake.toString(),
      unbonding: unbonding.toString(),
      unbondingEntries: v.unbonding.map((e) => ({ amount: e.amount.toString(), releaseAt: Number(e.releaseAt) })),
      slashed: v.slashed.toString(),
      earned: v.earned.toString(),
      reputation: rep / PPM,
      reputationPpm: rep,
      layerSteps: Number(v.layerSteps),
      slashes: v.slashes.map((s) => ({ kind: KINDS[s.kind]!, amount: s.amount.toString(), evidenceId: s.evidenceId, at: Number(s.at) })),
      bonded: v.bonded.toString(),
      eligible: v.eligible,
      registeredAt: Number(v.registeredAt),
    };
  }

  async identity(address: Address): Promise<IdentityStatus | undefined> {
    if (!ADDRESS.test(address)) return undefined;
    if (!(await this.read<boolean>('isRegistered', [toChecksumAddress(address)]))) return undefined;
    const [v, repEpoch] = await Promise.all([
      this.read<Onchain>('identityView', [toChecksumAddress(address)]),
      this.read<bigint>('reputationEpoch'),
    ]);
    return this.identityStatus(v, Number(repEpoch));
  }

  async account(address: Address): Promise<AccountStatus | undefined> {
    if (!ADDRESS.test(address)) return undefined;
    const a = await this.read<OnchainAccount>('accountView', [toChecksumAddress(address)]);
    if (a.deposited === 0n && a.charged === 0n) return undefined;
    return {
      address: toChecksumAddress(address),
      balance: a.balance.toString(),
      charged: a.charged.toString(),
      deposited: a.deposited.toString(),
    };
  }

  async epochs(): Promise<{ epoch: number; reputationEpoch: number }> {
    const [ep, rep] = await Promise.all([this.read<bigint>('epoch'), this.read<bigint>('reputationEpoch')]);
    return { epoch: Number(ep), reputationEpoch: Number(rep) };
  }

  async status(): Promise<LedgerStatus> {
    const s = await this.snapshotRaw();
    const block = await this.pub.getBlock();
    const t = s.totals;
    return {
      backend: 'evm',
      location: `evm:${this.chain.rpcUrls.default.http[0]}@${this.registry} (chain ${this.chain.id})`,
      epoch: s.epoch,
      reputationEpoch: s.reputationEpoch,
      events: s.events,
      head: block.hash!,
      params: paramsJson(this.params),
      identities: byAddress(s.identities.map((v) => this.identityStatus(v, s.reputationEpoch))),
      accounts: byAddress(
        s.accounts.map((a) => ({
          address: toChecksumAddress(a.addr),
          balance: a.balance.toString(),
          charged: a.charged.toString(),
          deposited: a.deposited.toString(),
        })),
      ),
      disputes: s.disputes.map((d) => ({
        id: d.id,
        accused: toChecksumAddress(d.accused),
        accuser: toChecksumAddress(d.accuser),
        bond: d.bond.toString(),
        closesAt: Number(d.closesAt),
        guilty: d.guilty,
        innocent: d.innocent,
      })),
      totals: {
        minted: (t.minted - t.withdrawnOut).toString(),
        wallets: t.wallets.toString(),
        stake: t.stake.toString(),
        unbonding: t.unbonding.toString(),
        accounts: t.accounts.toString(),
        bonds: t.bonds.toString(),
        fees: t.fees.toString(),
        burned: t.burned.toString(),
        slashed: t.slashed.toString(),
        charged: t.charged.toString(),
        rewards: t.rewards.toString(),
      },
    };
  }

  /**
   * Re-checks the contract's books: the tokens it holds = everything its totals account for,
   * per-identity and per-account sums = the totals, charged = rewards + fees.
   */
  async verify(): Promise<VerifyReport> {
    const t0 = performance.now();
    const problems: string[] = [];
    const s = await this.snapshotRaw();
    const t = s.totals;
    const held = (await this.pub.readContract({
      address: this.token,
      abi: this.tokenAbi,
      functionName: 'balanceOf',
      args: [this.registry],
    })) as bigint;
    const inside = t.wallets + t.stake + t.unbonding + t.accounts + t.bonds + t.fees + t.burned;
    if (held !== t.minted - t.withdrawnOut) problems.push(`the registry holds ${held} tokens, its books say ${t.minted - t.withdrawnOut}`);
    if (inside !== t.minted - t.withdrawnOut)
      problems.push(`wallets+stake+unbonding+accounts+bonds+fees+burned = ${inside} ≠ minted − out = ${t.minted - t.withdrawnOut}`);
    if (t.charged !== t.rewards + t.fees) problems.push(`charged ${t.charged} ≠ rewards ${t.rewards} + fees ${t.fees}`);
    const sum = (xs: readonly bigint[]) => xs.reduce((a, b) => a + b, 0n);
    const ids = s.identities;
    const checks: [string, bigint, bigint][] = [
      ['stake', sum(ids.map((i) => i.stake)), t.stake],
      ['unbonding', sum(ids.map((i) => sum(i.unbonding.map((e) => e.amount)))), t.unbonding],
      ['slashed', sum(ids.map((i) => i.slashed)), t.slashed],
      ['bonds', sum(ids.map((i) => i.bonded)), t.bonds],
      ['earned', sum(ids.map((i) => i.earned)), t.rewards],
      ['accounts', sum(s.accounts.map((a) => a.balance)), t.accounts],
      ['charged', sum(s.accounts.map((a) => a.charged)), t.charged],
    ];
    for (const [what, got, want] of checks) if (got !== want) problems.push(`Σ ${what} over entries = ${got}, total says ${want}`);
    for (const i of ids) {
      const fromSlashes = sum(i.slashes.map((x) => x.amount));
      if (fromSlashes !== i.slashed) problems.push(`${i.addr}: slash records sum to ${fromSlashes}, slashed says ${i.slashed}`);
    }
    const block = await this.pub.getBlock();
    return { ok: problems.length === 0, events: s.events, head: block.hash!, problems, ms: Math.round(performance.now() - t0) };
  }

  async close(): Promise<void> {
    await this.queue.catch(() => undefined);
  }

  /** the digest the contract computes for a receipt (for tests and tools) */
  receiptDigest(r: SignedReceipt): Hex {
    return typedDigest('ExecutionReceipt', r.record, this.domain);
  }
}

const byAddress = <T extends { address: string }>(xs: T[]): T[] =>
  xs.sort((a, b) => (a.address.toLowerCase() < b.address.toLowerCase() ? -1 : 1));

function badAmount(amount: unknown): Rejection | undefined {
  if (typeof amount !== 'bigint' || amount <= 0n) return reject('malformed', 'amount must be a positive integer of smallest units');
  return undefined;
}
