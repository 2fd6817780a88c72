// Keccak-256 (Ethereum's, not FIPS SHA3-256) for the hashes on every token's path: the EIP-712
// digests of each hop's commitment and receipt, the gateway's checks of them, checksummed
// addresses. hash-wasm's WASM build is ~10x faster than @noble/hashes' JS at receipt sizes
// (~0.7 KB: 5–13 vs 56–82 µs); noble is the fallback where WebAssembly cannot load. Same
// bytes either way (test/util/keccak.test.ts).

import { keccak_256 } from '@noble/hashes/sha3.js';
import { createKeccak } from 'hash-wasm';

type Hasher = Awaited<ReturnType<typeof createKeccak>>;

async function loadHasher(): Promise<Hasher | undefined> {
  try {
    return await createKeccak(256);
  } catch {
    return undefined;
  }
}

// one hasher per thread, reused: init, update and digest run back to back (synchronously), so
// no two hashes ever interleave on it
const hasher = await loadHasher();

/** Which implementation this thread hashes with. */
export const keccakBackend: 'hash-wasm' | 'noble' = hasher ? 'hash-wasm' : 'noble';

/** keccak256(data), 32 bytes. */
export function keccak256(data: Uint8Array): Uint8Array {
  if (!hasher) return keccak_256(data);
  hasher.init();
  hasher.update(data);
  return hasher.digest('binary');
}
