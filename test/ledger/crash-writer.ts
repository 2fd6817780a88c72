// Child process of crash.test.ts: opens the ledger file (replay-and-verify), then writes a
// burst of stake, unstake and payment events as fast as it can, printing one line per
// acknowledged write ("ack SEQ KIND"), until it is SIGKILLed (or `max` writes are done).
import { hexToBytes, identityFromSecret } from '../../src/identity/identity.js';
import { SqliteLedger } from '../../src/ledger/sqlite/sqlite-ledger.js';
import { UNIT } from '../../src/ledger/rules.js';
import type { LedgerResult } from '../../src/ledger/ledger.js';

const [path, operatorHex, nodeHex, account, maxText] = process.argv.slice(2) as [string, string, string, `0x${string}`, string];
const operator = identityFromSecret(hexToBytes(operatorHex));
const node = identityFromSecret(hexToBytes(nodeHex));
const L = SqliteLedger.open(path, { operator });
const out = (s: string): boolean => process.stdout.write(`${s}\n`);
const ack = (kind: string, r: LedgerResult): void => {
  if (!r.ok) throw new Error(`${kind} rejected: ${r.reason}`);
  out(`ack ${r.event.seq} ${kind}`);
};
if (!(await L.identity(node.address))) {
  ack('register', await L.register(node));
  ack('mint', await L.mint(operator, node.address, 2000n * UNIT));
  ack('stake', await L.stake(node, 1000n * UNIT));
}
out('ready');
const max = Number(maxText);
for (let i = 0; i < max; i++) {
  if (i % 3 === 0) ack('deposit', await L.deposit(account, 1n));
  else if (i % 3 === 1) ack('stake', await L.stake(node, 1n));
  else ack('unstake', await L.requestUnstake(node, 1n));
}
await L.close();
out('done');
