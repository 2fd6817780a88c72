// Configuration the CLI reads from the environment once at start-up and hands down as
// options (nothing below src/cli reads process.env):
//   ODSI_ACCOUNTABILITY=0  receipts, custody checks and audits off (nodes and gateway must agree)
//   ODSI_CHAIN_ID          the EIP-712 chain id receipts are signed under (default 31337)
//   ODSI_AUDIT_RATE        the gateway's default audit rate in [0, 1] (a --audit-rate flag wins)

import { accountabilityEnabled, deploymentDomain, type EnvVars } from '../accountability/records/wire.js';
import type { GatewayAccountabilityConfig } from '../gateway/gateway.js';

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
