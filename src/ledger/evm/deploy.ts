// Deploys odsi's contracts: an OdsiToken (ERC-20 whose minter becomes the registry) and the
// OdsiRegistry holding the rules' parameters. The deployer is the registry's operator.

import {
  createPublicClient,
  createWalletClient,
  defineChain,
  http,
  type Chain,
  type Hex,
  type PublicClient,
  type TransactionReceipt,
  type Transport,
  TransactionReceiptNotFoundError,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { bytesToHex } from '@noble/hashes/utils.js';
import { DEFAULT_PARAMS, paramsJson, type LedgerParams } from '../rules.js';
import type { Address, LedgerSigner } from '../ledger.js';
import { loadContracts } from './contracts.js';

export interface Deployment {
  registry: Address;
  token: Address;
  chainId: number;
  /** gas used per deployment transaction */
  gas: { token: bigint; registry: bigint; setMinter: bigint };
}

export interface DeployOptions {
  rpcUrl: string;
  deployer: LedgerSigner;
  params?: LedgerParams;
  /** chain id of the EIP-712 domain the swarm signs records under (default: the chain's own) */
  recordsChainId?: number;
  /** top the deployer up with gas on a dev chain (anvil_setBalance) when it has none */
  fundGasOnDevChain?: boolean;
}

/** The on-chain Params struct of OdsiRegistry from rules.ts params. */
export function onChainParams(p: LedgerParams) {
  return {
    minStake: p.minStake,
    accuserBond: p.accuserBond,
    unbondingSec: BigInt(p.unbondingSec),
    disputeWindowSec: BigInt(p.disputeWindowSec),
    equivocationSlashPpm: p.equivocationSlashPpm,
    custodySlashPpm: p.custodySlashPpm,
    computationSlashPpm: p.computationSlashPpm,
    reporterSharePpm: p.reporterSharePpm,
    feePpm: p.feePpm,
    verdictQuorum: p.verdictQuorum,
  };
}

export function chainFor(id: number, rpcUrl: string): Chain {
  return defineChain({
    id,
    name: `odsi-${id}`,
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [rpcUrl] } },
  });
}

/**
 * The receipt of `hash`, polled every `intervalMs` until mined (bounded by `timeoutMs`).
 * Not viem's waitForTransactionReceipt: that waits for a *new block* after a miss, and an
 * automining dev chain makes no further block once the transaction's own is out.
 */
export async function minedReceipt(
  client: PublicClient<Transport, Chain | undefined>,
  hash: Hex,
  o: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<TransactionReceipt> {
  const deadline = Date.now() + (o.timeoutMs ?? 60_000);
  for (;;) {
    try {
      return await client.getTransactionReceipt({ hash });
    } catch (e) {
      if (!(e instanceof TransactionReceiptNotFoundError)) throw e;
    }
    if (Date.now() > deadline) throw new Error(`transaction ${hash} was not mined within ${o.timeoutMs ?? 60_000} ms`);
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 15));
  }
}

export const secretHex = (s: Uint8Array): Hex => `0x${bytesToHex(s)}`;

/** Whether the node at the other end is a dev chain that accepts anvil_setBalance. */
export async function isDevChain(client: PublicClient<Transport, Chain | undefined>): Promise<boolean> {
  try {
    const v = await client.request({ method: 'web3_clientVersion' as never });
    return /anvil|hardhat/i.test(String(v));
  } catch {
    return false;
  }
}

/** 100 ETH of gas for `address` on a dev chain when it holds less than 1 ETH. */
export async function topUpGas(client: PublicClient<Transport, Chain | undefined>, address: Address): Promise<void> {
  const bal = await client.getBalance({ address });
  if (bal >= 10n ** 18n) return;
  await client.request({ method: 'anvil_setBalance' as never, params: [address, `0x${(100n * 10n ** 18n).toString(16)}`] as never });
}

export async function deployOdsi(o: DeployOptions): Promise<Deployment> {
  const params = o.params ?? DEFAULT_PARAMS;
  const { contracts } = loadContracts();
  const transport = http(o.rpcUrl, { retryCount: 0 });
  const probe = createPublicClient({ transport });
  const chainId = await probe.getChainId();
  const chain = chainFor(chainId, o.rpcUrl);
  const pub = createPublicClient({ chain, transport, pollingInterval: 50 });
  const account = privateKeyToAccount(secretHex(o.deployer.secret));
  if (o.fundGasOnDevChain && (await isDevChain(pub))) await topUpGas(pub, account.address);
  const wallet = createWalletClient({ chain, transport, account });

  const tokenTx = await wallet.deployContract({ abi: contracts.OdsiToken.abi, bytecode: contracts.OdsiToken.bytecode, args: [] });
  const tokenRcpt = await minedReceipt(pub, tokenTx);
  if (tokenRcpt.status !== 'success' || !tokenRcpt.contractAddress) throw new Error('OdsiToken deployment failed');
  const token = tokenRcpt.contractAddress;

  const regTx = await wallet.deployContract({
    abi: contracts.OdsiRegistry.abi,
    bytecode: contracts.OdsiRegistry.bytecode,
    args: [token, BigInt(o.recordsChainId ?? chainId), onChainParams(params), JSON.stringify(paramsJson(params))],
  });
  const regRcpt = await minedReceipt(pub, regTx);
  if (regRcpt.status !== 'success' || !regRcpt.contractAddress) throw new Error('OdsiRegistry deployment failed');
  const registry = regRcpt.contractAddress;

  const minterTx = await wallet.writeContract({ address: token, abi: contracts.OdsiToken.abi, functionName: 'setMinter', args: [registry] });
  const minterRcpt = await minedReceipt(pub, minterTx);
  if (minterRcpt.status !== 'success') throw new Error('OdsiToken.setMinter failed');
  return {
    registry,
    token,
    chainId,
    gas: { token: tokenRcpt.gasUsed, registry: regRcpt.gasUsed, setMinter: minterRcpt.gasUsed },
  };
}
