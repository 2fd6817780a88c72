// `odsi keygen --out <file>`: a new secp256k1 identity in an encrypted v3 keystore.
// The passphrase comes from ODSI_PASSPHRASE, or from the terminal without echo.
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { generateIdentity } from '../identity/identity.js';
import { STANDARD_SCRYPT, saveIdentity } from '../identity/keystore.js';
import { parseInteger } from './numbers.js';

/** Reads one line from the terminal without echoing it. */
export function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) return Promise.reject(new Error('no passphrase: set ODSI_PASSPHRASE or run in a terminal'));
  return new Promise((resolveP, reject) => {
    let value = '';
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const done = (err?: Error): void => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.removeListener('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolveP(value);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new Error('aborted'));
        if (ch === '\u0004') return done(value ? undefined : new Error('aborted'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/** ODSI_PASSPHRASE if set (may be empty only if explicitly allowed), else an interactive prompt. */
export async function readPassphrase(opts: { confirm: boolean }): Promise<string> {
  const env = process.env.ODSI_PASSPHRASE;
  if (env !== undefined) return env;
  const first = await promptHidden('passphrase: ');
  if (opts.confirm) {
    const again = await promptHidden('repeat passphrase: ');
    if (again !== first) throw new Error('passphrases differ');
  }
  return first;
}

export function register(program: Command): void {
  program
    .command('keygen')
    .description('create a secp256k1 identity in an encrypted keystore (Ethereum Web3 Secret Storage v3)')
    .requiredOption('-o, --out <file>', 'keystore file to write (mode 0600)')
    .option('-f, --force', 'replace an existing file')
    .option('--scrypt-n <n>', 'scrypt cost parameter (power of two)', String(STANDARD_SCRYPT.n))
    .option('--json', 'print address and peer id as JSON')
    .addHelpText('after', '\nThe passphrase is read from ODSI_PASSPHRASE, else prompted for (not echoed).')
    .action(async (o: { out: string; force?: boolean; scryptN: string; json?: boolean }) => {
      const n = parseInteger('--scrypt-n', o.scryptN, { min: 2, max: 2 ** 30 });
      if ((n & (n - 1)) !== 0) throw new Error(`--scrypt-n must be a power of two, got ${o.scryptN}`);
      const passphrase = await readPassphrase({ confirm: true });
      if (passphrase.length === 0) process.stderr.write('warning: empty passphrase; the key is only obfuscated\n');
      const id = generateIdentity();
      const file = resolve(o.out);
      await saveIdentity(file, id, passphrase, { overwrite: !!o.force, scrypt: { ...STANDARD_SCRYPT, n } });
      const info = { address: id.address, peerId: id.peerId.toString(), keystore: file };
      if (o.json) process.stdout.write(JSON.stringify(info) + '\n');
      else {
        process.stdout.write(`address: ${info.address}\npeer id: ${info.peerId}\nkeystore: ${info.keystore}\n`);
        process.stderr.write(`use it with: odsi node --identity ${o.out} … (ODSI_PASSPHRASE unlocks it)\n`);
      }
    });
}
