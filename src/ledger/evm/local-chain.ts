// A whole local EVM ledger in one call (anvil + deployment
// + an open EvmLedger) for `odsi demo --ledger evm` and tests.

import type { Address, LedgerSigner } from '../ledger.js';
import type { LedgerParams } from '../rules.js';
import { startAnvil, type Anvil } from './anvil.js';
import { deployOdsi, type Deployment } from './deploy.js';
import { openEvmLedger, type EvmLedger } from './evm-ledger.js';

export const evmSpec = (rpcUrl: string, registry: Address): string => `evm:${rpcUrl}@${registry}`;

export interface LocalEvmLedger {
  /** `evm:http://127.0.0.1:PORT@0x…`: what gateways and nodes are given as --ledger */
  spec: string;
  anvil: Anvil;
  deployment: Deployment;
  /** open, with the operator's key (deposits without a payer mint through it) */
  ledger: EvmLedger;
  /** closes the ledger and stops the chain (its state is gone afterwards) */
  close(): Promise<void>;
}

/**
 * Starts anvil on a free loopback port, deploys the contracts with `operator` as deployer
 * (gas from anvil_setBalance) and opens the ledger. On any failure the chain is stopped.
 */
export async function startLocalEvmLedger(o: { operator: LedgerSigner; params?: LedgerParams; chainId?: number }): Promise<LocalEvmLedger> {
  const anvil = await startAnvil({ chainId: o.chainId });
  try {
    const deployment = await deployOdsi({ rpcUrl: anvil.rpcUrl, deployer: o.operator, params: o.params, fundGasOnDevChain: true });
    const ledger = await openEvmLedger({ rpcUrl: anvil.rpcUrl, registry: deployment.registry });
    ledger.operatorSigner = o.operator;
    return {
      spec: evmSpec(anvil.rpcUrl, deployment.registry),
      anvil,
      deployment,
      ledger,
      async close() {
        await ledger.close();
        await anvil.close();
      },
    };
  } catch (e) {
    await anvil.close();
    throw e;
  }
}
