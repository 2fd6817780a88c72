// The ledger from the command line:
//   odsi ledger status --ledger SPEC [--json]     identities, stake, balances, rewards, slashes, reputation
//   odsi ledger verify --ledger SPEC [--json]     re-verify the whole event log; exit 1 on any inconsistency
//   odsi ledger mint   --ledger SPEC --to ADDR AMOUNT     operator faucet (the embedded ledger's own key)
//   odsi stake    --ledger SPEC --identity FILE AMOUNT   (registers the identity first if needed)
//   odsi unstake  --ledger SPEC --identity FILE AMOUNT   starts unbonding
//   odsi withdraw --ledger SPEC --identity FILE [AMOUNT] matured unbonding → wallet (all when omitted)
//   odsi deposit  --ledger SPEC --account ADDR AMOUNT [--identity FILE | --operator FILE]   client balance (faucet, or from FILE's wallet)
// AMOUNT is in ODSI (up to 18 decimals: "1000", "0.5"); JSON output gives smallest units as
// decimal strings. Identity files are what `odsi node --identity` takes: a raw hex secret or a
// v3 keystore (ODSI_PASSPHRASE unlocks it).

import type { Command } from 'commander';
import { existsSync, readFileSync } from 'node:fs';
import { hexToBytes, identityFromSecret, type Identity } from '../identity/identity.js';
import { loadIdentity } from '../identity/keystore.js';
import { deploymentDomain } from '../accountability/records/wire.js';
import type { Address, Ledger, LedgerResult, LedgerStatus } from '../ledger/ledger.js';
import { openLedger } from '../ledger/open.js';
import { formatAmount, parseAmount } from '../ledger/rules.js';
import { readPassphrase } from './keygen.js';

const json = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));

/** A raw hex secret file or a v3 keystore (passphrase from ODSI_PASSPHRASE or the terminal). */
export async function readIdentityFile(file: string): Promise<Identity> {
  if (!existsSync(file)) throw new Error(`identity file ${file} does not exist (create one with odsi keygen)`);
  const text = readFileSync(file, 'utf8').trim();
  if (/^(0x)?[0-9a-fA-F]{64}$/.test(text)) return identityFromSecret(hexToBytes(text.replace(/^0x/, '')));
  return loadIdentity(file, await readPassphrase({ confirm: false }));
}

/** Opens the ledger named by --ledger, with the chain id receipts are signed under (ODSI_CHAIN_ID). */
async function open(spec: string, o: { allowInconsistent?: boolean; operator?: Identity } = {}): Promise<Ledger> {
  return openLedger(spec, { chainId: Number(deploymentDomain(process.env).chainId), ...o });
}

async function withLedger<T>(spec: string, f: (l: Ledger) => Promise<T>, o: { allowInconsistent?: boolean; operator?: Identity } = {}): Promise<T> {
  const l = await open(spec, o);
  try {
    return await f(l);
  } finally {
    await l.close();
  }
}

function amountArg(text: string): bigint {
  const a = parseAmount(text);
  if (a <= 0n) throw new Error('AMOUNT must be positive');
  return a;
}

function addressArg(text: string, flag: string): Address {
  if (!/^0x[0-9a-fA-F]{40}$/.test(text)) throw new Error(`${flag} must be a 0x-prefixed 20-byte address`);
  return text as Address;
}

/** Prints an accepted write (JSON or a line of text) or fails with the rejection's code and reason. */
function report(what: string, r: LedgerResult, asJson: boolean | undefined, text: () => string): void {
  if (!r.ok) throw new Error(`${what} rejected (${r.code}): ${r.reason}`);
  process.stdout.write(asJson ? json(r) + '\n' : text() + '\n');
}

