// The Solidity contracts under contracts/ compiled with npm `solc` (the bundled 0.8.37, no
// download): `npm run build` writes dist/contracts/odsi-contracts.json (scripts/
// compile-contracts.js), and loadContracts() reads it, or compiles in-process when the file is
// missing or older than the sources (a checkout built with plain `tsc`). The sources' sha256
// keys the artifact, so a stale ABI is never used against new sources.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Abi, Hex } from 'viem';

export interface CompiledContract {
  abi: Abi;
  bytecode: Hex;
}

export interface ContractArtifacts {
  solcVersion: string;
  sourceHash: string;
  contracts: { OdsiToken: CompiledContract; OdsiRegistry: CompiledContract };
}

/** the repository root, from dist/src/ledger/evm/ (compiled) */
const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const CONTRACTS_DIR = join(ROOT, 'contracts');
export const ARTIFACTS_FILE = join(ROOT, 'dist', 'contracts', 'odsi-contracts.json');

/** EVM version targeted: cancun runs on anvil and on today's L2s (no newer opcodes are needed) */
const EVM_VERSION = 'cancun';

function readSources(): Record<string, { content: string }> {
  const out: Record<string, { content: string }> = {};
  for (const f of readdirSync(CONTRACTS_DIR).filter((n) => n.endsWith('.sol')).sort())
    out[f] = { content: readFileSync(join(CONTRACTS_DIR, f), 'utf8') };
  return out;
}

function hashSources(sources: Record<string, { content: string }>): string {
  const h = createHash('sha256');
  h.update(EVM_VERSION);
  for (const [name, { content }] of Object.entries(sources)) h.update(name).update('\0').update(content).update('\0');
  return h.digest('hex');
}

interface SolcOutput {
  errors?: { severity: string; formattedMessage: string }[];
  contracts: Record<string, Record<string, { abi: Abi; evm: { bytecode: { object: string } } }>>;
}

/** Compiles contracts/*.sol with the bundled solc (optimizer on, 200 runs). Throws on any error. */
export function compileContracts(): ContractArtifacts {
  const require = createRequire(import.meta.url);
  const solc = require('solc') as { compile(input: string): string; version(): string };
  const sources = readSources();
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: EVM_VERSION,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
  const out = JSON.parse(solc.compile(JSON.stringify(input))) as SolcOutput;
  const errors = (out.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length) throw new Error(`solc: ${errors.map((e) => e.formattedMessage).join('\n')}`);
  const pick = (file: string, name: string): CompiledContract => {
    const c = out.contracts[file]?.[name];
    if (!c) throw new Error(`solc produced no ${name} in ${file}`);
    return { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}` };
  };
  return {
    solcVersion: solc.version(),
    sourceHash: hashSources(sources),
    contracts: { OdsiToken: pick('OdsiToken.sol', 'OdsiToken'), OdsiRegistry: pick('OdsiRegistry.sol', 'OdsiRegistry') },
  };
}

/** Compiles and writes the artifact file unless it is current; returns whether it compiled. */
export function buildArtifacts(file = ARTIFACTS_FILE): boolean {
  const current = readArtifacts(file);
  if (current && current.sourceHash === hashSources(readSources())) return false;
  const a = compileContracts();
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(a));
  return true;
}

function readArtifacts(file: string): ContractArtifacts | undefined {
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as ContractArtifacts;
  } catch {
    return undefined;
  }
}

let loaded: ContractArtifacts | undefined;
/** The current artifacts: from the build's file, or compiled now (and written) when it is stale. */
export function loadContracts(): ContractArtifacts {
  if (loaded) return loaded;
  const want = hashSources(readSources());
  let a = readArtifacts(ARTIFACTS_FILE);
  if (!a || a.sourceHash !== want) {
    a = compileContracts();
    try {
      mkdirSync(dirname(ARTIFACTS_FILE), { recursive: true });
      writeFileSync(ARTIFACTS_FILE, JSON.stringify(a));
    } catch {
      /* a read-only install still works, it just compiles each time */
    }
  }
  return (loaded = a);
}
