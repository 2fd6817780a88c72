// `odsi` command line: each part of the system registers its own subcommands. Only the module
// of the subcommand asked for is loaded (the others pull in libp2p, viem, the engines…), so
// `odsi model info`, `odsi --version` or a refused flag answers without loading the node or the
// gateway; the top-level help, an unknown command or `odsi help` load them all.
import { Command, CommanderError } from 'commander';
import { parseEcdsaChoice, selectEcdsa } from '../identity/ecdsa.js';

type Registers = () => Promise<{ register(program: Command): void }>;

/** subcommand → the modules that register it, in the order the top-level help lists them */
const SUBCOMMANDS: Record<string, Registers[]> = {
  model: [() => import('./model.js')],
  generate: [() => import('./generate.js')],
  node: [() => import('./node.js')],
  gateway: [() => import('./gateway.js')],
  demo: [() => import('./demo.js')],
  keygen: [() => import('./keygen.js')],
  status: [() => import('./status.js')],
  ledger: [() => import('./ledger.js'), () => import('./ledger-deploy.js')],
  conformance: [() => import('./conformance.js')],
};

export async function main(argv: string[]): Promise<void> {
  const program = new Command('odsi')
    .description('open, decentralized, layer-wise LLM inference (ODSI)')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  const args = argv.slice(2);
  const asked = args.find((a) => !a.startsWith('-'));
  const loaders =
    asked !== undefined && Object.hasOwn(SUBCOMMANDS, asked)
      ? SUBCOMMANDS[asked]!
      : asked === undefined && (args.includes('-V') || args.includes('--version'))
        ? [] // the version needs no subcommand
        : Object.values(SUBCOMMANDS).flat();
  for (const m of await Promise.all(loaders.map((load) => load()))) m.register(program);
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
