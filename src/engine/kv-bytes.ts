// How much memory one cached position takes in a stage: its K and V in every layer of the
// range. A node's KV budget, the ORT engine's capacity and lanes and llama.cpp's cells are all
// counted in it.

import type { ModelConfig } from '../model/types.js';

/** bytes of one cached position over `layers` layers, `bytesPerValue` per value (f32: 4, f16: 2) */
export function kvBytesPerPosition(c: Pick<ModelConfig, 'nKvHeads' | 'headDim'>, layers: number, bytesPerValue = 4): number {
  return 2 * layers * c.nKvHeads * c.headDim * bytesPerValue;
}
