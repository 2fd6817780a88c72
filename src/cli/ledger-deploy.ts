// `odsi ledger deploy --rpc URL --key FILE [--json]`: deploys odsi's contracts (an ODSI test
// token whose minter is the registry, and the OdsiRegistry with the default rules) with FILE's
// key as deployer and operator. The records' EIP-712 chain id is the deployment's
// (ODSI_CHAIN_ID, default 31337), so evidence the swarm signs verifies on the contract. Prints
// the registry address and the `--ledger evm:…` spec for gateways and nodes. On a dev chain
// (anvil, hardhat) the deployer gets gas automatically; elsewhere it must hold some.

import type { Command } from 'commander';
import { deploymentDomain } from '../accountability/records/wire.js';
import { deployOdsi } from '../ledger/evm/deploy.js';
import { evmSpec } from '../ledger/evm/local-chain.js';
import { readIdentityFile } from './ledger.js';

export function register(program: Command): void {
  const ledger = program.commands.find((c) => c.name() === 'ledger') ?? program.command('ledger');
  ledger
    .command('deploy')
    .description('deploy the OdsiRegistry contract (and its test token) to an EVM chain; prints its address')
    .requiredOption('--rpc <url>', 'JSON-RPC endpoint of the chain, e.g. http://127.0.0.1:8545')
    .requiredOption('--key <file>', 'deployer and operator key: raw hex secret or v3 keystore (ODSI_PASSPHRASE)')
    .option('--json', 'print {"address", "token", "chainId", "ledger", "gas"} as JSON')
    .action(async (o: { rpc: string; key: string; json?: boolean }) => {
      if (!/^https?:\/\/.+/.test(o.rpc)) throw new Error('--rpc must be an http(s) URL');
      const deployer = await readIdentityFile(o.key);
      const d = await deployOdsi({
        rpcUrl: o.rpc,
        deployer,
        recordsChainId: Number(deploymentDomain(process.env).chainId),
        fundGasOnDevChain: true,
      });
      const spec = evmSpec(o.rpc, d.registry);
      const gas = { token: d.gas.token.toString(), registry: d.gas.registry.toString(), setMinter: d.gas.setMinter.toString() };
      if (o.json) process.stdout.write(JSON.stringify({ address: d.registry, token: d.token, chainId: d.chainId, operator: deployer.address, ledger: spec, gas }) + '\n');
      else process.stdout.write(`OdsiRegistry ${d.registry} (token ${d.token}) on chain ${d.chainId}, operator ${deployer.address}\nuse: --ledger ${spec}\n`);
    });
}
