// `odsi demo --ledger …`: the demo's ledger and the identities on it. The demo is the operator
// of its local swarm, so it holds every key: it makes the node keys (files the nodes start
// with), registers and stakes each node with the minimum stake, registers, authorises and
// stakes its gateway (a staked gateway's referee verdicts count as the verdict quorum), and
// funds one client account from the operator's faucet. The ledger stays on disk after the
// demo (sqlite: a temp dir unless a path is given) so `odsi ledger status` can read it; with
// `evm` the demo starts a local anvil chain and deploys the contracts (startLocalEvmLedger),
// and the chain stops with the demo (its final status is in the demo's --json output).

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bytesToHex, generateIdentity, type Identity } from '../identity/identity.js';
import type { Address, Ledger, LedgerResult } from '../ledger/ledger.js';
import { openLedger } from '../ledger/open.js';
import { UNIT } from '../ledger/rules.js';

export interface DemoLedger {
  ledger: Ledger;
  /** the spec nodes and `odsi ledger status` open it with */
  spec: string;
  /** key file of node i */
  nodeKeyFile(i: number): string;
  gateway: Identity;
  /** the client account the demo's requests are charged to */
  client: Address;
  /** closes the ledger (and stops the demo's own chain) */
  close(): Promise<void>;
}

/** the client's starting balance (ODSI) */
const CLIENT_FUNDS = 1000n * UNIT;

function must(what: string, r: LedgerResult): void {
  if (!r.ok) throw new Error(`demo ledger: ${what} refused: ${r.code}: ${r.reason}`);
}

/** Opens `spec` ('sqlite' = a new file in a temp dir, 'sqlite:PATH') and sets up `nodes` node identities on it. */
export async function openDemoLedger(spec: string, nodes: number): Promise<DemoLedger> {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-demo-ledger-'));
  if (spec.startsWith('evm:'))
    throw new Error('--ledger evm: the demo starts its own chain and deploys to it; give "evm" alone (or use odsi gateway/node with evm:RPC@ADDRESS)');
  if (spec !== 'evm' && spec !== 'sqlite' && !spec.startsWith('sqlite:')) throw new Error(`--ledger: sqlite, sqlite:PATH or evm, got "${spec}"`);
  const operator = generateIdentity();
  let full: string;
  let ledger: Ledger;
  let close: () => Promise<void>;
  if (spec === 'evm') {
    const { startLocalEvmLedger } = await import('../ledger/evm/local-chain.js'); // viem only when asked for
    const chain = await startLocalEvmLedger({ operator });
    [full, ledger, close] = [chain.spec, chain.ledger, () => chain.close()];
  } else {
    full = spec === 'sqlite' ? `sqlite:${join(dir, 'ledger.db')}` : spec;
    const l = await openLedger(full, { operator, worker: true }); // SQLite work off the gateway's event loop
    [ledger, close] = [l, () => l.close()];
  }
  try {
    const p = ledger.params;
    const ids = Array.from({ length: nodes }, () => generateIdentity());
    ids.forEach((id, i) => writeFileSync(join(dir, `node-${i}.key`), bytesToHex(id.secret) + '\n', { mode: 0o600 }));
    for (const id of ids) {
      must('register node', await ledger.register(id, 'node'));
      must('mint', await ledger.mint(operator, id.address, p.minStake + 10n * p.accuserBond));
      must('stake', await ledger.stake(id, p.minStake));
    }
    const gateway = generateIdentity();
    must('register gateway', await ledger.register(gateway, 'gateway'));
    must('authorize gateway', await ledger.authorize(operator, gateway.address));
    must('mint', await ledger.mint(operator, gateway.address, p.minStake + 100n * p.accuserBond));
    must('stake', await ledger.stake(gateway, p.minStake));
    const client = generateIdentity().address;
    must('deposit', await ledger.deposit(client, CLIENT_FUNDS));
    return { ledger, spec: full, nodeKeyFile: (i) => join(dir, `node-${i}.key`), gateway, client, close };
  } catch (e) {
    await close();
    throw e;
  }
}
