// Accountability layer: signed records, custody checks, equivocation, tolerance, audits,
// evidence. One import point for the node, gateway and ledger code.
export * from './eip712.js';
export * from './receipts.js';
export * from './custody.js';
export * from './equivocation.js';
export * from './evidence.js';
export * from './tolerance.js';
export * from './audit.js';
export * from './signer.js';
// token-path integration (gateway side) and the audit protocol; the node side is stamp.ts
export * from './wire.js';
export * from './auditor.js';
export * from './verify-route.js';
export * from './report.js';
