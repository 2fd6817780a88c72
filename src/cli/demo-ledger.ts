// `odsi demo --ledger …`: the demo's ledger and the identities on it. The demo is the operator
// of its local swarm, so it holds every key: it makes the node keys (files the nodes start
// with), registers and stakes each node with the minimum stake, registers, authorises and
// stakes its gateway (a staked gateway's referee verdicts count as the verdict quorum), and
// funds one client account from the operator's faucet. The ledger stays on disk after the
// demo (sqlite: a temp dir unless a path is given) so `odsi ledger status` can read it.

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
}

/** the client's starting balance (ODSI) */
const CLIENT_FUNDS = 1000n * UNIT;

function must(what: string, r: LedgerResult): void {
  if (!r.ok) throw new Error(`demo ledger: ${what} refused: ${r.code}: ${r.reason}`);
}

/** Opens `spec` ('sqlite' = a new file in a temp dir, 'sqlite:PATH') and sets up `nodes` node identities on it. */
export async function openDemoLedger(spec: string, nodes: number): Promise<DemoLedger> {
  const dir = mkdtempSync(join(tmpdir(), 'odsi-demo-ledger-'));
  if (spec === 'evm' || spec.startsWith('evm:'))
    throw new Error('--ledger evm: the EVM backend is not part of this build yet; use --ledger sqlite');
  const full = spec === 'sqlite' ? `sqlite:${join(dir, 'ledger.db')}` : spec;
  const operator = generateIdentity();
  const ledger = await openLedger(full, { operator });
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
    return { ledger, spec: full, nodeKeyFile: (i) => join(dir, `node-${i}.key`), gateway, client };
  } catch (e) {
    await ledger.close();
    throw e;
  }
}
