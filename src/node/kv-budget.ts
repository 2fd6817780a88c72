// A node's KV budget (`--kv-budget-mb`) in cached positions of its stage: the bytes a position
// takes as the stage stores it (its capacity says so: llama.cpp's 4-bit profiles keep F16 KV),
// f32 when the stage does not say. Admission counts positions; the KV metrics turn them back
// into bytes with the same figure.

import { kvBytesPerPosition } from '../engine/kv-bytes.js';
import type { Stage } from '../engine/types.js';

export interface KvBudget {
  /** positions the budget holds */
  tokens: number;
  /** bytes one cached position takes in this stage */
  bytesPerToken: number;
}

export function kvBudgetOf(stage: Pick<Stage, 'config' | 'range' | 'capacity'>, budgetBytes: number): KvBudget {
  const bytesPerToken = stage.capacity?.kvBytesPerToken ?? kvBytesPerPosition(stage.config, stage.range.end - stage.range.start);
  return { tokens: Math.floor(budgetBytes / Math.max(1, bytesPerToken)), bytesPerToken };
}
