// The worker thread behind WorkerLedger (worker-ledger.ts): it owns one SqliteLedger and runs
// every call on it, so the ledger's synchronous SQLite work (FULL fsync commits, catching up
// with other writers, signature checks, building status) never blocks the caller's event loop.
import { parentPort, workerData } from 'node:worker_threads';
import { LedgerCorruptError, SqliteLedger, type SqliteLedgerOptions } from './sqlite-ledger.js';

export interface LedgerWorkerData {
  path: string;
  options: Omit<SqliteLedgerOptions, 'clock'>;
}
export type LedgerCall = { id: number; method: string; args: unknown[] };
export type LedgerReply =
  | { id: number; value: unknown }
  | { id: number; error: { name: string; message: string; problems?: string[] } }
  | { ready: { params: SqliteLedger['params']; operator: SqliteLedger['operator']; operatorSecret?: Uint8Array } }
  | { failed: { name: string; message: string; problems?: string[] } };

/** the calls a WorkerLedger may make (the Ledger interface and the operator key) */
const METHODS = new Set([
  'register',
  'authorize',
  'mint',
  'stake',
  'requestUnstake',
  'withdraw',
  'deposit',
  'submitEvidence',
  'addVerdicts',
  'settleEpoch',
  'publishReputation',
  'identity',
  'account',
  'epochs',
  'status',
  'verify',
  'close',
]);

const errorOf = (e: unknown) => ({
  name: (e as Error)?.name ?? 'Error',
  message: (e as Error)?.message ?? String(e),
  problems: e instanceof LedgerCorruptError ? e.problems : undefined,
});

const port = parentPort!;
const { path, options } = workerData as LedgerWorkerData;
let ledger: SqliteLedger;
try {
  ledger = SqliteLedger.open(path, options);
  port.postMessage({
    ready: { params: ledger.params, operator: ledger.operator, operatorSecret: ledger.operatorKey()?.secret },
  } satisfies LedgerReply);
} catch (e) {
  port.postMessage({ failed: errorOf(e) } satisfies LedgerReply);
  process.exit(0);
}
// one call at a time, in order (the ledger's writes are serial anyway)
let lane: Promise<unknown> = Promise.resolve();
port.on('message', (m: LedgerCall) => {
  lane = lane.then(async () => {
    try {
      if (!METHODS.has(m.method)) throw new Error(`unknown ledger call ${m.method}`);
      const fn = (ledger as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[m.method]!;
      port.postMessage({ id: m.id, value: await fn.apply(ledger, m.args) } satisfies LedgerReply);
    } catch (e) {
      port.postMessage({ id: m.id, error: errorOf(e) } satisfies LedgerReply);
    }
  });
});
