// odsi's EIP-712 records as the contract takes them: their encodeData words (one 32-byte
// word per field in type order; a `string` as its keccak256), so the contract recomputes
// hashStruct = keccak256(typeHash ‖ words) and the digest itself. Checked against eip712.ts
// (test/ledger/evm-records.test.ts): the same words hash to the same digest.

import { keccak256, pad, stringToBytes, toHex, type Hex } from 'viem';
import { RECEIPT_FIELDS, VERDICT_FIELDS, type AuditVerdict, type ExecutionReceipt } from '../../accountability/records/eip712.js';

type Field = { readonly name: string; readonly type: string };

function words(fields: readonly Field[], rec: Record<string, unknown>): Hex[] {
  return fields.map((f) => {
    const v = rec[f.name];
    switch (f.type) {
      case 'bytes32':
        return (v as string).toLowerCase() as Hex;
      case 'address':
        return pad((v as string).toLowerCase() as Hex, { size: 32 });
      case 'string':
        return keccak256(stringToBytes(v as string));
      case 'bool':
        return pad(toHex(v ? 1 : 0), { size: 32 });
      default:
        return pad(toHex(BigInt(v as number)), { size: 32 });
    }
  });
}

/** the 19 words of an ExecutionReceipt (or ReexecutionReceipt: same fields) */
export function receiptWords(r: ExecutionReceipt): readonly Hex[] {
  return words(RECEIPT_FIELDS, r as unknown as Record<string, unknown>);
}

/** the 7 words of an AuditVerdict */
export function verdictWords(v: AuditVerdict): readonly Hex[] {
  return words(VERDICT_FIELDS, v as unknown as Record<string, unknown>);
}