function printStatus(s: LedgerStatus): void {
  const lines = [
    `ledger ${s.backend} ${s.location}: ${s.events} events, epoch ${s.epoch}, head ${s.head}`,
    `totals: minted ${formatAmount(BigInt(s.totals.minted))}, staked ${formatAmount(BigInt(s.totals.stake))}, unbonding ${formatAmount(BigInt(s.totals.unbonding))}, client balances ${formatAmount(BigInt(s.totals.accounts))}, slashed ${formatAmount(BigInt(s.totals.slashed))}, rewards ${formatAmount(BigInt(s.totals.rewards))}, fees ${formatAmount(BigInt(s.totals.fees))} ODSI`,
    `identities (${s.identities.length}):`,
    ...s.identities.map(
      (i) =>
        `  ${i.address} ${i.role.padEnd(7)} stake ${formatAmount(BigInt(i.stake))} unbonding ${formatAmount(BigInt(i.unbonding))} slashed ${formatAmount(BigInt(i.slashed))} earned ${formatAmount(BigInt(i.earned))} reputation ${i.reputation.toFixed(3)}${i.eligible ? '' : ' (not eligible)'}`,
    ),
    `accounts (${s.accounts.length}):`,
    ...s.accounts.map((a) => `  ${a.address} balance ${formatAmount(BigInt(a.balance))} charged ${formatAmount(BigInt(a.charged))}`),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

export function register(program: Command): void {
  const ledger = program.command('ledger').description('the control-plane ledger: stake, slashing, payments, reputation');
  ledger
    .command('status')
    .description('identities, stake, balances, rewards, slashes and reputation')
    .requiredOption('--ledger <spec>', 'sqlite:PATH or evm:RPC_URL@ADDRESS')
    .option('--json', 'print the status as JSON (amounts as decimal strings of the smallest unit)')
    .action(async (o: { ledger: string; json?: boolean }) => {
      const s = await withLedger(o.ledger, (l) => l.status());
      if (o.json) process.stdout.write(json(s) + '\n');
      else printStatus(s);
    });
  ledger
    .command('verify')
    .description('re-verify the whole event chain (signatures, hashes, state = replay); exits 1 on any inconsistency')
    .requiredOption('--ledger <spec>', 'sqlite:PATH or evm:RPC_URL@ADDRESS')
    .option('--json', 'print the report as JSON')
    .action(async (o: { ledger: string; json?: boolean }) => {
      const v = await withLedger(o.ledger, (l) => l.verify(), { allowInconsistent: true });
      if (o.json) process.stdout.write(json(v) + '\n');
      else
        process.stdout.write(
          v.ok
            ? `ok: ${v.events} events verified in ${v.ms} ms, head ${v.head}\n`
            : `INCONSISTENT:\n${v.problems.map((p) => `  ${p}`).join('\n')}\n`,
        );
      if (!v.ok) process.exitCode = 1;
    });
  ledger
    .command('mint')
    .description("operator faucet: create tokens in an address's wallet (the embedded ledger's operator key)")
    .requiredOption('--ledger <spec>', 'sqlite:PATH or evm:RPC_URL@ADDRESS')
    .requiredOption('--to <address>', 'recipient')
    .option('--operator <file>', 'operator key (default: the key the embedded ledger keeps)')
    .option('--json', 'print the result as JSON')
    .argument('<amount>', 'ODSI')
    .action(async (amount: string, o: { ledger: string; to: string; operator?: string; json?: boolean }) => {
      const a = amountArg(amount);
      const to = addressArg(o.to, '--to');
      const operator = o.operator ? await readIdentityFile(o.operator) : undefined;
      await withLedger(o.ledger, async (l) => {
        const key = operator ?? (l as Ledger & { operatorKey?: () => Identity | undefined }).operatorKey?.();
        if (!key) throw new Error("this ledger's operator key is not available here: pass --operator FILE");
        report('mint', await l.mint(key, to, a), o.json, () => `minted ${formatAmount(a)} ODSI to ${to}`);
      });
    });

  const withIdentity = (name: string, description: string, optionalAmount: boolean) =>
    program
      .command(name)
      .description(description)
      .requiredOption('--ledger <spec>', 'sqlite:PATH or evm:RPC_URL@ADDRESS')
      .requiredOption('--identity <file>', 'the node key: raw hex secret or v3 keystore (ODSI_PASSPHRASE)')
      .option('--json', 'print the result as JSON')
      .argument(optionalAmount ? '[amount]' : '<amount>', 'ODSI');

  withIdentity('stake', "bond stake from the identity's wallet (registers the identity first if needed)", false).action(
    async (amount: string, o: { ledger: string; identity: string; json?: boolean }) => {
      const a = amountArg(amount);
      const id = await readIdentityFile(o.identity);
      await withLedger(o.ledger, async (l) => {
        if (!(await l.identity(id.address))) {
          const r = await l.register(id, 'node');
          if (!r.ok) throw new Error(`register rejected (${r.code}): ${r.reason}`);
        }
        report('stake', await l.stake(id, a), o.json, () => `${id.address} staked ${formatAmount(a)} ODSI`);
      });
    },
  );
  withIdentity('unstake', 'start unbonding stake (withdrawable after the unbonding period; slashable until then)', false).action(
    async (amount: string, o: { ledger: string; identity: string; json?: boolean }) => {
      const a = amountArg(amount);
      const id = await readIdentityFile(o.identity);
      await withLedger(o.ledger, async (l) => {
        const r = await l.requestUnstake(id, a);
        report(
          'unstake',
          r,
          o.json,
          () => `${id.address} unbonding ${formatAmount(a)} ODSI until ${r.ok ? new Date(r.releaseAt * 1000).toISOString() : ''}`,
        );
      });
    },
  );
  withIdentity('withdraw', 'move stake that finished unbonding to the wallet (all of it when AMOUNT is omitted)', true).action(
    async (amount: string | undefined, o: { ledger: string; identity: string; json?: boolean }) => {
      const a = amount === undefined ? undefined : amountArg(amount);
      const id = await readIdentityFile(o.identity);
      await withLedger(o.ledger, async (l) => {
        const r = await l.withdraw(id, a);
        report('withdraw', r, o.json, () => `${id.address} withdrew ${r.ok ? formatAmount(r.withdrawn) : ''} ODSI`);
      });
    },
  );
  program
    .command('deposit')
    .description("credit a client account's balance (from the operator's faucet, or from --identity's wallet)")
    .requiredOption('--ledger <spec>', 'sqlite:PATH or evm:RPC_URL@ADDRESS')
    .requiredOption('--account <address>', 'the client account (an address)')
    .option('--identity <file>', "pay from this key's wallet instead of the faucet")
    .option('--operator <file>', 'faucet deposit with this operator key (default: the key the embedded ledger keeps; an evm: ledger keeps none)')
    .option('--json', 'print the result as JSON')
    .argument('<amount>', 'ODSI')
    .action(async (amount: string, o: { ledger: string; account: string; identity?: string; operator?: string; json?: boolean }) => {
      const a = amountArg(amount);
      const account = addressArg(o.account, '--account');
      if (o.identity && o.operator) throw new Error('--identity (pay from a wallet) and --operator (faucet) exclude each other');
      const from = o.identity ? await readIdentityFile(o.identity) : undefined;
      const operator = o.operator ? await readIdentityFile(o.operator) : undefined;
      await withLedger(
        o.ledger,
        async (l) => {
          const r = await l.deposit(account, a, from);
          report('deposit', r, o.json, () => `${account} balance ${r.ok ? formatAmount(r.balance) : ''} ODSI`);
        },
        { operator },
      );
    });
}
