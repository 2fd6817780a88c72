// `odsi` command line: each part of the system registers its own subcommands.
import { Command, CommanderError } from 'commander';
import { register as registerModel } from './model.js';
import { register as registerGenerate } from './generate.js';
import { register as registerNode } from './node.js';
import { register as registerGateway } from './gateway.js';
import { register as registerDemo } from './demo.js';
import { register as registerKeygen } from './keygen.js';
import { register as registerLedger } from './ledger.js';
import { register as registerConformance } from './conformance.js';
import { register as registerStatus } from './status.js';
import { register as registerLedgerDeploy } from './ledger-deploy.js';
import { parseEcdsaChoice, selectEcdsa } from '../identity/ecdsa.js';

export async function main(argv: string[]): Promise<void> {
  const program = new Command('odsi')
    .description('open, decentralized, layer-wise LLM inference (ODSI)')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  for (const reg of [registerModel, registerGenerate, registerNode, registerGateway, registerDemo, registerKeygen, registerStatus, registerLedger, registerLedgerDeploy, registerConformance])
    reg(program);
  try {
    selectEcdsa(parseEcdsaChoice(process.env.ODSI_ECDSA)); // the signature backend, for every subcommand
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode);
    // Clear one-line errors for users; the stack only when asked for.
    console.error(`odsi: ${(e as Error).message}`);
    if (process.env.ODSI_DEBUG) console.error(e);
    process.exit(1);
  }
}
