// Configuration the CLI reads from the environment once at start-up and hands down as
// options (nothing below src/cli reads process.env):
//   ODSI_ACCOUNTABILITY=0  receipts, custody checks and audits off (nodes and gateway must agree)
//   ODSI_CHAIN_ID          the EIP-712 chain id receipts are signed under (default 31337)
//   ODSI_AUDIT_RATE        the gateway's default audit rate in [0, 1] (a --audit-rate flag wins)

import { Option } from 'commander';
import { accountabilityEnabled, deploymentDomain, type EnvVars } from '../accountability/records/wire.js';
import type { ComputeThread } from '../engine/types.js';
import type { EngineKind } from '../engine/create.js';
import type { GatewayAccountabilityConfig } from '../gateway/gateway.js';
import { parseNumber } from './numbers.js';

/** `--compute-thread <worker|main>` of `odsi node`, `gateway` and `demo`: the thread that runs `what` (StageOptions.computeThread). */
export function computeThreadOption(what: string): Option {
  return new Option(
    '--compute-thread <thread>',
    `the thread that runs ${what}: worker (a thread of its own), or main (the process's main thread, which saves two thread wake-ups a step, less latency per hop, while the process's I/O waits for each step's compute)`,
  )
    .choices(['worker', 'main'] satisfies ComputeThread[])
    .default('worker');
}

/** `--engine <kind>` of `odsi node`, `gateway`, `demo` and `generate`: one of `kinds` (the first is the default), for `what`. */
export function engineOption(what: string, kinds: readonly EngineKind[] = ['reference', 'ort', 'llama']): Option {
  return new Option('--engine <kind>', `execution engine of ${what}`).choices(kinds).default(kinds[0]);
}

/** The gateway's accountability settings from the environment; `auditRate` (a flag) overrides ODSI_AUDIT_RATE, which must be a number in [0, 1] when set. */
export function gatewayAccountabilityConfig(
  flags: { auditRate?: number; reputation?: boolean } = {},
  env: EnvVars = process.env,
): GatewayAccountabilityConfig {
  const fromEnv =
    env.ODSI_AUDIT_RATE === undefined || env.ODSI_AUDIT_RATE === ''
      ? undefined
      : parseNumber('ODSI_AUDIT_RATE', env.ODSI_AUDIT_RATE, { min: 0, max: 1 });
  const auditRate = flags.auditRate ?? fromEnv;
  return {
    enabled: accountabilityEnabled(env),
    domain: deploymentDomain(env),
    ...(auditRate !== undefined ? { auditRate } : {}),
    ...(flags.reputation ? { reputation: true } : {}),
  };
}
