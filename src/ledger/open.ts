// `--ledger SPEC` → a Ledger. One place that knows every backend:
//   sqlite:PATH            the embedded ledger (src/ledger/sqlite), created on first use
//   evm:RPC_URL@ADDRESS    the contract backend (src/ledger/evm), an OdsiRegistry deployed by `odsi ledger deploy`

import type { Clock, Ledger, LedgerSigner } from './ledger.js';
import type { LedgerParams } from './rules.js';
import { SqliteLedger } from './sqlite/sqlite-ledger.js';
import { WorkerLedger } from './sqlite/worker-ledger.js';

export interface OpenLedgerOptions {
  clock?: Clock;
  /** only when a new ledger is created */
  params?: Partial<LedgerParams>;
  chainId?: number;
  /** the operator key: signs a new ledger's genesis / deploys; mints and authorises gateways */
  operator?: LedgerSigner;
  /** open a ledger that fails replay-and-verify anyway (so `odsi ledger verify` can report it) */
  allowInconsistent?: boolean;
  /**
   * SQLite only: run the ledger in a worker thread (WorkerLedger), so its synchronous commits and
   * reads never block this process's event loop — what gateways and nodes use (no `clock` then)
   */
  worker?: boolean;
}

export type LedgerSpec = { backend: 'sqlite'; path: string } | { backend: 'evm'; rpcUrl: string; address: `0x${string}` };

/** Parses `sqlite:PATH` or `evm:RPC_URL@ADDRESS`; throws a clear error for anything else. */
export function parseLedgerSpec(spec: string): LedgerSpec {
  if (typeof spec !== 'string') throw new Error('--ledger needs sqlite:PATH or evm:RPC_URL@ADDRESS');
  if (spec.startsWith('sqlite:')) {
    const path = spec.slice('sqlite:'.length);
    if (!path) throw new Error('--ledger sqlite:PATH needs a path');
    return { backend: 'sqlite', path };
  }
  if (spec.startsWith('evm:')) {
    const rest = spec.slice('evm:'.length);
    const at = rest.lastIndexOf('@');
    const rpcUrl = rest.slice(0, at);
    const address = rest.slice(at + 1);
    if (at < 0 || !/^https?:\/\//.test(rpcUrl) || !/^0x[0-9a-fA-F]{40}$/.test(address))
      throw new Error(`--ledger evm:RPC_URL@ADDRESS expected (e.g. evm:http://127.0.0.1:8545@0x5FbD…), got ${spec}`);
    return { backend: 'evm', rpcUrl, address: address as `0x${string}` };
  }
  throw new Error(`unknown ledger ${JSON.stringify(spec)}: use sqlite:PATH or evm:RPC_URL@ADDRESS`);
}

export function openLedger(spec: string, o: OpenLedgerOptions = {}): Promise<Ledger> {
  const s = parseLedgerSpec(spec);
  switch (s.backend) {
    case 'sqlite':
      if (o.worker) {
        if (o.clock) throw new Error('a ledger in a worker thread runs on the system clock');
        return WorkerLedger.open(s.path, { params: o.params, chainId: o.chainId, operator: o.operator, allowInconsistent: o.allowInconsistent });
      }
      return Promise.resolve(SqliteLedger.open(s.path, o));
    case 'evm':
      return openEvm(s.rpcUrl, s.address, o);
  }
}

/** The contract backend, loaded on demand (viem stays out of processes that use SQLite). */
async function openEvm(rpcUrl: string, registry: `0x${string}`, o: OpenLedgerOptions): Promise<Ledger> {
  const { openEvmLedger } = await import('./evm/evm-ledger.js');
  const ledger = await openEvmLedger({ rpcUrl, registry });
  // the contract verifies evidence under its records' chain id: a swarm signing under another
  // one would see all its evidence refused as bad signatures, so refuse to start instead
  if (o.chainId !== undefined && Number(ledger.domain.chainId) !== o.chainId) {
    await ledger.close();
    throw new Error(
      `ledger ${registry} verifies records signed under chain id ${ledger.domain.chainId}, this process signs under ${o.chainId} (ODSI_CHAIN_ID)`,
    );
  }
  if (o.operator) ledger.operatorSigner = o.operator;
  return ledger;
}
