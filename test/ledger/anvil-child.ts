// Child process for anvil.test.ts: starts anvil, prints {rpcUrl, pid}, then idles until killed.
import { startAnvil } from '../../src/ledger/evm/anvil.js';

const a = await startAnvil();
process.stdout.write(JSON.stringify({ rpcUrl: a.rpcUrl, pid: a.pid }) + '\n');
setInterval(() => undefined, 60_000);
