// The embedded ledger for long-running processes (gateway, node, demo): the same SqliteLedger,
// owned by a worker thread (ledger-worker.ts). Its commits (synchronous=FULL: fsync before a
// stake, slash or payment write is acknowledged, exactly as in-process), its catch-up with other
// writers (secp256k1 checks of their events) and its status builds run there, so none of it
// blocks the event loop that relays tokens. Calls are answered in order; a write's promise
// resolves only after the worker's commit returned.
import { Worker } from 'node:worker_threads';
import { identityFromSecret } from '../../identity/identity.js';
import type {
  AccountStatus,
  Address,
  EpochBatch,
  EpochOutcome,
  EvidenceOutcome,
  Hex,
  IdentityStatus,
  Ledger,
  LedgerResult,
  LedgerSigner,
  LedgerStatus,
  ReputationReport,
  VerifyReport,
} from '../ledger.js';
import type { Evidence } from '../../accountability/records/evidence.js';
import type { SignedVerdict } from '../../accountability/records/receipts.js';
import type { LedgerParams } from '../rules.js';
import { LedgerCorruptError, type SqliteLedgerOptions } from './sqlite-ledger.js';
import type { LedgerCall, LedgerReply, LedgerWorkerData } from './ledger-worker.js';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

type ErrorText = { name: string; message: string; problems?: string[] };
const toError = (e: ErrorText): Error => {
  if (e.problems) return new LedgerCorruptError(e.problems);
  const err = new Error(e.message);
  err.name = e.name;
  return err;
};
/** only a key crosses to the worker (an Identity's other fields stay here) */
const keyOf = (s: LedgerSigner | undefined): LedgerSigner | undefined => s && { address: s.address, secret: s.secret };

export class WorkerLedger implements Ledger {
  private next = 1;
  private readonly pending = new Map<number, Pending>();
  private dead?: Error;

  private constructor(
    private readonly worker: Worker,
    readonly params: LedgerParams,
    readonly operator: Address,
    private readonly operatorSigner: LedgerSigner | undefined,
  ) {
    worker.on('message', (m: LedgerReply) => {
      if (!('id' in m)) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (!this.pending.size) worker.unref();
      if ('error' in m) p.reject(toError(m.error));
      else p.resolve(m.value);
    });
    const die = (e: Error) => {
      this.dead ??= e;
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    worker.on('error', die);
    worker.on('exit', (code) => die(new Error(`the ledger worker exited (${code})`)));
    worker.unref(); // idle, it never keeps a process alive
  }

  /** Opens (creating if absent) the ledger file at `path` in a worker thread. */
  static open(path: string, o: Omit<SqliteLedgerOptions, 'clock'> = {}): Promise<WorkerLedger> {
    const data: LedgerWorkerData = { path, options: { ...o, operator: keyOf(o.operator) } };
    const worker = new Worker(new URL('./ledger-worker.js', import.meta.url), { workerData: data });
    return new Promise((resolve, reject) => {
      const fail = (e: Error) => {
        void worker.terminate();
        reject(e);
      };
      worker.once('error', fail);
      worker.once('message', (m: LedgerReply) => {
        worker.off('error', fail);
        if ('failed' in m) return fail(toError(m.failed));
        if (!('ready' in m)) return fail(new Error('ledger worker: unexpected first message'));
        const secret = m.ready.operatorSecret;
        const op = o.operator ?? (secret ? identityFromSecret(secret) : undefined);
        resolve(new WorkerLedger(worker, m.ready.params, m.ready.operator, op));
      });
    });
  }

  private call<T>(method: string, ...args: unknown[]): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.ref(); // a call in flight keeps the process alive until answered
      this.worker.postMessage({ id, method, args } satisfies LedgerCall);
    });
  }

  /** The operator's key when this process holds it (passed in, or kept in the file). */
  operatorKey(): LedgerSigner | undefined {
    return this.operatorSigner;
  }

  register(who: LedgerSigner, role?: 'node' | 'gateway'): Promise<LedgerResult> {
    return this.call('register', keyOf(who), role);
  }
  authorize(operator: LedgerSigner, gateway: Address): Promise<LedgerResult> {
    return this.call('authorize', keyOf(operator), gateway);
  }
  mint(operator: LedgerSigner, to: Address, amount: bigint): Promise<LedgerResult> {
    return this.call('mint', keyOf(operator), to, amount);
  }
  stake(who: LedgerSigner, amount: bigint): Promise<LedgerResult<{ stake: bigint }>> {
    return this.call('stake', keyOf(who), amount);
  }
  requestUnstake(who: LedgerSigner, amount: bigint): Promise<LedgerResult<{ releaseAt: number }>> {
    return this.call('requestUnstake', keyOf(who), amount);
  }
  withdraw(who: LedgerSigner, amount?: bigint): Promise<LedgerResult<{ withdrawn: bigint }>> {
    return this.call('withdraw', keyOf(who), amount);
  }
  deposit(account: Address, amount: bigint, from?: LedgerSigner): Promise<LedgerResult<{ balance: bigint }>> {
    return this.call('deposit', account, amount, keyOf(from));
  }
  submitEvidence(submitter: LedgerSigner, evidence: Evidence): Promise<LedgerResult<EvidenceOutcome>> {
    return this.call('submitEvidence', keyOf(submitter), evidence);
  }
  addVerdicts(submitter: LedgerSigner, disputeId: Hex, verdicts: SignedVerdict[]): Promise<LedgerResult<EvidenceOutcome>> {
    return this.call('addVerdicts', keyOf(submitter), disputeId, verdicts);
  }
  settleEpoch(gateway: LedgerSigner, batch: EpochBatch): Promise<LedgerResult<EpochOutcome>> {
    return this.call('settleEpoch', keyOf(gateway), batch);
  }
  publishReputation(gateway: LedgerSigner, epoch: number, reports: ReputationReport[]): Promise<LedgerResult<{ updated: number }>> {
    return this.call('publishReputation', keyOf(gateway), epoch, reports);
  }
  identity(address: Address): Promise<IdentityStatus | undefined> {
    return this.call('identity', address);
  }
  account(address: Address): Promise<AccountStatus | undefined> {
    return this.call('account', address);
  }
  epochs(): Promise<{ epoch: number; reputationEpoch: number }> {
    return this.call('epochs');
  }
  status(): Promise<LedgerStatus> {
    return this.call('status');
  }
  verify(): Promise<VerifyReport> {
    return this.call('verify');
  }
  async close(): Promise<void> {
    if (this.dead) return;
    await this.call('close').catch(() => undefined);
    this.dead = new Error('ledger is closed');
    await this.worker.terminate();
  }
}
