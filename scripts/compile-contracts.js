// Build step after tsc: compiles contracts/*.sol with the bundled solc into
// dist/contracts/odsi-contracts.json (skipped when that file matches the sources). Offline.
import { buildArtifacts, ARTIFACTS_FILE } from '../dist/src/ledger/evm/contracts.js';

const t0 = Date.now();
const compiled = buildArtifacts();
console.log(`contracts: ${compiled ? 'compiled' : 'up to date'} → ${ARTIFACTS_FILE} (${Date.now() - t0} ms)`);
