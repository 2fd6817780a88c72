// Configuration the CLI reads from the environment once at start-up and hands down as
// options (nothing below src/cli reads process.env):
//   ODSI_ACCOUNTABILITY=0  receipts, custody checks and audits off (nodes and gateway must agree)
//   ODSI_CHAIN_ID          the EIP-712 chain id receipts are signed under (default 31337)
//   ODSI_AUDIT_RATE        the gateway's default audit rate in [0, 1] (a --audit-rate flag wins)

import { Option } from 'commander';
import { accountabilityEnabled, deploymentDomain, type EnvVars } from '../accountability/records/wire.js';
import type { ComputeThread } from '../engine/types.js';
import type { GatewayAccountabilityConfig } from '../gateway/gateway.js';

/** `--compute-thread <worker|main>` of `odsi node`, `gateway` and `demo`: the thread that runs `what` (StageOptions.computeThread). */
export function computeThreadOption(what: string): Option {
  return new Option(
    '--compute-thread <thread>',
    `the thread that runs ${what}: worker (a thread of its own), or main (the process's main thread, which saves two thread wake-ups a step, less latency per hop, while the process's I/O waits for each step's compute)`,
  )
    .choices(['worker', 'main'] satisfies ComputeThread[])
    .default('worker');
}

/** The gateway's accountability settings from the environment; `auditRate` (a flag) overrides ODSI_AUDIT_RATE. */
export function gatewayAccountabilityConfig(
  flags: { auditRate?: number; reputation?: boolean } = {},
  env: EnvVars = process.env,
): GatewayAccountabilityConfig {
  const fromEnv = env.ODSI_AUDIT_RATE === undefined || env.ODSI_AUDIT_RATE === '' ? NaN : Number(env.ODSI_AUDIT_RATE);
  const auditRate = flags.auditRate ?? (fromEnv >= 0 && fromEnv <= 1 ? fromEnv : undefined);
  return {
    enabled: accountabilityEnabled(env),
    domain: deploymentDomain(env),
    ...(auditRate !== undefined ? { auditRate } : {}),
    ...(flags.reputation ? { reputation: true } : {}),
  };
}
